import { defined } from '../../shared/checked.js';
import type { Logger } from 'pino';
import { RequestAbortedError } from '../../shared/errors.js';
import type { VolumeImage } from '../image/volume-image.js';
import type { Journal, JournalEntry } from '../journal/journal.js';
import { RecordKind } from '../journal/record.js';
import type { RequestContext } from '../nbd/export.js';
import { BufferPool } from '../util/buffer-pool.js';
import type { ExtentBuffers } from './extent-buffers.js';
import { ExtentCache, type MaterializedExtent } from './extent-cache.js';
import { ExtentLoads } from './extent-loads.js';
import type { PendingChanges } from './pending-changes.js';
import { type OverlayPlan, planOverlay } from './pending-overlay.js';

/** Extents whose cold misses are remembered (to spot sequential or repeated reads). */
const RECENT_MISSES = 4096;

/**
 * Read-ahead: once this many bytes were read back to back, the extents after the read are loaded
 * before they are asked for, up to READAHEAD_EXTENTS at once. One GET at a time cannot keep the store
 * busy; several can, which is what makes a cold sequential read run near the store's speed.
 */
const READAHEAD_AFTER_BYTES = 1024 * 1024;
const READAHEAD_EXTENTS = 8;

/** Cold misses of one extent after which it is loaded whole, if that costs no more GETs than the misses did. */
const REPEATED_MISSES = 3;
/**
 * Cold misses of one extent, each starting where the one before it ended, after which it is loaded:
 * a stream. One is not enough: random 4 KiB reads over a volume larger than the cache land right
 * after the extent's last read one time in a thousand, and each such coincidence loaded 4 MiB for
 * nothing.
 */
const SEQUENTIAL_MISSES = 2;

/**
 * Replies that are not views of a cached extent (a read the disk cache, the store or the journal
 * answers) are built in buffers used again once the reply left (readDone). Left to the collector, a
 * 4 KiB reply per random read outlived a scavenge or two under load (32 requests in flight) and
 * waited in the old generation for a major GC (random reads on a 4 GiB volume with a disk cache: peak
 * RSS about 15 MiB lower with the pool). Replies this small or larger go to the pool; up to this much of
 * them waits free.
 */
const REPLY_MIN_POOLED_BYTES = 4096;
const REPLY_FREE_BYTES = 4 * 1024 * 1024;

export interface ReadPathOptions {
  readonly image: VolumeImage;
  readonly journal: Journal;
  readonly pending: PendingChanges;
  readonly cache: ExtentCache;
  /** Where extent buffers come from, and go back to (the cache gives back those it drops). */
  readonly buffers: ExtentBuffers;
  readonly logger: Logger;
  /** Runs a store read a guest request depends on, holding it through failures (the hang engine). */
  readonly hold: <T>(op: (attempt: AbortSignal) => Promise<T>, bytes: number, signal: AbortSignal | undefined) => Promise<T>;
  /** False while storage fails: no read-ahead then. */
  readonly storeHealthy: () => boolean;
}

/**
 * How a read finds every acknowledged byte: the RAM cache (a materialized extent includes all of them),
 * else the journal for what pending changes cover, else the store image with pending changes laid
 * over it. A read that raced an upload (its pending changes left for the store meanwhile) starts over.
 */
export class ReadPath {
  private readonly loads: ExtentLoads;
  private readonly replies = new BufferPool(REPLY_FREE_BYTES, REPLY_MIN_POOLED_BYTES);
  private readonly coldMisses = new Map<number, { count: number; nextOffset: number; run: number; cost: number }>();
  private sequentialNext = -1;
  private sequentialRun = 0;

  constructor(private readonly o: ReadPathOptions) {
    this.loads = new ExtentLoads({
      ...o,
      zeroed: (index) => this.zeroed(index),
      applyPending: (target, index, entry) => this.applyAsync(target, index, entry),
    });
  }

  private get extentSize(): number {
    return this.o.image.shape.extentSize;
  }

  private extentLength(index: number): number {
    return this.o.image.extentLength(index);
  }

