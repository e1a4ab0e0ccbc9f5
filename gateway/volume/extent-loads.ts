import { elementAt } from '../../shared/checked.js';
import { RetryNow } from '../hang/index.js';
import type { VolumeImage } from '../image/volume-image.js';
import type { JournalEntry } from '../journal/journal.js';
import { Semaphore } from '../util/semaphore.js';
import type { ExtentBuffers } from './extent-buffers.js';
import type { CacheReservation, ExtentCache, MaterializedExtent } from './extent-cache.js';
import type { PendingChanges } from './pending-changes.js';
import { covers } from './pending-overlay.js';

/** Extents being fetched and rebuilt at once, per volume (each holds one extent in memory). */
const MAX_CONCURRENT_LOADS = 16;

export interface ExtentLoadsOptions {
  readonly image: VolumeImage;
  readonly pending: PendingChanges;
  readonly cache: ExtentCache;
  readonly buffers: ExtentBuffers;
  /** An extent's worth of zeros, in a buffer of the pool. */
  zeroed(index: number): Buffer;
  /** Lays one pending change over a loaded extent (its payload from memory or from the journal). */
  applyPending(target: MaterializedExtent, index: number, entry: JournalEntry): Promise<void>;
}

interface Fetched {
  readonly data: Buffer | null;
  /** The extent's pending-changes generation when its stored bytes were chosen. */
  readonly generation: number;
  readonly reservation: CacheReservation;
}

/**
 * Loads of extents into the RAM cache: the store image with the pending changes laid over it.
 * Callers of one extent share its load; the loads at once are bounded (each holds an extent in
 * memory). Extents loaded ahead of a reader are fetched together: a delta holding runs of several of
 * them is read with one range GET, not one per extent — on a volume whose extents have runs in
 * hundreds of deltas (compaction behind), that is what a sequential read costs.
 */
export class ExtentLoads {
  private readonly loading = new Map<number, Promise<MaterializedExtent>>();
  /** Aborted when the store answers again (storeRecovered). */
  private givenUp = new AbortController();
  private readonly permits = new Semaphore(MAX_CONCURRENT_LOADS);

  constructor(private readonly o: ExtentLoadsOptions) {}

  has(index: number): boolean {
    return this.loading.has(index);
  }

  /** Loads that could start now without waiting. */
  get free(): number {
    return this.permits.free;
  }

  /** The extent's current contents, put in the cache; waits for a load slot. */
  load(index: number): Promise<MaterializedExtent> {
    const loading = this.loading.get(index);
    if (loading !== undefined) return loading;
    const permit = this.permits.acquire();
    return elementAt(this.track([index], permit ?? Promise.resolve()), 0);
  }

  /**
   * Starts loading the extents not loading yet, as many as there are free slots now (a load ahead never
   * waits for a slot, so loads ahead cannot hold slots while waiting for more), fetched together.
   * Returns the loads started, by extent.
   */
  loadAhead(indexes: readonly number[]): Map<number, Promise<MaterializedExtent>> {
    const batch: number[] = [];
    for (const index of indexes) {
      if (this.permits.free === 0) break;
      if (this.loading.has(index)) continue;
      // A free permit is taken at once: acquire() makes no promise then.
      void this.permits.acquire();
      batch.push(index);
    }
    const loads = batch.length === 0 ? [] : this.track(batch, Promise.resolve());
    return new Map(batch.map((index, k) => [index, elementAt(loads, k)]));
  }

  /**
   * The store answers again: loads still under way are given up (their callers retry at once, with
   * RetryNow) and the next callers start new ones. A load's GET sent while the store was away — to a
   * server that took the connection before it could answer — would otherwise hold every read of its
   * extent until the S3 client's own time-out, seconds after the recovery, however often they retry:
   * each retry would join the same load.
   */
  storeRecovered(): void {
    if (this.loading.size === 0) return;
    this.givenUp.abort();
    this.givenUp = new AbortController();
    this.loading.clear();
  }

