import { Agent, createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * An HTTP proxy in front of an S3-protocol server that answers chosen requests itself with the
 * error responses S3 sends (status and XML body), so that tests can make the store throttle, fail
 * with 5xx, deny access or lose its bucket without touching the server behind it. Requests it lets
 * through are forwarded byte for byte, Host header included, so SigV4 signatures stay valid.
 */

/** What the proxy does with each request. */
export type FaultMode =
  | { readonly kind: 'pass' }
  /** A `share` of requests (0..1) get 503 SlowDown or 500 InternalError, alternately. */
  | { readonly kind: 'flaky'; readonly share: number }
  /** Every request gets 403 AccessDenied. */
  | { readonly kind: 'deny' }
  /** Every request gets 404 NoSuchBucket. */
  | { readonly kind: 'no-such-bucket' }
  /** Every PUT gets 503 SlowDown; GET, HEAD and LIST pass (a store that throttles writes while it lists and reads). */
  | { readonly kind: 'slow-down-puts' }
  /**
   * The next `times` requests reach the server, but their answers are replaced by 500
   * InternalError: a request that was applied and reported failed. Then `pass`.
   */
  | { readonly kind: 'applied-then-500'; readonly times: number };

export interface FaultCounts {
  forwarded: number;
  /** Injected error responses by S3 error code. */
  injected: Record<string, number>;
  /** Forwarded requests that failed between proxy and server (the client saw its connection reset). */
  upstreamErrors: number;
}

export interface S3FaultProxy {
  /** `http://127.0.0.1:PORT`, for `--s3-endpoint`. */
  readonly endpoint: string;
  readonly counts: FaultCounts;
  setMode(mode: FaultMode): void;
  close(): Promise<void>;
}

interface InjectedError {
  readonly status: number;
  readonly code: string;
  readonly message: string;
}

const SLOW_DOWN: InjectedError = { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' };
const INTERNAL: InjectedError = { status: 500, code: 'InternalError', message: 'We encountered an internal error. Please try again.' };
const DENIED: InjectedError = { status: 403, code: 'AccessDenied', message: 'Access Denied' };
const NO_BUCKET: InjectedError = { status: 404, code: 'NoSuchBucket', message: 'The specified bucket does not exist' };

/** Headers that describe one hop, not the request; node sets its own. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'expect']);

export async function startS3FaultProxy(target: { readonly host: string; readonly port: number }): Promise<S3FaultProxy> {
  let mode: FaultMode = { kind: 'pass' };
  let flakyTurn = 0;
  const counts: FaultCounts = { forwarded: 0, injected: {}, upstreamErrors: 0 };
  const upstreamAgent = new Agent({ keepAlive: true, maxSockets: 64 });
  const sockets = new Set<Socket>();

  const pickFault = (req: IncomingMessage): InjectedError | undefined => {
    switch (mode.kind) {
      case 'pass':
      case 'applied-then-500':
        return undefined;
      case 'flaky':
        if (Math.random() >= mode.share) return undefined;
        return flakyTurn++ % 2 === 0 ? SLOW_DOWN : INTERNAL;
      case 'deny':
        return DENIED;
      case 'no-such-bucket':
        return NO_BUCKET;
      case 'slow-down-puts':
        return req.method === 'PUT' ? SLOW_DOWN : undefined;
    }
  };

  /** Sends S3's error response for `fault`. */
  const answer = (req: IncomingMessage, res: ServerResponse, fault: InjectedError): void => {
    counts.injected[fault.code] = (counts.injected[fault.code] ?? 0) + 1;
    const resource = (req.url ?? '/').split('?')[0] ?? '/';
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<Error><Code>${fault.code}</Code><Message>${fault.message}</Message><Resource>${resource}</Resource><RequestId>holdfast-fault-proxy</RequestId></Error>`;
    res.writeHead(fault.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };

  const inject = (req: IncomingMessage, res: ServerResponse, fault: InjectedError): void => {
    // The request body is read to its end first, so the connection stays usable for the next request.
    req.resume();
    req.once('end', () => {
      answer(req, res, fault);
    });
  };

  /** Whether this forwarded request's answer is to be replaced (and counts it off). */
  const loseAnswer = (): boolean => {
    if (mode.kind !== 'applied-then-500') return false;
    mode = mode.times > 1 ? { kind: 'applied-then-500', times: mode.times - 1 } : { kind: 'pass' };
    return true;
  };

  const forward = (req: IncomingMessage, res: ServerResponse): void => {
    counts.forwarded++;
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers)) if (value !== undefined && !HOP_HEADERS.has(name)) headers[name] = value;
    const lose = loseAnswer();
    const upstream = request(
      { host: target.host, port: target.port, method: req.method, path: req.url, headers, agent: upstreamAgent },
      (up) => {
        if (lose) {
          up.resume();
          up.once('end', () => {
            answer(req, res, INTERNAL);
          });
          return;
        }
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    // The server behind is down: the client sees its connection reset, as it would without the proxy.
    upstream.once('error', () => {
      counts.upstreamErrors++;
      req.socket.destroy();
    });
    req.pipe(upstream);
  };

  const server = createServer((req, res) => {
    const fault = pickFault(req);
    if (fault === undefined) forward(req, res);
    else inject(req, res, fault);
  });
  // Longer than the client's idle sockets live, so that the proxy never closes one the client is
  // about to reuse: the only failures the client sees are the injected ones.
  server.keepAliveTimeout = 60_000;
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    counts,
    setMode(next: FaultMode): void {
      mode = next;
    },
    async close(): Promise<void> {
      const closed = new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
      for (const socket of sockets) socket.destroy();
      upstreamAgent.destroy();
      await closed;
    },
  };
}
