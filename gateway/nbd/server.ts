import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { Connection } from './connection.js';
import type { ExportRegistry } from './export.js';
import type { CommandName } from './constants.js';
import { NbdStats } from './stats.js';
import { DEFAULT_TRANSMISSION_LIMITS, type TransmissionLimits } from './transmission.js';

export interface NbdServerOptions {
  readonly registry: ExportRegistry;
  readonly logger: Logger;
  /** A client that has not chosen an export by then is disconnected. Default 30 s. */
  readonly handshakeTimeoutMs?: number;
  /** Further connections are closed on accept. Default 1024. */
  readonly maxConnections?: number;
  /** Per-connection bounds on work in flight; see TransmissionLimits. */
  readonly limits?: Partial<TransmissionLimits>;
  /** Called with every request's latency, for a histogram. */
  readonly observeLatency?: (volume: string, command: CommandName, seconds: number) => void;
}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_CONNECTIONS = 1024;

/** NBD server (fixed newstyle, simple replies) for the exports of one registry. */
export class NbdServer {
  readonly stats = new NbdStats();
  private readonly server: Server;
  private readonly connections = new Set<Connection>();
  private readonly log: Logger;
  private readonly handshakeTimeoutMs: number;
  private readonly maxConnections: number;
  private readonly limits: TransmissionLimits;
  private nextConnectionId = 1;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: NbdServerOptions) {
    this.log = options.logger.child({ component: 'nbd' });
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.limits = { ...DEFAULT_TRANSMISSION_LIMITS, ...options.limits };
    this.stats.observeLatency = options.observeLatency;
    // Half-open: a client may shut down its sending side right after NBD_CMD_DISC and still
    // expect the replies to the requests before it.
    this.server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => this.log.error({ err }, 'nbd listener error'));
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise<AddressInfo>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        const address = this.server.address();
        if (address === null || typeof address === 'string') {
          reject(new Error(`unexpected listen address ${String(address)}`));
          return;
        }
        this.log.info({ host: address.address, port: address.port }, 'nbd server listening');
        resolve(address);
      });
    });
  }

  /**
   * Stops accepting, lets every connection answer what it has in flight (no new requests reach the
   * exports), closes the sockets, and after `graceMs` destroys whatever is left.
   */
  close(graceMs: number): Promise<void> {
    this.closing ??= this.shutdown(graceMs);
    return this.closing;
  }

  private async shutdown(graceMs: number): Promise<void> {
    const listenerClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const open = [...this.connections];
    for (const connection of open) connection.shutdown();
    const allClosed = Promise.all(open.map((connection) => connection.closed));
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'grace-over'>((resolve) => {
      timer = setTimeout(() => resolve('grace-over'), graceMs);
    });
    const outcome = await Promise.race([allClosed, graceOver]);
    clearTimeout(timer);
    if (outcome === 'grace-over') {
      this.log.warn({ connections: this.connections.size }, 'nbd grace period over, destroying connections');
      for (const connection of this.connections) connection.destroy();
      await allClosed;
    }
    await listenerClosed;
    this.log.info('nbd server closed');
  }

  private accept(socket: Socket): void {
    if (this.closing !== undefined) {
      socket.destroy();
      return;
    }
    if (this.connections.size >= this.maxConnections) {
      this.stats.connectionsRejected++;
      this.log.warn({ remote: socket.remoteAddress, maxConnections: this.maxConnections }, 'nbd connection refused: too many connections');
      socket.destroy();
      return;
    }
    this.stats.connectionsAccepted++;
    this.stats.connectionsActive++;
    const log = this.log.child({ conn: this.nextConnectionId++, remote: `${socket.remoteAddress}:${socket.remotePort}` });
    const connection = new Connection(socket, {
      registry: this.options.registry,
      log,
      stats: this.stats,
      handshakeTimeoutMs: this.handshakeTimeoutMs,
      limits: this.limits,
    });
    this.connections.add(connection);
    void connection.closed.then(() => this.connections.delete(connection));
  }
}