  /** Starts the loads of `batch` once `permits` (one per extent) are held, and records them. */
  private track(batch: readonly number[], permits: Promise<void>): Array<Promise<MaterializedExtent>> {
    const signal = this.givenUp.signal;
    const fetched = permits.then(() => this.fetch(batch, signal));
    return batch.map((index, k) => {
      const load: Promise<MaterializedExtent> = this.finish(index, k, fetched, signal).finally(() => {
        if (this.loading.get(index) === load) this.loading.delete(index);
      });
      this.loading.set(index, load);
      return load;
    });
  }

  /** The stored bytes of every extent of the batch, read together. Releases what it holds on failure. */
  private async fetch(batch: readonly number[], signal: AbortSignal): Promise<Fetched[]> {
    const reservations = batch.map((index) => this.o.cache.reserve(this.o.image.extentLength(index)));
    try {
      // Reserving evicted extents: their buffers are the ones to read into.
      await this.o.buffers.settled(batch.length);
      // Chosen with no await before materializeMany, which decides what it reads at the call.
      const generations = batch.map((index) => this.o.pending.generation(index));
      const overwritten = batch.map((index) => this.overwritten(index));
      const stored = await this.o.image.materializeMany(
        batch.filter((_, k) => !elementAt(overwritten, k)),
        signal,
        this.o.buffers,
      );
      let next = 0;
      return batch.map((index, k) => ({
        data: elementAt(overwritten, k) ? this.o.zeroed(index) : elementAt(stored, next++),
        generation: elementAt(generations, k),
        reservation: elementAt(reservations, k),
      }));
    } catch (err) {
      for (const r of reservations) r.release();
      for (let k = 0; k < batch.length; k++) this.permits.release();
      throw err;
    }
  }

  /** Pending writes that cover the whole extent make the stored bytes irrelevant: no GET. */
  private overwritten(index: number): boolean {
    const start = index * this.o.image.shape.extentSize;
    return covers(this.o.pending.entries(index), start, start + this.o.image.extentLength(index));
  }

  private async finish(index: number, k: number, fetched: Promise<Fetched[]>, signal: AbortSignal): Promise<MaterializedExtent> {
    let f: Fetched;
    try {
      f = elementAt(await fetched, k);
    } catch (err) {
      throw signal.aborted ? new RetryNow() : err;
    }
    try {
      const extent: MaterializedExtent = { data: f.data, seq: 0 };
      if (await this.overlay(index, extent, f.generation, f.reservation)) return extent;
      // An upload finished or a resize came meanwhile: from the store again, alone.
      for (;;) {
        const generation = this.o.pending.generation(index);
        const again: MaterializedExtent = {
          data: this.overwritten(index) ? this.o.zeroed(index) : await this.o.image.materialize(index, signal, this.o.buffers),
          seq: 0,
        };
        if (await this.overlay(index, again, generation, f.reservation)) return again;
      }
    } catch (err) {
      throw signal.aborted ? new RetryNow() : err;
    } finally {
      f.reservation.release();
      this.permits.release();
    }
  }

  /**
   * Lays the pending changes newer than the extent over it and caches it; false when it must be read
   * from the store again (an upload finished meanwhile, or a resize changed the extent's length).
   */
  private async overlay(index: number, extent: MaterializedExtent, generation: number, reservation: CacheReservation): Promise<boolean> {
    while (this.o.pending.generation(index) === generation) {
      const newer = firstNewer(this.o.pending.entries(index), extent.seq);
      if (newer === undefined) {
        if (extent.data !== null && extent.data.length !== this.o.image.extentLength(index)) return false;
        // Checked and cached with no await in between, so no write can slip in unseen.
        reservation.release();
        this.o.cache.set(index, extent);
        return true;
      }
      try {
        await this.o.applyPending(extent, index, newer);
        extent.seq = newer.seq;
      } catch (err) {
        // An upload finished meanwhile and its segment may be gone: start over from the store.
        if (this.o.pending.generation(index) === generation) throw err;
      }
    }
    return false;
  }
}

function firstNewer(list: readonly JournalEntry[], seq: number): JournalEntry | undefined {
  for (const e of list) if (e.seq > seq) return e;
  return undefined;
}
