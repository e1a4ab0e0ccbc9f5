import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { RequestAbortedError, RequestDroppedError } from '../../shared/errors.js';
import { encodeSimpleReply, RequestParser, type NbdRequest, type RequestSink } from './codec.js';
import { Cmd, CmdFlag, commandName, Errno, MAX_BLOCK_SIZE } from './constants.js';
import { errnoFor, ExportContractError, ProtocolError, ProtocolErrorReason } from './errors.js';
import type { NbdExport, RequestContext } from './export.js';
import type { NbdStats } from './stats.js';

export interface TransmissionLimits {
  /** Requests handed to the export and not yet answered before the socket stops being read. */
  readonly maxRequestsInFlight: number;
  /**
   * WRITE payload plus READ lengths of those requests. One payload being received when the limit
   * is reached still completes, so a connection holds at most this plus MAX_BLOCK_SIZE.
   */
  readonly maxBytesInFlight: number;
}

export const DEFAULT_TRANSMISSION_LIMITS: TransmissionLimits = {
  maxRequestsInFlight: 128,
  maxBytesInFlight: 64 * 1024 * 1024,
};

const FAILURE_LOG_INTERVAL_MS = 1000;
const WRITE_ZEROES_FLAGS = CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO;

/**
 * The request loop of one connection after negotiation. Requests run concurrently and are answered
 * as they finish, in any order. Reading from the socket stops while the in-flight limits are
 * reached or the socket's write buffer is full, so a client that floods requests or never reads
 * replies costs bounded memory.
 */
export class Transmission implements RequestSink {
  private readonly parser: RequestParser;
  private readonly abortController = new AbortController();
  private readonly context: RequestContext;
  private inFlight = 0;
  private bytesInFlight = 0;
  private readingPaused = false;
  private writeBlocked = false;
  /** After NBD_CMD_DISC or a server shutdown: nothing more is parsed, the socket closes once idle. */
  private draining = false;
  private closed = false;
  private lastFailureLoggedAt = -Infinity;
  private failuresNotLogged = 0;

  constructor(
    private readonly socket: Socket,
    private readonly exp: NbdExport,
    private readonly log: Logger,
    private readonly stats: NbdStats,
    private readonly limits: TransmissionLimits,
  ) {
    this.context = { signal: this.abortController.signal };
    this.parser = new RequestParser(this, stats);
    socket.on('drain', () => {
      this.writeBlocked = false;
      this.updateFlow();
    });
  }

  /** `pending`: bytes that arrived with or after the final negotiation message. */
  start(pending: readonly Buffer[]): void {
    for (const chunk of pending) this.parser.push(chunk);
    if (!this.readingPaused && !this.draining && !this.closed) this.socket.resume();
  }

  push(chunk: Buffer): void {
    this.parser.push(chunk);
  }

  /** The client closed its sending side. */
  end(): void {
    this.parser.end();
  }

  /** Server shutdown: answer what is in flight, accept nothing new, then close. */
  shutdown(): void {
    this.beginDrain('server shutting down');
  }

