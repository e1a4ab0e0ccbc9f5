import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { RequestAbortedError, RequestDroppedError } from '../../shared/errors.js';
import type { BufferAccount, BufferBudget } from './buffer-budget.js';
import { RequestParser, type NbdRequest, type RequestSink } from './codec.js';
import { encodeErrorChunk, encodeReadChunkHeader, encodeSimpleReply } from './reply-encoding.js';
import { Cmd, commandName, Errno } from './constants.js';
import { errnoFor, ProtocolError, ProtocolErrorReason } from './errors.js';
import type { NbdExport, RequestContext } from './export.js';
import type { BufferPool } from '../util/buffer-pool.js';
import type { Session } from './handshake.js';
import { ERROR_MESSAGE_BYTES, requestBytes, validateRequest } from './request-rules.js';
import type { NbdStats } from './stats.js';
import { DONE, executeRequest, type Outcome } from './execute-request.js';
import { LogRateLimiter } from '../util/rate-limited-log.js';

export interface TransmissionLimits {
  /** Requests handed to the export and not yet answered before the socket stops being read. */
  readonly maxRequestsInFlight: number;
  /**
   * Data one connection may hold: WRITE payloads and READ data in flight plus replies not yet
   * handed to the kernel. The socket is not read while a request would take it past this.
   */
  readonly maxBytesInFlight: number;
  /** A connection with nothing in flight for this long is closed; 0 keeps it forever. */
  readonly idleTimeoutMs: number;
}

export const DEFAULT_TRANSMISSION_LIMITS: TransmissionLimits = {
  maxRequestsInFlight: 128,
  maxBytesInFlight: 64 * 1024 * 1024,
  idleTimeoutMs: 0,
};

const FAILURE_LOG_INTERVAL_MS = 1000;
/**
 * Input a connection may buffer, unparsed, while its requests wait. The socket goes on being read
 * until then, so that a client that disconnects while waiting is noticed at once: a socket that is
 * not read is not polled either, and its reset would only surface when a reply is written to it —
 * after its queued requests had been run for nobody.
 */
const READ_AHEAD_BYTES = 64 * 1024;

/**
 * The request loop of one connection after negotiation. Requests run concurrently and are answered
 * as they finish, in any order, with simple replies or, when negotiated, structured ones. Reading
 * from the socket stops while the in-flight limits are reached, the socket's write buffer is
 * full, or the server's buffer budget has no room for the next request's data, so a client that
 * floods requests or never reads its replies costs bounded memory.
 */
export class Transmission implements RequestSink {
  private readonly parser: RequestParser;
  private readonly abortController = new AbortController();
  private readonly context: RequestContext;
  private readonly exp: NbdExport;
  private readonly account: BufferAccount;
  private inFlight = 0;
  private parsingPaused = false;
  private writeBlocked = false;
  /** The next request waits for buffer room. */
  private admissionBlocked = false;
  /** The socket is not read: parsing stopped and READ_AHEAD_BYTES are buffered. */
  private socketPaused = false;
  /** After NBD_CMD_DISC or a server shutdown: nothing more is parsed, the socket closes once idle. */
  private draining = false;
  private closed = false;
  private readonly failureLog = new LogRateLimiter(FAILURE_LOG_INTERVAL_MS);
  private lastActivity = performance.now();
  private idleTimer: NodeJS.Timeout | undefined;
  /** Replies of this tick go out together (see reply()). */
  private batching = false;
  private readonly endBatch = (): void => {
    this.batching = false;
    if (!this.socket.destroyed) this.socket.uncork();
  };

  constructor(
    private readonly socket: Duplex,
    private readonly session: Session,
    private readonly log: Logger,
    private readonly stats: NbdStats,
    private readonly limits: TransmissionLimits,
    budget: BufferBudget,
    private readonly payloads?: BufferPool,
  ) {
    this.exp = session.export;
    this.context = { signal: this.abortController.signal };
    this.parser = new RequestParser(this, stats, payloads);
    this.account = budget.account(limits.maxBytesInFlight, () => {
      this.admissionBlocked = false;
      this.updateFlow();
    });
    socket.on('drain', () => {
      this.writeBlocked = false;
      this.updateFlow();
    });
  }

  /** `pending`: bytes that arrived with or after the final negotiation message. */
  start(pending: readonly Buffer[]): void {
    this.armIdleTimer();
    for (const chunk of pending) this.parser.push(chunk);
    this.throttleSocket();
    if (!this.socketPaused && !this.draining && !this.closed) this.socket.resume();
  }

