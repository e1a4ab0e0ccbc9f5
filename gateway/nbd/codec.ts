// Transmission-phase requests from the wire: the zero-copy RequestParser; replies are reply-encoding.ts.
import { Cmd, Errno, knownCommand, REQUEST_HEADER_SIZE, REQUEST_MAGIC, TWO_POW_32 } from './constants.js';
import { ProtocolError, ProtocolErrorReason } from './errors.js';
import type { BufferPool } from '../util/buffer-pool.js';

/** One transmission-phase request as parsed from the wire. */
export interface NbdRequest {
  readonly flags: number;
  /** The command, or undefined for a type the spec does not define (answered with EINVAL). */
  readonly type: Cmd | undefined;
  /** The type as sent, for logs. */
  readonly wireType: number;
  /** The 8-byte handle kept as two words: echoed back verbatim, never interpreted. */
  readonly handleHi: number;
  readonly handleLo: number;
  /**
   * Offsets of 2^53 and beyond lose precision, which is harmless: they lie past any export and fail
   * the bounds check either way.
   */
  readonly offset: number;
  readonly length: number;
  /** The error the sink chose when the header arrived (OK: run the command). */
  readonly error: Errno;
  /** A WRITE's data once complete; undefined for other commands and for refused WRITEs. */
  payload: Buffer | undefined;
}

export interface RequestSink {
  /**
   * Called once per header, before any payload. A non-zero errno for a WRITE makes the parser skip
   * the payload bytes as they arrive instead of buffering them.
   */
  validate(request: NbdRequest): Errno;
  /**
   * Called after validate(), before a WRITE's payload is taken in. False holds this request, and all
   * input behind it, until resume() asks again: the sink reserves the memory a request will use
   * before the parser uses it.
   */
  admit(request: NbdRequest): boolean;
  /** A complete request, in stream order. The sink may call pause() or stop() from here. */
  onRequest(request: NbdRequest): void;
  /** The stream cannot be parsed further; the parser has stopped. */
  onProtocolError(error: ProtocolError): void;
  /** end() was called and every byte before it has been parsed; `midFrame`: a request was cut off. */
  onEof(midFrame: boolean): void;
}

/** Where the parser reports how WRITE payload bytes were handled. */
export interface PayloadCounters {
  /** Bytes copied into buffers allocated to join a payload that spans socket chunks. */
  payloadBytesAssembled: number;
  /** Bytes of refused WRITE payloads read and dropped. */
  payloadBytesSkipped: number;
}

type ParserState = 'header' | 'admission' | 'payload' | 'skip' | 'stopped';

/**
 * Incremental parser of the client's request stream. Chunks are consumed in place: a header that
 * fits in one chunk is read where it lies, a WRITE payload that fits is handed on as a subarray,
 * and only a payload spanning chunks is copied, once, into a buffer (util/buffer-pool.ts). The parser
 * never writes into a chunk or into a payload buffer after handing it on.
 */
export class RequestParser {
  private readonly queue: Buffer[] = [];
  /** Read position in queue[0]. */
  private position = 0;
  /** Holds a header split across chunks; only ever read synchronously, so one suffices. */
  private readonly headerScratch = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
  private headerFill = 0;
  private state: ParserState = 'header';
  private current: NbdRequest | undefined;
  private assembly: Buffer | undefined;
  private assemblyFill = 0;
  private skipLeft = 0;
  private paused = false;
  private ended = false;
  private eofReported = false;
  private draining = false;

  constructor(
    private readonly sink: RequestSink,
    private readonly counters: PayloadCounters,
    /** Where payloads that span chunks are joined; a buffer of their own each without it. */
    private readonly payloads?: BufferPool,
  ) {}

  push(chunk: Buffer): void {
    if (this.state === 'stopped' || chunk.length === 0) return;
    this.queue.push(chunk);
    this.drain();
  }

  /** Stops delivering requests; bytes already pushed are kept for resume(). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.drain();
  }

  /** The peer sent EOF: report it once everything pushed so far has been parsed. */
  end(): void {
    this.ended = true;
    this.drain();
  }