  /** The socket is gone: requests still held by the export are told to give up. */
  onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.parser.stop();
    this.abortController.abort(new RequestAbortedError('NBD connection closed'));
    try {
      this.exp.detach();
    } catch (err) {
      this.log.error({ err }, 'export detach failed');
    }
  }

  validate(request: NbdRequest): number {
    switch (request.type) {
      case Cmd.DISC:
        return Errno.OK;
      case Cmd.READ:
      case Cmd.WRITE:
      case Cmd.FLUSH:
      case Cmd.TRIM:
      case Cmd.WRITE_ZEROES:
        break;
      default:
        return Errno.EINVAL;
    }
    // FUA is valid on every command once SEND_FUA is advertised; the spec says to accept it.
    const allowedFlags = request.type === Cmd.WRITE_ZEROES ? WRITE_ZEROES_FLAGS : CmdFlag.FUA;
    if ((request.flags & ~allowedFlags) !== 0) return Errno.EINVAL;
    if (request.type === Cmd.FLUSH) {
      return request.offset === 0 && request.length === 0 ? Errno.OK : Errno.EINVAL;
    }
    if (request.type !== Cmd.READ && this.exp.readOnly) return Errno.EPERM;
    // TRIM and WRITE_ZEROES carry no payload and are cheap journal records: any length is fine.
    if ((request.type === Cmd.READ || request.type === Cmd.WRITE) && request.length > MAX_BLOCK_SIZE) {
      return Errno.EINVAL;
    }
    if (request.offset + request.length > this.exp.size) {
      // The spec's answers: ENOSPC for writing past the end, EINVAL for reading or trimming there.
      return request.type === Cmd.WRITE || request.type === Cmd.WRITE_ZEROES ? Errno.ENOSPC : Errno.EINVAL;
    }
    return Errno.OK;
  }

  onRequest(request: NbdRequest): void {
    this.stats.requests[commandName(request.type)]++;
    if (request.type === Cmd.DISC) {
      this.beginDrain('client sent NBD_CMD_DISC');
      return;
    }
    if (request.error !== Errno.OK) {
      const { type, flags, offset, length, error } = request;
      this.log.debug({ type, flags, offset, length, error }, 'nbd request refused');
      this.reply(request, request.error, undefined);
      return;
    }
    // The spec leaves zero-length requests unspecified but forbids disconnecting: succeed without
    // bothering the export.
    if (request.length === 0 && request.type !== Cmd.FLUSH) {
      this.reply(request, Errno.OK, undefined);
      return;
    }
    const cost = request.type === Cmd.READ || request.type === Cmd.WRITE ? request.length : 0;
    this.inFlight++;
    this.bytesInFlight += cost;
    this.stats.requestsInFlight++;
    this.updateFlow();
    this.run(request, cost).catch((err: unknown) => {
      // Only a bug in this class gets here; it must cost this connection, not the process.
      this.log.error({ err }, 'nbd request handling failed');
      this.socket.destroy();
    });
  }

  onProtocolError(error: ProtocolError): void {
    this.stats.protocolErrors[error.reason]++;
    this.log.warn({ reason: error.reason, err: error }, 'closing NBD connection: malformed request stream');
    this.socket.destroy();
  }

  onEof(midFrame: boolean): void {
    if (midFrame) {
      this.onProtocolError(new ProtocolError(ProtocolErrorReason.TruncatedFrame, 'client closed the connection mid-request'));
      return;
    }
    // A client that vanishes without NBD_CMD_DISC cannot be waiting for answers: drop its requests.
    this.log.debug('client closed the connection without NBD_CMD_DISC');
    this.socket.destroy();
  }

  private async run(request: NbdRequest, cost: number): Promise<void> {
    const started = this.stats.observeLatency === undefined ? 0 : performance.now();
    let error: number = Errno.OK;
    let data: Buffer | undefined;
    try {
      data = await this.execute(request);
    } catch (err) {
      if (err instanceof RequestDroppedError) {
        this.log.info({ reason: err.message }, 'closing NBD connection without answering a dropped request');
        this.socket.destroy();
      }
      error = errnoFor(err);
      if (this.closed) this.log.debug({ err }, 'nbd request failed after the connection closed');
      else this.logFailure(err, request, error);
    }
    request.payload = undefined;
    this.inFlight--;
    this.bytesInFlight -= cost;
    this.stats.requestsInFlight--;
    if (error === Errno.OK) {
      if (request.type === Cmd.READ) this.stats.bytesRead += request.length;
      else if (request.type === Cmd.WRITE) this.stats.bytesWritten += request.length;
    }
    this.reply(request, error, data);
    if (started !== 0) this.stats.observeLatency?.(this.exp.name, commandName(request.type), (performance.now() - started) / 1000);
    if (this.draining) this.closeIfIdle();
    else this.updateFlow();
  }

  /**
   * One warning per connection per FAILURE_LOG_INTERVAL_MS, counting the failures left out: after a
   * hang timeout every request fails at once, tens of thousands a second, and a line with a stack
   * for each would flood the log and the memory behind it.
   */
  private logFailure(err: unknown, request: NbdRequest, error: number): void {
    const now = performance.now();
    if (now - this.lastFailureLoggedAt < FAILURE_LOG_INTERVAL_MS) {
      this.failuresNotLogged++;
      return;
    }
    const notLogged = this.failuresNotLogged;
    this.lastFailureLoggedAt = now;
    this.failuresNotLogged = 0;
    this.log.warn({ err, type: commandName(request.type), offset: request.offset, length: request.length, error, failuresNotLogged: notLogged }, 'nbd request failed');
  }

  private async execute(request: NbdRequest): Promise<Buffer | undefined> {
    const { offset, length } = request;
    const fua = (request.flags & CmdFlag.FUA) !== 0;
    switch (request.type) {
      case Cmd.READ: {
        const data = await this.exp.read(offset, length, this.context);
        // A short buffer would desynchronise the stream: the client reads exactly `length` bytes.
        if (!Buffer.isBuffer(data) || data.length !== length) {
          const got = Buffer.isBuffer(data) ? `${data.length} bytes` : typeof data;
          throw new ExportContractError(`export ${this.exp.name} returned ${got} for a ${length}-byte read`);
        }
        return data;
      }
      case Cmd.WRITE: {
        const payload = request.payload;
        if (payload === undefined) throw new ExportContractError('WRITE reached the export without its payload');
        await this.exp.write(offset, payload, fua, this.context);
        return undefined;
      }
      case Cmd.FLUSH:
        await this.exp.flush(this.context);
        return undefined;
      case Cmd.TRIM:
        await this.exp.trim(offset, length, fua, this.context);
        return undefined;
      default:
        // validate() lets nothing else through, so this is WRITE_ZEROES. FAST_ZERO needs no special
        // case: zeroes are journal records, always faster than the equivalent write.
        await this.exp.writeZeroes(offset, length, { fua, noHole: (request.flags & CmdFlag.NO_HOLE) !== 0 }, this.context);
        return undefined;
    }
  }

  private reply(request: NbdRequest, error: number, data: Buffer | undefined): void {
    if (error !== Errno.OK) this.stats.errorReplies++;
    const socket = this.socket;
    if (this.closed || socket.destroyed || !socket.writable) return;
    const header = encodeSimpleReply(error, request.handleHi, request.handleLo);
    let accepted: boolean;
    if (data !== undefined && data.length > 0) {
      // One writev for header and data, without concatenating them.
      socket.cork();
      socket.write(header);
      accepted = socket.write(data);
      socket.uncork();
    } else {
      accepted = socket.write(header);
    }
    if (!accepted && !this.writeBlocked) {
      this.writeBlocked = true;
      this.updateFlow();
    }
  }

  private updateFlow(): void {
    if (this.closed || this.draining) return;
    const saturated =
      this.writeBlocked ||
      this.inFlight >= this.limits.maxRequestsInFlight ||
      this.bytesInFlight >= this.limits.maxBytesInFlight;
    if (saturated) {
      if (!this.readingPaused) {
        this.readingPaused = true;
        this.parser.pause();
        this.socket.pause();
      }
      return;
    }
    if (!this.readingPaused) return;
    this.readingPaused = false;
    // Requests already buffered come first; they may fill the limits again.
    this.parser.resume();
    if (!this.readingPaused && !this.draining && !this.closed) this.socket.resume();
  }

  private beginDrain(reason: string): void {
    if (this.draining || this.closed) return;
    this.draining = true;
    this.parser.stop();
    this.socket.pause();
    this.log.debug({ reason, inFlight: this.inFlight }, 'nbd connection draining');
    this.closeIfIdle();
  }

  private closeIfIdle(): void {
    if (this.inFlight > 0 || this.closed) return;
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) return;
    // end() flushes the replies; the client's own FIN is never read once paused, so destroy after.
    socket.end(() => socket.destroy());
  }
}
