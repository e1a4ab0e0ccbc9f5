import { ProtocolError, ProtocolErrorReason } from './errors.js';

/** The socket's read side as the handshake sees it. */
export interface FlowControl {
  pause(): void;
  resume(): void;
}

interface Waiter {
  readonly size: number;
  readonly atBoundary: boolean;
  resolve(): void;
  reject(error: Error): void;
}

/**
 * Bytes received during negotiation, read with `await read(n)`. Negotiation is a strict
 * request/reply exchange of small messages, so awaiting exact sizes keeps handshake.ts linear;
 * the transmission phase uses the incremental RequestParser instead. Reading stops once
 * `highWater` bytes are waiting, so a client that streams without reading replies cannot grow it.
 */
export class HandshakeInput {
  private readonly chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private waiter: Waiter | undefined;
  private ended = false;
  private failure: Error | undefined;
  private paused = false;

  constructor(
    private readonly flow: FlowControl,
    private readonly highWater: number,
  ) {}

  /** Bytes received and not read yet. */
  get buffered(): number {
    return this.bufferedBytes;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
    if (!this.paused && this.bufferedBytes >= this.highWater) {
      this.paused = true;
      this.flow.pause();
    }
    this.settle();
  }

  /** The peer closed its side: pending and later reads fail once the buffer runs dry. */
  end(): void {
    this.ended = true;
    this.settle();
  }

  /** Fails pending and later reads with `error` (timeout, socket error). */
  fail(error: Error): void {
    this.failure ??= error;
    this.settle();
  }

  /**
   * Exactly `size` bytes. `atBoundary`: a message starts here, so EOF before its first byte is an
   * orderly close rather than a truncated frame.
   */
  async read(size: number, atBoundary = false): Promise<Buffer> {
    await this.available(size, atBoundary);
    return this.consume(size);
  }

  /** Consumes `size` bytes as they arrive without holding more than one chunk of them. */
  async skip(size: number): Promise<void> {
    let left = size;
    while (left > 0) {
      await this.available(1, false);
      const n = Math.min(left, this.bufferedBytes);
      this.consume(n);
      left -= n;
    }
  }

  /** Hands over whatever arrived after the last message read; the input is not used afterwards. */
  takeRest(): Buffer[] {
    const rest = this.chunks.splice(0);
    this.bufferedBytes = 0;
    return rest;
  }

  private available(size: number, atBoundary: boolean): Promise<void> {
    if (this.bufferedBytes >= size) return Promise.resolve();
    const error = this.terminalError(atBoundary);
    if (error !== undefined) return Promise.reject(error);
    return new Promise<void>((resolve, reject) => {
      this.waiter = { size, atBoundary, resolve, reject };
    });
  }

  private terminalError(atBoundary: boolean): Error | undefined {
    if (this.failure !== undefined) return this.failure;
    if (!this.ended) return undefined;
    return atBoundary && this.bufferedBytes === 0
      ? new ProtocolError(ProtocolErrorReason.ClosedDuringHandshake, 'client closed the connection')
      : new ProtocolError(ProtocolErrorReason.TruncatedFrame, 'client closed the connection mid-message');
  }

  private settle(): void {
    const waiter = this.waiter;
    if (waiter === undefined) return;
    if (this.bufferedBytes >= waiter.size) {
      this.waiter = undefined;
      waiter.resolve();
      return;
    }
    const error = this.terminalError(waiter.atBoundary);
    if (error !== undefined) {
      this.waiter = undefined;
      waiter.reject(error);
    }
  }

  private consume(size: number): Buffer {
    const first = this.chunks[0];
    let result: Buffer;
    if (first !== undefined && first.length >= size) {
      result = first.subarray(0, size);
      if (first.length === size) this.chunks.shift();
      else this.chunks[0] = first.subarray(size);
    } else {
      result = Buffer.allocUnsafe(size);
      let filled = 0;
      while (filled < size) {
        const chunk = this.chunks[0];
        if (chunk === undefined) break;
        const n = Math.min(size - filled, chunk.length);
        chunk.copy(result, filled, 0, n);
        filled += n;
        if (n === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(n);
      }
    }
    this.bufferedBytes -= size;
    if (this.paused && this.bufferedBytes < this.highWater) {
      this.paused = false;
      this.flow.resume();
    }
    return result;
  }
}