  /** Drops everything buffered and ignores all further input. */
  stop(): void {
    this.state = 'stopped';
    this.queue.length = 0;
    this.position = 0;
    this.current = undefined;
    this.assembly = undefined;
  }

  get stopped(): boolean {
    return this.state === 'stopped';
  }

  /**
   * True when NBD_CMD_DISC is among the bytes pushed and not delivered yet: a client that closed
   * its side behind a disconnect request still wants the answers before it (a soft disconnect);
   * one that closed without it has left. Walks the buffered headers, skipping WRITE payloads.
   */
  get disconnectBuffered(): boolean {
    const rest: Buffer[] = [this.headerScratch.subarray(0, this.headerFill)];
    this.queue.forEach((chunk, i) => rest.push(i === 0 ? chunk.subarray(this.position) : chunk));
    /** Takes `bytes` from the front of `rest`, copying them into `into` if given; false if fewer are there. */
    const consume = (bytes: number, into?: Buffer): boolean => {
      let done = 0;
      while (done < bytes) {
        const chunk = rest[0];
        if (chunk === undefined) return false;
        const n = Math.min(bytes - done, chunk.length);
        if (into !== undefined) chunk.copy(into, done, 0, n);
        done += n;
        if (n === chunk.length) rest.shift();
        else rest[0] = chunk.subarray(n);
      }
      return true;
    };
    const header = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
    // The rest of the request under way: a WRITE payload waiting for admission, or one being read or skipped.
    const current = this.current;
    const pendingPayload =
      this.state === 'admission' && current?.type === Cmd.WRITE
        ? current.length
        : this.state === 'payload' && current !== undefined
          ? current.length - this.assemblyFill
          : this.state === 'skip'
            ? this.skipLeft
            : 0;
    if (!consume(pendingPayload)) return false;
    while (consume(REQUEST_HEADER_SIZE, header)) {
      if (header.readUInt32BE(0) !== REQUEST_MAGIC) return false;
      const type = header.readUInt16BE(6);
      if (type === Cmd.DISC) return true;
      if (type === Cmd.WRITE && !consume(header.readUInt32BE(24))) return false;
    }
    return false;
  }

  /** Bytes pushed and not parsed yet. */
  get bufferedBytes(): number {
    let bytes = -this.position;
    for (const chunk of this.queue) bytes += chunk.length;
    return bytes;
  }

  /** True while part of a request has been received but not all of it. */
  private get midFrame(): boolean {
    return this.headerFill > 0 || this.state === 'admission' || this.state === 'payload' || this.state === 'skip' || this.queue.length > 0;
  }

  private drain(): void {
    // Sink callbacks may call resume() or push(); the loop already running picks that up.
    if (this.draining) return;
    this.draining = true;
    try {
      while (!this.paused && this.state !== 'stopped') {
        if (this.state === 'admission') {
          this.admitCurrent();
          continue;
        }
        const chunk = this.queue[0];
        if (chunk === undefined) break;
        this.position = this.step(chunk, this.position);
        // step() may have stopped the parser, which already dropped the queue.
        if (!this.stopped && this.position >= chunk.length) {
          this.queue.shift();
          this.position = 0;
        }
      }
    } finally {
      this.draining = false;
    }
    if (this.ended && !this.eofReported && !this.paused && this.state !== 'stopped' && this.queue.length === 0) {
      this.eofReported = true;
      this.sink.onEof(this.midFrame);
    }
  }

  /** Consumes at most one header or one piece of payload, so that pause() takes effect between requests. */
  private step(chunk: Buffer, pos: number): number {
    switch (this.state) {
      case 'header':
        return this.stepHeader(chunk, pos);
      case 'payload':
        return this.stepPayload(chunk, pos);
      case 'skip':
        return this.stepSkip(chunk, pos);
      case 'admission':
        // drain() admits before it looks at input.
        return pos;
      case 'stopped':
        return chunk.length;
    }
  }

