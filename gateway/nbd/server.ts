// gateway/nbd owns the NBD server: listening (this file), TLS and access rules, the handshake
// (handshake.ts, handshake-messages.ts), the transmission phase (transmission.ts, codec.ts,
// reply-encoding.ts, execute-request.ts) and their limits, against the narrow export.ts interface.
import { unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { BufferBudget } from './buffer-budget.js';
import { BufferPool } from '../util/buffer-pool.js';
import { Connection } from './connection.js';
import type { CommandName } from './constants.js';
import type { ExportRegistry } from './export.js';
import { PLAIN_SECURITY, type NbdSecurity } from './security.js';
import { NbdStats } from './stats.js';
import { DEFAULT_TRANSMISSION_LIMITS, type TransmissionLimits } from './transmission.js';

/** Where the server accepts clients: a TCP address or a Unix socket path. */
export type ListenAddress =
  { readonly kind: 'tcp'; readonly host: string; readonly port: number } | { readonly kind: 'unix'; readonly path: string };

export interface NbdServerOptions {
  readonly registry: ExportRegistry;
  readonly logger: Logger;
  /** TLS and access rules; default: no TLS, every client opens every export. */
  readonly security?: NbdSecurity;
  /** A client that has not chosen an export by then (TLS handshake included) is disconnected. */
  readonly handshakeTimeoutMs?: number;
  /** Further connections are closed on accept. */
  readonly maxConnections?: number;
  /** Connections from one TCP peer address beyond this are closed on accept (Unix sockets are not counted). */
  readonly maxConnectionsPerPeer?: number;
  /** Per-connection bounds on work in flight and the idle timeout; see TransmissionLimits. */
  readonly limits?: Partial<TransmissionLimits>;
  /** Request and reply data all connections together may hold beyond their reserves; see BufferBudget. */
  readonly bufferMemory?: number;
  /** What each connection may hold whatever the others do. */
  readonly bufferReservePerConnection?: number;
  /** Called with every request's latency, for a histogram. */
  readonly observeLatency?: (volume: string, command: CommandName, seconds: number) => void;
}

export const NBD_SERVER_DEFAULTS = {
  handshakeTimeoutMs: 10_000,
  maxConnections: 1024,
  maxConnectionsPerPeer: 64,
  bufferMemory: 64 * 1024 * 1024,
  bufferReservePerConnection: 256 * 1024,
} as const;

/** A bound listener: the TCP port actually used (port 0 picks one) or the socket path. */
export type BoundAddress =
  { readonly kind: 'tcp'; readonly host: string; readonly port: number } | { readonly kind: 'unix'; readonly path: string };

/** The peer a connection counts against; IPv4-mapped IPv6 addresses count as their IPv4 address. */
function peerKey(socket: Socket): string | undefined {
  const address = socket.remoteAddress;
  if (address === undefined) return undefined;
  return address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
}

/** Removes a Unix socket file nobody accepts on any more (left by a process that died). */
async function removeStaleSocket(path: string): Promise<boolean> {
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => {
      resolve(false);
    });
  });
  if (alive) return false;
  await unlink(path).catch(() => undefined);
  return true;
}

