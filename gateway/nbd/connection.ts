import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { MAX_OPTION_LENGTH, OPTION_HEADER_SIZE } from './constants.js';
import { ProtocolError, ProtocolErrorReason } from './errors.js';
import type { ExportRegistry } from './export.js';
import { HandshakeInput } from './handshake-input.js';
import { negotiate, type HandshakeIo } from './handshake.js';
import type { NbdStats } from './stats.js';
import { Transmission, type TransmissionLimits } from './transmission.js';

export interface ConnectionOptions {
  readonly registry: ExportRegistry;
  readonly log: Logger;
  readonly stats: NbdStats;
  readonly handshakeTimeoutMs: number;
  readonly limits: TransmissionLimits;
}

/** Room for the largest option plus the next header; beyond it the client is not reading replies. */
const HANDSHAKE_HIGH_WATER = MAX_OPTION_LENGTH + 2 * OPTION_HEADER_SIZE;

/** Orderly ends of negotiation that deserve no warning. */
const QUIET_REASONS: ReadonlySet<ProtocolErrorReason> = new Set([ProtocolErrorReason.ClosedDuringHandshake]);

/**
 * One client socket from accept to close: negotiation, then the transmission phase. Every failure
 * (malformed input, a throwing export or registry) ends this connection only.
 */
export class Connection {
  readonly closed: Promise<void>;
  private resolveClosed: () => void = () => undefined;
  private readonly input: HandshakeInput;
  private transmission: Transmission | undefined;
  private isClosed = false;

  constructor(
    private readonly socket: Socket,
    private readonly options: ConnectionOptions,
  ) {
    this.closed = new Promise<void>((resolve) => {
      this.resolveClosed = resolve;
    });
    this.input = new HandshakeInput(socket, HANDSHAKE_HIGH_WATER);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (err) => options.log.debug({ err }, 'nbd socket error'));
    socket.on('close', () => this.onClose());
    void this.negotiate();
  }

  /** Stop taking requests, answer those in flight, then close. */
  shutdown(): void {
    if (this.transmission !== undefined) this.transmission.shutdown();
    else this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private async negotiate(): Promise<void> {
    const { log, registry, stats } = this.options;
    const timer = setTimeout(() => {
      this.input.fail(new ProtocolError(ProtocolErrorReason.HandshakeTimeout, `no export chosen within ${this.options.handshakeTimeoutMs} ms`));
    }, this.options.handshakeTimeoutMs);
    const io: HandshakeIo = {
      read: (size, atBoundary) => this.input.read(size, atBoundary),
      skip: (size) => this.input.skip(size),
      write: (data) => {
        if (!this.socket.destroyed && this.socket.writable) this.socket.write(data);
      },
    };
    try {
      const result = await negotiate(io, registry, log);
      if (this.isClosed) return;
      if (result.kind === 'aborted') {
        log.debug('client aborted negotiation');
        this.socket.end(() => this.socket.destroy());
        return;
      }
      const exp = result.export;
      exp.attach();
      this.transmission = new Transmission(this.socket, exp, log.child({ export: exp.name }), stats, this.options.limits);
      stats.transmissionsStarted++;
      log.debug({ export: exp.name }, 'nbd transmission phase');
      this.transmission.start(this.input.takeRest());
    } catch (err) {
      if (err instanceof ProtocolError) {
        stats.protocolErrors[err.reason]++;
        if (QUIET_REASONS.has(err.reason)) log.debug({ reason: err.reason }, 'nbd negotiation ended');
        else log.warn({ reason: err.reason, err }, 'closing NBD connection during negotiation');
      } else {
        log.error({ err }, 'nbd negotiation failed');
      }
      this.socket.destroy();
    } finally {
      clearTimeout(timer);
    }
  }

  private onData(chunk: Buffer): void {
    try {
      if (this.transmission !== undefined) this.transmission.push(chunk);
      else this.input.push(chunk);
    } catch (err) {
      // A bug in this layer must cost the one connection, never the process.
      this.options.log.error({ err }, 'nbd connection failed');
      this.socket.destroy();
    }
  }

  private onEnd(): void {
    if (this.transmission !== undefined) this.transmission.end();
    else this.input.end();
  }

  private onClose(): void {
    this.isClosed = true;
    this.input.end();
    this.transmission?.onClose();
    this.options.stats.connectionsActive--;
    this.resolveClosed();
  }
}
