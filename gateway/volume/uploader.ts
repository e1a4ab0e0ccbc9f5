import type { Logger } from 'pino';
import { backoffMs } from '../util/backoff.js';
import type { Journal } from '../journal/journal.js';
import type { ObjectStore } from '../store/object-store.js';
import type { PendingChanges } from './pending-changes.js';
import { Semaphore } from '../util/semaphore.js';

/**
 * Extents prepared (read back from the journal and the store) beyond the PUTs in flight, so that a
 * slot freed by a finished PUT is refilled at once instead of after the next extent's local reads.
 */
const PREPARE_AHEAD = 2;

export interface UploaderOptions {
  readonly volume: string;
  readonly store: ObjectStore;
  readonly journal: Journal;
  readonly pending: PendingChanges;
  readonly snapshot: (extent: number) => Promise<ExtentSnapshot>;
  readonly keyFor: (extent: number) => string;
  readonly concurrency: number;
  /**
   * How long an extent's oldest change waits so that later writes to the same extent share one
   * PUT. Random small writes to 4 MiB extents would otherwise cost a 4 MiB PUT each.
   */
  readonly delayMs: number;
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
  readonly logger: Logger;
  /** Told of each failed upload and of the first success after failures (storage-unavailable). */
  readonly onStoreError?: (err: unknown) => void;
  readonly onStoreRecovered?: () => void;
}

/** An extent's bytes as of journal sequence `seq`, private to the upload (null for zeros). */
export interface ExtentSnapshot {
  readonly data: Buffer | null;
  readonly seq: number;
  /** Gives the snapshot's memory back once the upload is over (or failed). */
  readonly release: () => void;
}

export interface UploaderStats {
  puts: number;
  deletes: number;
  bytesUploaded: number;
  failures: number;
}

/**
 * Folds journal entries into extent objects in the background: one read-modify-write PUT per dirty
 * extent, however many writes it collected, a bounded number at a time. After a PUT succeeds the
 * entries it covered leave the pending set and the journal may retire their segments.
 */
export class Uploader {
  private readonly inFlight = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private timerDue = Infinity;
  /** While set (drain, journal pressure), extents are uploaded without waiting out the delay. */
  private urgent = false;
  private stopped = false;
  private failures = 0;
  private drainWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  readonly stats: UploaderStats = { puts: 0, deletes: 0, bytesUploaded: 0, failures: 0 };
  /** `concurrency` bounds the requests in flight to the store, not the extents being prepared. */
  private readonly requests: Semaphore;

  constructor(private readonly opts: UploaderOptions) {
    this.requests = new Semaphore(opts.concurrency);
  }

  /** New changes arrived: upload them once they have waited the coalescing delay. */
  notify(): void {
    if (this.stopped) return;
    this.schedule(this.failures > 0 ? this.retryDelay() : this.opts.delayMs);
  }

  /**
   * Uploads everything now, without the coalescing delay, until nothing is pending (shutdown drain,
   * journal pressure).
   */
  kick(): void {
    this.urgent = true;
    this.pump();
  }

  /** The store answers again: retry failed uploads now instead of at the end of their back-off. */
  retryNow(): void {
    this.cancelTimer();
    this.pump();
  }

  private cancelTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Infinity;
  }

  private schedule(inMs: number): void {
    const due = performance.now() + inMs;
    if (this.timer !== undefined && this.timerDue <= due) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerDue = Infinity;
      this.pump();
    }, Math.max(0, inMs));
  }

  private pump(): void {
    if (this.stopped) return;
    const now = performance.now();
    const pressure = this.urgent || this.opts.journal.usedBytes > this.opts.journal.limitBytes / 2;
    for (const extent of this.opts.pending.dirtyExtents()) {
      if (this.inFlight.size >= this.opts.concurrency + PREPARE_AHEAD) return;
      if (this.inFlight.has(extent)) continue;
      // Its oldest record is not durable: an upload could release nothing, and repeating it would
      // only hammer the store until the failing journal writes it (the volume notifies us when it does).
      if (this.opts.journal.failing && this.opts.pending.entries(extent)[0]?.durable === false) continue;
      const since = this.opts.pending.dirtySinceOf(extent) ?? now;
      if (!pressure && now - since < this.opts.delayMs) {
        // Extents are in the order they became dirty: every later one is younger still.
        this.schedule(since + this.opts.delayMs - now);
        break;
      }
      this.inFlight.add(extent);
      void this.upload(extent);
    }
    if (this.opts.pending.count === 0) this.urgent = false;
    this.settle();
  }

  private async upload(extent: number): Promise<void> {
    const key = this.opts.keyFor(extent);
    let snap: ExtentSnapshot | undefined;
    try {
      snap = await this.opts.snapshot(extent);
      const ready = this.opts.journal.waitDurableOrFailing(snap.seq);
      if (ready) await ready;
      const permit = this.requests.acquire();
      if (permit) await permit;
      try {
        if (snap.data === null) {
          await this.opts.store.delete(key);
          this.stats.deletes++;
        } else {
          await this.opts.store.put(key, snap.data);
          this.stats.puts++;
          this.stats.bytesUploaded += snap.data.length;
        }
      } finally {
        this.requests.release();
      }
      // While the journal is failing the snapshot may hold records that are not durable yet. Uploading
      // them early is harmless (their writes are unanswered); they stay pending until durable.
      const through = Math.min(snap.seq, this.opts.journal.durableSequence);
      for (const entry of this.opts.pending.removeThrough(extent, through, performance.now())) this.opts.journal.release(entry);
      if (this.failures > 0) {
        this.failures = 0;
        this.opts.logger.info({ volume: this.opts.volume }, 'object store answers again; uploads resumed');
        this.opts.onStoreRecovered?.();
      }
    } catch (err) {
      this.failures++;
      this.stats.failures++;
      this.opts.logger.warn({ err, volume: this.opts.volume, extent }, 'extent upload failed; will retry');
      this.opts.onStoreError?.(err);
    } finally {
      snap?.release();
      this.inFlight.delete(extent);
    }
    if (this.failures > 0) this.notify();
    else this.pump();
    this.settle();
  }

  private retryDelay(): number {
    return backoffMs(this.failures - 1, this.opts.retryInitialMs, this.opts.retryMaxMs);
  }

  private settle(): void {
    if (this.inFlight.size > 0) return;
    if (this.opts.pending.count === 0) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w();
    }
    const idle = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of idle) w();
  }

  /** Resolves when every pending change is in the store (uploads start at once). */
  drained(): Promise<void> {
    if (this.opts.pending.count === 0 && this.inFlight.size === 0) return Promise.resolve();
    const p = new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    this.kick();
    return p;
  }

  /** Stops starting uploads and waits for those under way to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelTimer();
    if (this.inFlight.size > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  get uploading(): number {
    return this.inFlight.size;
  }
}