/** NBD server (fixed newstyle, STARTTLS, simple and structured replies) for the exports of one registry. */
export class NbdServer {
  readonly stats = new NbdStats();
  readonly budget: BufferBudget;
  /**
   * Joined WRITE payloads used again: room for a guest's 1 MiB writes at iodepth 8, held whatever
   * the load (the free lists are not part of the budget above).
   */
  readonly payloads = new BufferPool(8 * 2 ** 20);
  private readonly servers: Server[] = [];
  private readonly connections = new Set<Connection>();
  private readonly perPeer = new Map<string, number>();
  private readonly log: Logger;
  private readonly security: NbdSecurity;
  private readonly handshakeTimeoutMs: number;
  private readonly maxConnections: number;
  private readonly maxConnectionsPerPeer: number;
  private readonly limits: TransmissionLimits;
  private nextConnectionId = 1;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: NbdServerOptions) {
    this.log = options.logger.child({ component: 'nbd' });
    this.security = options.security ?? PLAIN_SECURITY;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? NBD_SERVER_DEFAULTS.handshakeTimeoutMs;
    this.maxConnections = options.maxConnections ?? NBD_SERVER_DEFAULTS.maxConnections;
    this.maxConnectionsPerPeer = options.maxConnectionsPerPeer ?? NBD_SERVER_DEFAULTS.maxConnectionsPerPeer;
    this.limits = { ...DEFAULT_TRANSMISSION_LIMITS, ...options.limits };
    this.budget = new BufferBudget(
      options.bufferMemory ?? NBD_SERVER_DEFAULTS.bufferMemory,
      options.bufferReservePerConnection ?? NBD_SERVER_DEFAULTS.bufferReservePerConnection,
    );
    this.stats.observeLatency = options.observeLatency;
  }

  /** Starts accepting on one more address; a server may listen on several. */
  async listen(address: ListenAddress): Promise<BoundAddress> {
    // Half-open: a client may shut down its sending side right after NBD_CMD_DISC and still
    // expect the replies to the requests before it.
    const server = createServer({ allowHalfOpen: true }, (socket) => {
      this.accept(socket);
    });
    server.on('error', (err) => {
      this.log.error({ err }, 'nbd listener error');
    });
    const bind = (): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        const onError = (err: Error): void => {
          reject(err);
        };
        server.once('error', onError);
        const done = (): void => {
          server.off('error', onError);
          resolve();
        };
        if (address.kind === 'tcp') server.listen(address.port, address.host, done);
        else server.listen(address.path, done);
      });
    try {
      await bind();
    } catch (err) {
      if (address.kind !== 'unix' || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || !(await removeStaleSocket(address.path)))
        throw err;
      await bind();
    }
    this.servers.push(server);
    const bound = server.address();
    let result: BoundAddress;
    if (address.kind === 'unix') result = { kind: 'unix', path: address.path };
    else if (bound !== null && typeof bound === 'object') result = { kind: 'tcp', host: bound.address, port: bound.port };
    else throw new Error(`a TCP listener reports the address ${JSON.stringify(bound)}`);
    this.log.info(result, 'nbd server listening');
    return result;
  }

  /**
   * Stops accepting, lets every connection answer what it has in flight (no new requests reach the
   * exports), closes the sockets, and after `graceMs` destroys whatever is left.
   */
  close(graceMs: number): Promise<void> {
    this.closing ??= this.shutdown(graceMs);
    return this.closing;
  }

  /**
   * The export went away (deleted, or taken by another gateway): its connections stop taking requests,
   * answer those in flight and close, as after NBD_CMD_DISC; every other connection goes on.
   */
  async withdraw(name: string, graceMs: number): Promise<number> {
    const gone = [...this.connections].filter((c) => c.exportName === name);
    for (const connection of gone) connection.shutdown();
    if (gone.length === 0) return 0;
    this.log.info({ export: name, connections: gone.length }, 'export withdrawn: its connections are closed');
    await this.closeWithin(gone, graceMs);
    return gone.length;
  }

  /** Waits for the connections to close after their requests in flight, and destroys what is left after `graceMs`. */
  private async closeWithin(open: readonly Connection[], graceMs: number): Promise<void> {
    const allClosed = Promise.all(open.map((connection) => connection.closed));
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'grace-over'>((resolve) => {
      timer = setTimeout(() => {
        resolve('grace-over');
      }, graceMs);
    });
    const outcome = await Promise.race([allClosed, graceOver]);
    clearTimeout(timer);
    if (outcome === 'grace-over') {
      this.log.warn({ connections: open.length }, 'nbd grace period over, destroying connections');
      for (const connection of open) connection.destroy();
      await allClosed;
    }
  }

  private async shutdown(graceMs: number): Promise<void> {
    const listenersClosed = Promise.all(
      this.servers.map(
        (server) =>
          new Promise<void>((resolve) =>
            server.close(() => {
              resolve();
            }),
          ),
      ),
    );
    const open = [...this.connections];
    for (const connection of open) connection.shutdown();
    await this.closeWithin(open, graceMs);
    await listenersClosed;
    this.log.info('nbd server closed');
  }

  private accept(socket: Socket): void {
    if (this.closing !== undefined) {
      socket.destroy();
      return;
    }
    const peer = peerKey(socket);
    if (this.connections.size >= this.maxConnections) {
      this.stats.connectionsRejected++;
      this.log.warn({ remote: peer ?? 'unix', maxConnections: this.maxConnections }, 'nbd connection refused: too many connections');
      socket.destroy();
      return;
    }
    const fromPeer = peer === undefined ? 0 : (this.perPeer.get(peer) ?? 0);
    if (peer !== undefined && fromPeer >= this.maxConnectionsPerPeer) {
      this.stats.connectionsRejectedPerPeer++;
      // Debug: a client opening connections in a loop would otherwise flood the log.
      this.log.debug(
        { remote: peer, maxConnectionsPerPeer: this.maxConnectionsPerPeer },
        'nbd connection refused: too many connections from this address',
      );
      socket.destroy();
      return;
    }
    if (peer !== undefined) this.perPeer.set(peer, fromPeer + 1);
    this.stats.connectionsAccepted++;
    this.stats.connectionsActive++;
    const remote = peer === undefined ? 'unix' : `${peer}:${socket.remotePort}`;
    const log = this.log.child({ conn: this.nextConnectionId++, remote });
    const connection = new Connection(socket, {
      policy: { registry: this.options.registry, tls: this.security.tls, access: this.security.access },
      credentials: this.security.credentials,
      log,
      stats: this.stats,
      handshakeTimeoutMs: this.handshakeTimeoutMs,
      limits: this.limits,
      budget: this.budget,
      payloads: this.payloads,
    });
    this.connections.add(connection);
    void connection.closed.then(() => {
      this.connections.delete(connection);
      if (peer === undefined) return;
      const left = (this.perPeer.get(peer) ?? 1) - 1;
      if (left > 0) this.perPeer.set(peer, left);
      else this.perPeer.delete(peer);
    });
  }
}
