import type { PutEventsRequestEntry } from '@aws-sdk/client-eventbridge';
import type { HoldfastEvent } from '../../shared/events.js';
import { MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, entrySize, toPutEventsEntry } from './put-events.js';

export interface Pending {
  readonly event: HoldfastEvent;
  readonly entry: PutEventsRequestEntry;
  readonly bytes: number;
}

/**
 * The events EventBridge has not accepted yet, oldest first, bounded in count and bytes, and cut
 * into PutEvents batches that keep each volume's events in the order they were raised.
 */
export class EventQueue {
  private readonly pending: Pending[] = [];
  private bytes = 0;

  constructor(
    private readonly busName: string,
    private readonly maxEvents: number,
    private readonly maxBytes: number,
  ) {}

  get length(): number {
    return this.pending.length;
  }

  /** Queues the event; when the queue is full, returns why instead. */
  push(event: HoldfastEvent): string | undefined {
    const entry = toPutEventsEntry(event, this.busName);
    const bytes = entrySize(entry);
    if (this.pending.length >= this.maxEvents || this.bytes + bytes > this.maxBytes)
      return `queue full (${this.pending.length} events, ${this.bytes} bytes)`;
    this.pending.push({ event, entry, bytes });
    this.bytes += bytes;
    return undefined;
  }

  includes(p: Pending): boolean {
    return this.pending.includes(p);
  }

  events(): HoldfastEvent[] {
    return this.pending.map((p) => p.event);
  }

  /**
   * The oldest queued event of each volume, up to the call's limits. A volume whose oldest event
   * does not fit this time contributes nothing, so none of its later events can go first.
   */
  nextBatch(): Pending[] {
    const batch: Pending[] = [];
    const seen = new Set<string>();
    let bytes = 0;
    for (const p of this.pending) {
      if (batch.length === MAX_BATCH_ENTRIES) break;
      if (seen.has(p.event.volume)) continue;
      seen.add(p.event.volume);
      if (bytes + p.bytes > MAX_BATCH_BYTES) continue;
      batch.push(p);
      bytes += p.bytes;
    }
    return batch;
  }

  remove(done: ReadonlySet<Pending>): void {
    if (done.size === 0) return;
    let kept = 0;
    for (const p of this.pending) {
      if (done.has(p)) this.bytes -= p.bytes;
      else this.pending[kept++] = p;
    }
    this.pending.length = kept;
  }
}