  async read(offset: number, length: number, ctx: RequestContext | undefined): Promise<Buffer> {
    this.noteSequential(offset, length);
    const sole = this.soleExtent(offset, length);
    if (sole >= 0) {
      const view = this.cachedView(sole, offset, length);
      if (view !== undefined) return view;
      if (this.waitsForLoad(sole, length)) return this.loadedView(sole, offset, length, ctx);
    }
    const out = this.replies.take(length);
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const index = Math.floor(pos / this.extentSize);
      const inExtent = pos - index * this.extentSize;
      const n = Math.min(length - done, this.extentLength(index) - inExtent);
      const cached = this.o.cache.get(index);
      if (cached !== undefined) copyExtent(cached, out, done, inExtent, n);
      else if (!(await this.readFromJournal(index, pos, n, out, done))) await this.readCold(index, pos, n, out, done, ctx);
      if (ctx?.signal.aborted) throw new RequestAbortedError('client disconnected');
      done += n;
    }
    return out;
  }

  /** The extent a read lies inside of, or -1 when it is empty or spans two. */
  private soleExtent(offset: number, length: number): number {
    const index = Math.floor(offset / this.extentSize);
    return length > 0 && offset - index * this.extentSize + length <= this.extentLength(index) ? index : -1;
  }

  /**
   * A read inside one cached extent is answered from the cache's own bytes, without a copy: the view
   * is lent, and its buffer is not used again until `readDone` says the reply is sent.
   */
  private cachedView(index: number, offset: number, length: number): Buffer | undefined {
    // peek first: a miss is counted once, by the read itself.
    if (this.o.cache.peek(index) === undefined) return undefined;
    const cached = this.o.cache.get(index);
    return cached === undefined ? undefined : this.lendView(cached.data, offset - index * this.extentSize, length);
  }

  /**
   * A read inside one extent that waits for the extent's load (one under way, or a read of most of the
   * extent) is answered, like a hit, with a lent view of the loaded bytes, not a copy: a sequential
   * read would otherwise allocate its whole throughput in reply buffers for the collector. Extents with
   * pending changes go the way of every other read (the journal may answer without the store).
   */
  private waitsForLoad(index: number, length: number): boolean {
    if (this.o.cache.maxBytes === 0 || this.o.pending.entries(index).length > 0) return false;
    return this.loads.has(index) || length * 2 >= this.extentLength(index);
  }

  private async loadedView(index: number, offset: number, length: number, ctx: RequestContext | undefined): Promise<Buffer> {
    const extent = await this.o.hold(() => this.materialize(index), length, ctx?.signal);
    if (ctx?.signal.aborted) throw new RequestAbortedError('client disconnected');
    // In the load's continuation, before a buffer it evicted can be taken again (ExtentBuffers.settle).
    return this.lendView(extent.data, offset - index * this.extentSize, length);
  }

  private lendView(data: Buffer | null, inExtent: number, length: number): Buffer {
    if (data === null) return this.replies.take(length).fill(0);
    const view = data.subarray(inExtent, inExtent + length);
    this.o.buffers.lend(view);
    return view;
  }

  /** The data a read returned is no longer used by its reader (the NBD reply left). */
  readDone(data: Buffer): void {
    this.o.buffers.returned(data);
    this.replies.give(data);
  }

  /** An extent's worth of zeros, in a buffer of the pool. */
  private zeroed(index: number): Buffer {
    return this.o.buffers.take().subarray(0, this.extentLength(index)).fill(0);
  }

  /** Loads the extent into the cache (NBD_CMD_CACHE, read-ahead); resolves when it is there. */
  async prefetch(index: number, ctx: RequestContext | undefined): Promise<void> {
    if (this.o.cache.peek(index) !== undefined) return;
    await this.o.hold(() => this.materialize(index), this.extentLength(index), ctx?.signal);
  }

  /** Writes land in cached extents at once, so cache hits never need the journal. */
  applyToCache(entry: JournalEntry): void {
    const first = Math.floor(entry.offset / this.extentSize);
    const last = Math.floor((entry.offset + entry.length - 1) / this.extentSize);
    const touch = (i: number): void => {
      const cached = this.o.cache.peek(i);
      if (cached === undefined) return;
      const resized = this.applySync(cached, i, entry);
      cached.seq = entry.seq;
      if (resized) this.o.cache.set(i, cached);
    };
    // A wide change (a maximal TRIM) visits the cached extents, not every extent it spans.
    if (last - first + 1 > this.o.cache.size) {
      for (const i of [...this.o.cache.keys()]) if (i >= first && i <= last) touch(i);
    } else for (let i = first; i <= last; i++) touch(i);
  }

  /** Applies an entry whose payload is still in memory; returns true when the buffer was allocated or dropped. */
  private applySync(target: MaterializedExtent, index: number, entry: JournalEntry): boolean {
    const { start, end, extentStart } = this.overlap(index, entry);
    if (entry.kind === RecordKind.Zero) {
      if (target.data === null) return false;
      if (start === extentStart && end === extentStart + this.extentLength(index)) {
        this.o.cache.dropped(target.data);
        target.data = null;
        return true;
      }
      target.data.fill(0, start - extentStart, end - extentStart);
      return false;
    }
    let resized = false;
    if (target.data === null) {
      target.data = this.zeroed(index);
      resized = true;
    }
    defined(entry.data, 'in-memory journal payload').copy(target.data, start - extentStart, start - entry.offset, end - entry.offset);
    return resized;
  }

  private async applyAsync(target: MaterializedExtent, index: number, entry: JournalEntry): Promise<void> {
    if (entry.kind === RecordKind.Zero || entry.data !== undefined) {
      this.applySync(target, index, entry);
      return;
    }
    const { start, end, extentStart } = this.overlap(index, entry);
    target.data ??= this.zeroed(index);
    await this.o.journal.readPayload(entry, start - entry.offset, end - start, target.data, start - extentStart);
  }

  private overlap(index: number, entry: JournalEntry): { start: number; end: number; extentStart: number } {
    const extentStart = index * this.extentSize;
    const start = Math.max(entry.offset, extentStart);
    const end = Math.min(entry.offset + entry.length, extentStart + this.extentLength(index));
    return { start, end, extentStart };
  }

  /** The extent's current contents: the store image plus pending changes, put in the cache (ExtentLoads). */
  materialize(index: number): Promise<MaterializedExtent> {
    return this.loads.load(index);
  }

  /** The store answers again: the loads under way are given up (ExtentLoads.storeRecovered). */
  storeRecovered(): void {
    this.loads.storeRecovered();
  }

  /** Serves a read the pending changes cover completely, without the store. */
  private async readFromJournal(index: number, pos: number, n: number, out: Buffer, outOffset: number): Promise<boolean> {
    const list = this.o.pending.entries(index);
    if (list.length === 0) return false;
    const plan = planOverlay(list, pos, pos + n);
    return plan.covered && this.applyPlan(plan, index, pos, out, outOffset, this.o.pending.generation(index));
  }

  /**
   * A read of an extent neither cached nor covered by the journal. A small one reads only its own
   * bytes from the store image and lays the pending changes over them; a read of most of an extent
   * loads and caches the extent.
   */
  private async readCold(
    index: number,
    pos: number,
    n: number,
    out: Buffer,
    outOffset: number,
    ctx: RequestContext | undefined,
  ): Promise<void> {
    const inExtent = pos - index * this.extentSize;
    if (n * 2 >= this.extentLength(index) || this.o.cache.maxBytes === 0 || this.loads.has(index)) {
      copyExtent(await this.o.hold(() => this.materialize(index), n, ctx?.signal), out, outOffset, inExtent, n);
      return;
    }
    this.noteColdMiss(index, pos, n);
    for (;;) {
      const generation = this.o.pending.generation(index);
      await this.o.hold((attempt) => this.o.image.read(pos, n, out, outOffset, attempt), n, ctx?.signal);
      if (await this.overlayPending(index, pos, n, out, outOffset, generation)) return;
    }
  }

  /**
   * Loads a cold-missed extent into the cache in the background when it is read sequentially, or
   * missed again and again while the cache has room; random reads over more than the cache holds stay
   * small reads instead of evicting each other. "Again and again" weighs what the load costs: one GET
   * per object holding its bytes, against one per small read, so an extent whose bytes lie in hundreds
   * of deltas (compaction behind) is loaded only after as many misses (paying for the load at most
   * twice what the small reads alone would have), not after three.
   */
  private noteColdMiss(index: number, pos: number, n: number): void {
    let miss = this.coldMisses.get(index);
    if (miss === undefined) {
      if (this.coldMisses.size >= RECENT_MISSES) this.coldMisses.clear();
      miss = { count: 0, nextOffset: -1, run: 0, cost: 0 };
      this.coldMisses.set(index, miss);
    }
    miss.run = miss.nextOffset === pos ? miss.run + 1 : 0;
    const sequential = miss.run >= SEQUENTIAL_MISSES;
    miss.count++;
    miss.nextOffset = pos + n;
    if (miss.count === REPEATED_MISSES) miss.cost = this.o.image.objectsHolding(index);
    const cache = this.o.cache;
    const roomy = cache.bytes + cache.reserved + this.extentLength(index) <= cache.boundBytes;
    if (!sequential && !(miss.count >= Math.max(REPEATED_MISSES, miss.cost) && roomy)) return;
    this.coldMisses.delete(index);
    this.loadInBackground([index]);
  }

  private loadInBackground(indexes: readonly number[]): void {
    for (const [extent, load] of this.loads.loadAhead(indexes))
      load.catch((err: unknown) => {
        this.o.logger.debug({ err, extent }, 'background extent load failed');
      });
  }

  /**
   * Tracks sequential reading and loads the extents ahead of a stream into the cache, within a quarter
   * of the cache and not while storage fails (held reads come first). They are loaded half a window at
   * a time, not one by one as the reader moves on: loaded together, they cost one GET per delta
   * holding runs of them (ExtentLoads).
   */
  private noteSequential(offset: number, length: number): void {
    this.sequentialRun = offset === this.sequentialNext ? this.sequentialRun + length : 0;
    this.sequentialNext = offset + length;
    if (this.sequentialRun < READAHEAD_AFTER_BYTES || !this.o.storeHealthy()) return;
    const window = Math.min(READAHEAD_EXTENTS, Math.floor(this.o.cache.boundBytes / this.extentSize / 4));
    const first = Math.floor(this.sequentialNext / this.extentSize);
    const last = Math.min(first + window, this.o.image.extentCount) - 1;
    const ahead: number[] = [];
    for (let index = first; index <= last; index++) if (!this.loads.has(index) && this.o.cache.peek(index) === undefined) ahead.push(index);
    if (ahead.length * 2 >= window || (ahead.length > 0 && last === this.o.image.extentCount - 1)) this.loadInBackground(ahead);
  }

  /**
   * Lays the extent's pending changes over `out`, which holds the stored bytes of [pos, pos + n), each
   * byte from the newest entry that wrote it (pending-overlay.ts). False when an upload finished
   * meanwhile: the caller starts over.
   */
  async overlayPending(index: number, pos: number, n: number, out: Buffer, outOffset: number, generation: number): Promise<boolean> {
    return this.applyPlan(planOverlay(this.o.pending.entries(index), pos, pos + n), index, pos, out, outOffset, generation);
  }

  private async applyPlan(
    plan: OverlayPlan,
    index: number,
    pos: number,
    out: Buffer,
    outOffset: number,
    generation: number,
  ): Promise<boolean> {
    for (const { entry, start, stop } of plan.pieces) {
      if (entry.kind === RecordKind.Zero) {
        out.fill(0, outOffset + start - pos, outOffset + stop - pos);
        continue;
      }
      try {
        await this.o.journal.readPayload(entry, start - entry.offset, stop - start, out, outOffset + start - pos);
      } catch (err) {
        if (this.o.pending.generation(index) === generation) throw err;
        return false;
      }
      if (this.o.pending.generation(index) !== generation) return false;
    }
    return this.o.pending.generation(index) === generation;
  }
}

function copyExtent(extent: MaterializedExtent, out: Buffer, outOffset: number, from: number, n: number): void {
  if (extent.data === null) out.fill(0, outOffset, outOffset + n);
  else extent.data.copy(out, outOffset, from, from + n);
}