  private stepHeader(chunk: Buffer, pos: number): number {
    const available = chunk.length - pos;
    if (this.headerFill === 0 && available >= REQUEST_HEADER_SIZE) {
      const request = this.parseHeader(chunk, pos);
      return request === undefined ? chunk.length : this.afterHeader(request, chunk, pos + REQUEST_HEADER_SIZE);
    }
    const n = Math.min(REQUEST_HEADER_SIZE - this.headerFill, available);
    chunk.copy(this.headerScratch, this.headerFill, pos, pos + n);
    this.headerFill += n;
    if (this.headerFill < REQUEST_HEADER_SIZE) return pos + n;
    this.headerFill = 0;
    const request = this.parseHeader(this.headerScratch, 0);
    return request === undefined ? chunk.length : this.afterHeader(request, chunk, pos + n);
  }

  private parseHeader(buf: Buffer, at: number): NbdRequest | undefined {
    const magic = buf.readUInt32BE(at);
    if (magic !== REQUEST_MAGIC) {
      this.stop();
      this.sink.onProtocolError(new ProtocolError(ProtocolErrorReason.BadMagic, `request magic 0x${magic.toString(16)}`));
      return undefined;
    }
    const wireType = buf.readUInt16BE(at + 6);
    const request: { -readonly [K in keyof NbdRequest]: NbdRequest[K] } = {
      flags: buf.readUInt16BE(at + 4),
      type: knownCommand(wireType),
      wireType,
      handleHi: buf.readUInt32BE(at + 8),
      handleLo: buf.readUInt32BE(at + 12),
      offset: buf.readUInt32BE(at + 16) * TWO_POW_32 + buf.readUInt32BE(at + 20),
      length: buf.readUInt32BE(at + 24),
      error: Errno.OK,
      payload: undefined,
    };
    request.error = this.sink.validate(request);
    return request;
  }

  private afterHeader(request: NbdRequest, chunk: Buffer, pos: number): number {
    if (!this.sink.admit(request)) {
      this.current = request;
      this.state = 'admission';
      this.paused = true;
      return pos;
    }
    this.begin(request);
    // Clients often send the header and the payload separately: wait for the next chunk, which may
    // hold the whole payload, before deciding to copy.
    return this.state === 'payload' && pos < chunk.length ? this.stepPayload(chunk, pos) : pos;
  }

  /** Retries the admission of the request held by afterHeader. */
  private admitCurrent(): void {
    const request = this.current;
    if (request === undefined) {
      this.state = 'header';
      return;
    }
    if (!this.sink.admit(request)) {
      this.paused = true;
      return;
    }
    this.current = undefined;
    this.state = 'header';
    this.begin(request);
  }

  /** An admitted request: delivered at once, or after its payload has been read or skipped. */
  private begin(request: NbdRequest): void {
    if (request.type !== Cmd.WRITE || request.length === 0) {
      this.sink.onRequest(request);
      return;
    }
    this.current = request;
    if (request.error !== Errno.OK) {
      this.skipLeft = request.length;
      this.state = 'skip';
    } else {
      this.state = 'payload';
    }
  }

  private stepPayload(chunk: Buffer, pos: number): number {
    const request = this.current;
    if (request === undefined) return chunk.length;
    let assembly = this.assembly;
    if (assembly === undefined) {
      if (chunk.length - pos >= request.length) {
        request.payload = chunk.subarray(pos, pos + request.length);
        this.completeWrite(request);
        return pos + request.length;
      }
      assembly = this.payloads?.take(request.length) ?? Buffer.allocUnsafe(request.length);
      this.assembly = assembly;
      this.assemblyFill = 0;
    }
    const n = Math.min(assembly.length - this.assemblyFill, chunk.length - pos);
    chunk.copy(assembly, this.assemblyFill, pos, pos + n);
    this.assemblyFill += n;
    this.counters.payloadBytesAssembled += n;
    if (this.assemblyFill === assembly.length) {
      request.payload = assembly;
      this.assembly = undefined;
      this.completeWrite(request);
    }
    return pos + n;
  }

  private completeWrite(request: NbdRequest): void {
    this.current = undefined;
    this.state = 'header';
    this.sink.onRequest(request);
  }

  private stepSkip(chunk: Buffer, pos: number): number {
    const n = Math.min(this.skipLeft, chunk.length - pos);
    this.skipLeft -= n;
    this.counters.payloadBytesSkipped += n;
    const request = this.current;
    if (this.skipLeft === 0 && request !== undefined) this.completeWrite(request);
    return pos + n;
  }
}
