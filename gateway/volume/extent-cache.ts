import { LRUCache } from 'lru-cache';
import type { ExtentBuffers } from './extent-buffers.js';

/** The current contents of one extent: stored base with every journal change up to `seq` applied. */
export interface MaterializedExtent {
  /** null means all zeros; no buffer is kept for those. */
  data: Buffer | null;
  /** Highest journal sequence number folded into `data`. */
  seq: number;
}

export interface CacheReservation {
  release(): void;
}

/** What a zero extent costs in the cache, so that a sparse volume cannot grow the map without bound. */
const ZERO_EXTENT_COST = 64;

/**
 * LRU cache of materialized extents, bounded in bytes. An entry is the extent as the guest sees it
 * now, so a cache hit needs neither the store nor the journal. Entries are changed in place when a
 * write lands; evicting one is always safe because the journal still holds every change it carries.
 * The cache owns the buffers of its entries: one it drops goes back to `buffers` (if it came from there).
 */
export class ExtentCache {
  private readonly lru: LRUCache<number, MaterializedExtent> | undefined;
  /** Extents in memory outside the cache (being loaded, being uploaded), counted against the bound. */
  private reservedBytes = 0;
  /** Taken off the bound for the rest of the process (the gateway's memory limit, memory-limit.ts). */
  private squeezedBytes = 0;
  /** Set while an entry is taken out and put back (set): its buffer stays its own. */
  private reinserting = false;
  hits = 0;
  misses = 0;

  constructor(
    readonly maxBytes: number,
    private readonly buffers?: ExtentBuffers,
  ) {
    this.lru =
      maxBytes > 0
        ? new LRUCache<number, MaterializedExtent>({
            maxSize: maxBytes,
            sizeCalculation: (e) => (e.data === null ? ZERO_EXTENT_COST : e.data.length),
            dispose: (e) => {
              if (!this.reinserting && e.data !== null) this.buffers?.release(e.data);
            },
          })
        : undefined;
  }

  get(index: number): MaterializedExtent | undefined {
    const e = this.lru?.get(index);
    if (e === undefined) this.misses++;
    else this.hits++;
    return e;
  }

  /** Looks without counting a hit or miss or refreshing recency (used by writes and uploads). */
  peek(index: number): MaterializedExtent | undefined {
    return this.lru?.peek(index);
  }

  /**
   * Inserts, or re-inserts an entry whose size changed (a zero extent that got its first write).
   * lru-cache recomputes the size only for a new value object, so the same object is taken out and
   * put back; otherwise a written zero extent would count 64 bytes while holding a whole extent, and
   * the cache would outgrow its bound. Too large an extent is simply not kept.
   */
  set(index: number, extent: MaterializedExtent): void {
    if (this.lru === undefined) return;
    if (this.lru.peek(index) === extent) {
      this.reinserting = true;
      this.lru.delete(index);
      this.reinserting = false;
    }
    this.lru.set(index, extent);
    this.trim();
  }

  /** A cached extent's buffer was replaced or dropped (by a write): the old one goes back. */
  dropped(data: Buffer): void {
    this.buffers?.release(data);
  }

  /**
   * Counts an extent held outside the cache (a load, an upload's copy) against the cache's bound
   * until released, evicting cached extents to make room: `--cache-size` then bounds all the extent
   * memory of a volume, not only what is cached. Releasing twice is harmless.
   */
  reserve(bytes: number): CacheReservation {
    this.reservedBytes += bytes;
    this.trim();
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        this.reservedBytes -= bytes;
      },
    };
  }

  /**
   * Lowers the bound by `bytes` (at most half of it; 0 restores it), evicting at once what no longer
   * fits: the rest of the process needs the room (memory-limit.ts).
   */
  squeeze(bytes: number): void {
    this.squeezedBytes = Math.min(Math.max(0, bytes), Math.floor(this.maxBytes / 2));
    this.trim();
  }

  get squeezed(): number {
    return this.squeezedBytes;
  }

  /** The bound now: `maxBytes` less what is squeezed. */
  get boundBytes(): number {
    return this.maxBytes - this.squeezedBytes;
  }

  private trim(): void {
    const lru = this.lru;
    if (lru === undefined) return;
    while (lru.size > 0 && lru.calculatedSize + this.reservedBytes > this.boundBytes) lru.pop();
    this.buffers?.fit();
  }

  /** The bound's bytes neither cached nor reserved: what free extent buffers may hold without exceeding it. */
  get unusedBytes(): number {
    return Math.max(0, this.boundBytes - (this.lru?.calculatedSize ?? 0) - this.reservedBytes);
  }

  /** Cached extent indexes (recency order, most recent first). */
  keys(): IterableIterator<number> {
    return this.lru?.keys() ?? [].values();
  }

  delete(index: number): void {
    this.lru?.delete(index);
  }

  /** Bytes of cached extents (reservations not included). */
  get bytes(): number {
    return this.lru?.calculatedSize ?? 0;
  }

  get reserved(): number {
    return this.reservedBytes;
  }

  get size(): number {
    return this.lru?.size ?? 0;
  }

  clear(): void {
    this.lru?.clear();
  }
}
