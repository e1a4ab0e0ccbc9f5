import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { BufferBudget } from './buffer-budget.js';
import type { BufferPool } from '../util/buffer-pool.js';
import { MAX_OPTION_LENGTH, OPTION_HEADER_SIZE } from './constants.js';
import { ProtocolError, ProtocolErrorReason } from './errors.js';
import { HandshakeInput } from './handshake-input.js';
import { negotiate, type HandshakeIo, type NegotiationPolicy, type TlsPeer } from './handshake.js';
import type { NbdStats } from './stats.js';
import type { TlsCredentials } from './tls-credentials.js';
import { Transmission, type TransmissionLimits } from './transmission.js';

export interface ConnectionOptions {
  readonly policy: NegotiationPolicy;
  /** The credentials for STARTTLS; undefined when TLS is off. */
  readonly credentials: () => TlsCredentials | undefined;
  readonly log: Logger;
  readonly stats: NbdStats;
  /** Negotiation, TLS handshake included, must end within this. */
  readonly handshakeTimeoutMs: number;
  readonly limits: TransmissionLimits;
  readonly budget: BufferBudget;
  readonly payloads: BufferPool;
}

/** Room for the largest option plus the next header; beyond it the client is not reading replies. */
const HANDSHAKE_HIGH_WATER = MAX_OPTION_LENGTH + 2 * OPTION_HEADER_SIZE;

/** Orderly ends of negotiation that deserve no warning. */
const QUIET_REASONS: ReadonlySet<ProtocolErrorReason> = new Set([ProtocolErrorReason.ClosedDuringHandshake]);

/**
 * One client socket from accept to close: negotiation (with a switch to TLS on STARTTLS), then the
 * transmission phase. Every failure (malformed input, a failed TLS handshake, a throwing export or
 * registry) ends this connection only.
 */
export class Connection {
  readonly closed: Promise<void>;
  private resolveClosed: () => void = () => undefined;
  /** The socket NBD data flows over: the accepted one, or the TLS socket wrapping it after STARTTLS. */
  private socket: Socket;
  private readonly input: HandshakeInput;
  private transmission: Transmission | undefined;
  /** The export chosen in negotiation (undefined before). */
  private chosen: string | undefined;
  private isClosed = false;
  private timedOut = false;
  private readonly onData = (chunk: Buffer): void => {
    this.receive(chunk);
  };
  private readonly onEnd = (): void => {
    this.receiveEnd();
  };
  private readonly onClose = (): void => {
    this.close();
  };

  constructor(
    private readonly raw: Socket,
    private readonly options: ConnectionOptions,
  ) {
    this.socket = raw;
    this.closed = new Promise<void>((resolve) => {
      this.resolveClosed = resolve;
    });
    this.input = new HandshakeInput({ pause: () => this.socket.pause(), resume: () => this.socket.resume() }, HANDSHAKE_HIGH_WATER);
    raw.setNoDelay(true);
    raw.on('error', (err) => {
      options.log.debug({ err }, 'nbd socket error');
    });
    this.listen(raw);
    void this.negotiate();
  }

  /** The name of the export this connection uses, once it chose one. */
  get exportName(): string | undefined {
    return this.chosen;
  }

  /** Stop taking requests, answer those in flight, then close. */
  shutdown(): void {
    if (this.transmission !== undefined) this.transmission.shutdown();
    else this.destroy();
  }

  destroy(): void {
    this.socket.destroy();
    this.raw.destroy();
  }

  /** NBD data and EOF come from `socket`; a close of either socket ends the connection. */
  private listen(socket: Socket): void {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
  }

  private async negotiate(): Promise<void> {
    const { log, stats } = this.options;
    // The deadline covers the TLS handshake too: a client stalled in it costs a slot, nothing more.
    const timer = setTimeout(() => {
      this.timedOut = true;
      this.input.fail(this.timeoutError());
      this.destroy();
    }, this.options.handshakeTimeoutMs);
    const io: HandshakeIo = {
      read: (size, atBoundary) => this.input.read(size, atBoundary),
      skip: (size) => this.input.skip(size),
      write: (data) => {
        if (!this.socket.destroyed && this.socket.writable) this.socket.write(data);
      },
      startTls: () => this.startTls(),
    };
    try {
      const result = await negotiate(io, this.options.policy, log);
      if (this.isClosed) return;
      if (result.kind === 'aborted') {
        log.debug('client aborted negotiation');
        this.socket.end(() => {
          this.destroy();
        });
        return;
      }
      const { session } = result;
      const exp = session.export;
      this.chosen = exp.name;
      exp.attach();
      this.transmission = new Transmission(
        this.socket,
        session,
        log.child({ export: exp.name, ...(session.tls === undefined ? {} : { identity: session.tls.identity ?? null }) }),
        stats,
        this.options.limits,
        this.options.budget,
        this.options.payloads,
      );
      stats.transmissionsStarted++;
      log.debug({ export: exp.name, readOnly: session.readOnly, structuredReplies: session.structuredReplies }, 'nbd transmission phase');
      this.transmission.start(this.input.takeRest());
    } catch (err) {
      if (err instanceof ProtocolError) {
        stats.protocolErrors[err.reason]++;
        if (QUIET_REASONS.has(err.reason)) log.debug({ reason: err.reason }, 'nbd negotiation ended');
        else log.warn({ reason: err.reason, err }, 'closing NBD connection during negotiation');
      } else {
        log.error({ err }, 'nbd negotiation failed');
      }
      this.destroy();
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Hands the socket to TLS right after NBD_REP_ACK. A client must wait for that reply before it
   * starts the TLS handshake, so bytes already received cannot be TLS: they end the connection.
   */
  private async startTls(): Promise<TlsPeer> {
    const credentials = this.options.credentials();
    if (credentials === undefined) throw new ProtocolError(ProtocolErrorReason.TlsHandshakeFailed, 'TLS is not configured');
    if (this.input.buffered > 0) {
      throw new ProtocolError(
        ProtocolErrorReason.DataBeforeTls,
        `${this.input.buffered} bytes arrived behind NBD_OPT_STARTTLS before its reply`,
      );
    }
    const raw = this.socket;
    raw.off('data', this.onData);
    raw.off('end', this.onEnd);
    try {
      const { socket, peer } = await credentials.upgrade(raw);
      this.socket = socket;
      socket.on('error', (err) => {
        this.options.log.debug({ err }, 'nbd TLS socket error');
      });
      this.listen(socket);
      if (socket.destroyed) this.close();
      this.options.stats.tlsSessions++;
      return peer;
    } catch (err) {
      raw.destroy();
      if (this.timedOut) throw this.timeoutError();
      throw new ProtocolError(ProtocolErrorReason.TlsHandshakeFailed, err instanceof Error ? err.message : String(err));
    }
  }

  private timeoutError(): ProtocolError {
    return new ProtocolError(ProtocolErrorReason.HandshakeTimeout, `no export chosen within ${this.options.handshakeTimeoutMs} ms`);
  }

  private receive(chunk: Buffer): void {
    try {
      if (this.transmission !== undefined) this.transmission.push(chunk);
      else this.input.push(chunk);
    } catch (err) {
      // A bug in this layer must cost the one connection, never the process.
      this.options.log.error({ err }, 'nbd connection failed');
      this.destroy();
    }
  }

  private receiveEnd(): void {
    if (this.transmission !== undefined) this.transmission.end();
    else this.input.end();
  }

  private close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.input.end();
    this.transmission?.onClose();
    this.options.stats.connectionsActive--;
    this.resolveClosed();
  }
}
