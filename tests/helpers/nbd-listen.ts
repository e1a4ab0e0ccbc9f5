import type { NbdServer } from '../../gateway/nbd/server.js';

/** Starts `server` on a free TCP port of `host` and returns the port. */
export async function listenOnLoopback(server: NbdServer, host = '127.0.0.1'): Promise<number> {
  const bound = await server.listen({ kind: 'tcp', host, port: 0 });
  if (bound.kind !== 'tcp') throw new Error(`expected a TCP listener, got ${JSON.stringify(bound)}`);
  return bound.port;
}