  push(chunk: Buffer): void {
    this.parser.push(chunk);
    this.throttleSocket();
  }

  /**
   * The client closed its sending side. Behind NBD_CMD_DISC that is a soft disconnect, answered in
   * full. Without one, while requests wait unparsed, the client has left: running them would only
   * hold memory and storage for nobody, so the connection goes now.
   */
  end(): void {
    if (this.parsingPaused && !this.parser.disconnectBuffered) {
      this.log.debug({ buffered: this.parser.bufferedBytes }, 'client closed its side with requests waiting and no NBD_CMD_DISC');
      this.socket.destroy();
      return;
    }
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
    clearTimeout(this.idleTimer);
    this.parser.stop();
    this.account.close();
    this.abortController.abort(new RequestAbortedError('NBD connection closed'));
    try {
      this.exp.detach();
    } catch (err) {
      this.log.error({ err }, 'export detach failed');
    }
  }

  validate(request: NbdRequest): Errno {
    return validateRequest(request, this.session, this.exp.size);
  }

  admit(request: NbdRequest): boolean {
    const bytes = requestBytes(request);
    if (bytes === 0 || this.account.tryCharge(bytes)) return true;
    this.admissionBlocked = true;
    this.updateFlow();
    return false;
  }

  onRequest(request: NbdRequest): void {
    this.lastActivity = performance.now();
    this.stats.requests[commandName(request.type)]++;
    if (request.type === Cmd.DISC) {
      this.beginDrain('client sent NBD_CMD_DISC');
      return;
    }
    const bytes = requestBytes(request);
    if (request.error !== Errno.OK) {
      const { wireType, flags, offset, length, error } = request;
      this.log.debug({ type: wireType, flags, offset, length, error }, 'nbd request refused');
      this.reply(request, request.error, DONE, 0);
      return;
    }
    // The spec leaves zero-length requests unspecified but forbids disconnecting: succeed without
    // bothering the export.
    if (request.length === 0 && request.type !== Cmd.FLUSH) {
      this.reply(request, Errno.OK, DONE, 0);
      return;
    }
    this.inFlight++;
    this.stats.requestsInFlight++;
    this.updateFlow();
    this.run(request, bytes).catch((err: unknown) => {
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

  private async run(request: NbdRequest, bytes: number): Promise<void> {
    const started = this.stats.observeLatency === undefined ? 0 : performance.now();
    let error: Errno = Errno.OK;
    let outcome: Outcome = DONE;
    try {
      outcome = await executeRequest(this.exp, request, this.context, this.session);
    } catch (err) {
      if (err instanceof RequestDroppedError) {
        this.log.info({ reason: err.message }, 'closing NBD connection without answering a dropped request');
        this.socket.destroy();
      }
      error = errnoFor(err);
      if (this.closed) this.log.debug({ err }, 'nbd request failed after the connection closed');
      else this.logFailure(err, request, error);
    }
    // Acknowledged, so durable: the export holds no reference to it any more (NbdExport.write).
    if (error === Errno.OK && request.payload !== undefined) this.payloads?.give(request.payload);
    request.payload = undefined;
    this.inFlight--;
    this.stats.requestsInFlight--;
    this.lastActivity = performance.now();
    if (error === Errno.OK) {
      if (request.type === Cmd.READ) this.stats.bytesRead += request.length;
      else if (request.type === Cmd.WRITE) this.stats.bytesWritten += request.length;
    }
    this.reply(request, error, outcome, bytes);
    if (started !== 0) this.stats.observeLatency?.(this.exp.name, commandName(request.type), (performance.now() - started) / 1000);
    if (this.draining) this.closeIfIdle();
    else this.updateFlow();
  }

  /**
   * One warning per connection per FAILURE_LOG_INTERVAL_MS, counting the failures left out: after a
   * hang timeout every request fails at once, tens of thousands a second, and a line with a stack
   * for each would flood the log and the memory behind it.
   */
  private logFailure(err: unknown, request: NbdRequest, error: Errno): void {
    const notLogged = this.failureLog.admit();
    if (notLogged === undefined) return;
    this.log.warn(
      { err, type: commandName(request.type), offset: request.offset, length: request.length, error, failuresNotLogged: notLogged },
      'nbd request failed',
    );
  }

  /**
   * Sends the reply and gives `bytes` back to the buffer budget once the kernel has taken it, so
   * that a client that does not read its replies keeps holding what they cost.
   */
  private reply(request: NbdRequest, error: Errno, outcome: Outcome, bytes: number): void {
    if (error !== Errno.OK) this.stats.errorReplies++;
    const socket = this.socket;
    const data = error === Errno.OK && outcome.kind === 'data' ? outcome.data : undefined;
    if (this.closed || socket.destroyed || !socket.writable) {
      this.sent(bytes, data);
      return;
    }
    // Requests that finish together (a group commit, reads of one chunk of requests) are answered in
    // one writev — one TLS record instead of one per reply, and fewer syscalls in clear text too.
    if (!this.batching) {
      this.batching = true;
      socket.cork();
      process.nextTick(this.endBatch);
    }
    const { handleHi, handleLo } = request;
    const structured = this.session.structuredReplies;
    const released =
      bytes === 0 && data === undefined
        ? undefined
        : () => {
            this.sent(bytes, data);
          };
    let accepted: boolean;
    if (error !== Errno.OK) {
      // With structured replies a READ must not get a simple reply, and errors carry a message.
      accepted = socket.write(
        structured
          ? encodeErrorChunk(error, handleHi, handleLo, ERROR_MESSAGE_BYTES[error] ?? Buffer.alloc(0))
          : encodeSimpleReply(error, handleHi, handleLo),
        released,
      );
    } else if (outcome.kind === 'data') {
      const header = structured
        ? encodeReadChunkHeader(handleHi, handleLo, request.offset, outcome.data.length)
        : encodeSimpleReply(Errno.OK, handleHi, handleLo);
      // Header and data leave in the same writev, without concatenating them.
      socket.write(header);
      accepted = socket.write(outcome.data, released);
    } else if (outcome.kind === 'status') {
      accepted = socket.write(outcome.chunk, released);
    } else {
      // A simple reply is allowed for every command but READ even when structured replies are on.
      accepted = socket.write(encodeSimpleReply(Errno.OK, handleHi, handleLo), released);
    }
    if (!accepted && !this.writeBlocked) {
      this.writeBlocked = true;
      this.updateFlow();
    }
  }

  /** A reply was handed to the kernel, or dropped with its connection: its bytes are free, its READ data back with the export. */
  private sent(bytes: number, data: Buffer | undefined): void {
    this.account.release(bytes);
    if (data !== undefined) this.exp.readDone?.(data);
  }

  private updateFlow(): void {
    if (this.closed || this.draining) return;
    const saturated = this.writeBlocked || this.admissionBlocked || this.inFlight >= this.limits.maxRequestsInFlight;
    if (saturated) {
      if (!this.parsingPaused) {
        this.parsingPaused = true;
        this.parser.pause();
        this.throttleSocket();
      }
      return;
    }
    if (!this.parsingPaused) return;
    this.parsingPaused = false;
    // Requests already buffered come first; they may fill the limits again.
    this.parser.resume();
    this.throttleSocket();
  }

  /** Reads the socket while parsing goes on or little input waits; stops it beyond READ_AHEAD_BYTES. */
  private throttleSocket(): void {
    if (this.closed || this.draining) return;
    const pause = this.parsingPaused && this.parser.bufferedBytes >= READ_AHEAD_BYTES;
    if (pause === this.socketPaused) return;
    this.socketPaused = pause;
    if (pause) this.socket.pause();
    else this.socket.resume();
  }

  /**
   * Checks idleness when the timer fires rather than re-arming it on every request: a connection
   * with nothing in flight and nothing unsent for idleTimeoutMs is closed.
   */
  private armIdleTimer(): void {
    const timeout = this.limits.idleTimeoutMs;
    if (timeout <= 0 || this.closed) return;
    const idleFor = performance.now() - this.lastActivity;
    const busy = this.inFlight > 0 || this.admissionBlocked || this.account.held > 0 || this.socket.writableLength > 0;
    if (!busy && idleFor >= timeout) {
      this.stats.idleTimeouts++;
      this.log.info({ idleMs: Math.round(idleFor) }, 'closing idle NBD connection');
      this.socket.destroy();
      return;
    }
    this.idleTimer = setTimeout(
      () => {
        this.armIdleTimer();
      },
      busy ? timeout : timeout - idleFor,
    );
    this.idleTimer.unref();
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
