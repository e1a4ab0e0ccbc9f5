import { elementAt } from '../../shared/checked.js';
import { RequestAbortedError } from '../../shared/errors.js';
import { RECORD_HEADER_SIZE } from './record.js';

/**
 * What one record costs in memory until it is uploaded (its entry and its place in the pending
 * lists), charged against the journal limit with its bytes on disk: a flood of tiny records (TRIMs)
 * is bounded by the limit like a flood of writes.
 */
export const ENTRY_MEMORY_COST = 192;

interface SpaceWaiter {
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: (() => void) | undefined;
}

/**
 * The journal's limit and what counts against it: live segment bytes, records reserved or queued
 * for the next commit, and the memory of durable records not yet released. Writes that do not fit
 * wait here in arrival order, so a full journal pushes back on the guest instead of growing.
 */
export class JournalRoom {
  /** Bytes of live segment files, headers included (the Journal and its segments keep this current). */
  segmentBytes = 0;
  /** Reserved for records not yet durable. */
  queuedBytes = 0;
  /** ENTRY_MEMORY_COST for every durable record not yet released. */
  liveEntryBytes = 0;
  private readonly waiters: SpaceWaiter[] = [];

  constructor(readonly limitBytes: number) {}

  get usedBytes(): number {
    return this.segmentBytes + this.queuedBytes + this.liveEntryBytes;
  }

  /** True when a record of `payloadLength` bytes would be accepted without waiting. */
  hasRoom(payloadLength: number): boolean {
    return this.waiters.length === 0 && this.fits(chargeOf(payloadLength));
  }

  /** Undefined when there is room now, so the common case makes no promise; else waits in arrival order. */
  reserve(payloadLength: number, signal?: AbortSignal): Promise<void> | undefined {
    const bytes = chargeOf(payloadLength);
    if (this.waiters.length === 0 && this.fits(bytes)) {
      this.queuedBytes += bytes;
      return undefined;
    }
    return new Promise((resolve, reject) => {
      const onAbort =
        signal === undefined
          ? undefined
          : () => {
              const i = this.waiters.indexOf(waiter);
              if (i >= 0) this.waiters.splice(i, 1);
              reject(new RequestAbortedError('client disconnected while its write waited for journal room'));
              this.wake();
            };
      const waiter: SpaceWaiter = { bytes, resolve, reject, signal, onAbort };
      if (signal !== undefined && onAbort !== undefined) signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Gives back room reserved for a record that will not be appended after all. */
  cancel(payloadLength: number): void {
    this.queuedBytes -= chargeOf(payloadLength);
    this.wake();
  }

  /** Writes waiting for room. */
  waiting(): { requests: number; bytes: number } {
    let bytes = 0;
    for (const w of this.waiters) bytes += w.bytes;
    return { requests: this.waiters.length, bytes };
  }

  /** Answers every write waiting for room with `err`. */
  failWaiters(err: Error): void {
    for (const w of this.waiters.splice(0)) {
      if (w.onAbort !== undefined) w.signal?.removeEventListener('abort', w.onAbort);
      w.reject(err);
    }
  }

  /** Lets waiting writes in, oldest first, as far as room was freed. */
  wake(): void {
    while (this.waiters.length > 0) {
      const w = elementAt(this.waiters, 0);
      if (!this.fits(w.bytes)) break;
      this.waiters.shift();
      this.queuedBytes += w.bytes;
      if (w.onAbort !== undefined) w.signal?.removeEventListener('abort', w.onAbort);
      w.resolve();
    }
  }

  private fits(bytes: number): boolean {
    // An empty journal always accepts one record, so a record larger than the limit cannot deadlock.
    return this.usedBytes + bytes <= this.limitBytes || this.usedBytes === 0;
  }
}

function chargeOf(payloadLength: number): number {
  return RECORD_HEADER_SIZE + payloadLength + ENTRY_MEMORY_COST;
}
