import { elementAt } from '../../shared/checked.js';

/**
 * Per extent, which delta holds each byte newer than the extent's base: the in-memory index a read
 * consults before the base. Runs are kept sorted and non-overlapping, newest winning, four 32-bit
 * words each (start and end within the extent, the delta's slot, where `start` is in that delta's
 * data, or ZERO_DATA), in one growable typed array per extent — 16 bytes a run, no object per run.
 */

/** The data offset of a zero run (TRIM, WRITE_ZEROES, zeros written): its delta stores no bytes for it. */
export const ZERO_DATA = 0xffff_ffff;
/** What `resolve` reports for bytes no delta holds: read them from the base. */
export const NO_SOURCE = -1;

const STRIDE = 4;
/** Rough cost of an extent's entry besides its runs (map slot, typed array, object). */
const EXTENT_OVERHEAD = 160;
/** Run counts at or above this share the last histogram bucket when the busiest extents are picked. */
const HISTOGRAM_BUCKETS = 1024;

interface ExtentRuns {
  n: number;
  a: Uint32Array;
}

export type RunVisitor = (start: number, end: number, source: number, dataOffset: number) => void;

export class RunMap {
  private readonly extents = new Map<number, ExtentRuns>();
  private capacityRuns = 0;
  private runCount = 0;

  /** `onDropped(source, bytes)` is told of every byte of a run that a newer run or a removal takes away. */
  constructor(private readonly onDropped: (source: number, bytes: number) => void) {}

  /** Approximate memory held, in bytes. */
  get bytes(): number {
    return this.capacityRuns * STRIDE * 4 + this.extents.size * EXTENT_OVERHEAD;
  }

  get runs(): number {
    return this.runCount;
  }

  runsOf(extent: number): number {
    return this.extents.get(extent)?.n ?? 0;
  }

  extentIndexes(): IterableIterator<number> {
    return this.extents.keys();
  }

  /**
   * Records that [start, end) of the extent now reads from delta `source` at `dataOffset` (ZERO_DATA:
   * reads as zeros), newer than every run present.
   */
  apply(extent: number, start: number, end: number, source: number, dataOffset: number): void {
    let e = this.extents.get(extent);
    if (e === undefined) {
      e = { n: 0, a: new Uint32Array(4 * STRIDE) };
      this.capacityRuns += 4;
      this.extents.set(extent, e);
    }
    const a = e.a;
    // First run ending after start, and first run starting at or after end: [lo, hi) overlap.
    const lo = firstEndingAfter(e, start);
    let hi = lo;
    while (hi < e.n && elementAt(a, hi * STRIDE) < end) hi++;
    let keepLeft = false;
    let right: number[] | undefined;
    for (let i = lo; i < hi; i++) {
      const at = i * STRIDE;
      const s = elementAt(a, at);
      const t = elementAt(a, at + 1);
      const src = elementAt(a, at + 2);
      this.onDropped(src, Math.min(t, end) - Math.max(s, start));
      if (i === lo && s < start) keepLeft = true;
      if (i === hi - 1 && t > end) right = [end, t, src, a[at + 3] === ZERO_DATA ? ZERO_DATA : elementAt(a, at + 3) + (end - s)];
    }
    const insert = (keepLeft ? 1 : 0) + 1 + (right !== undefined ? 1 : 0);
    const removed = hi - lo;
    const grown = e.n - removed + insert;
    const target = this.ensureCapacity(e, grown);
    // The runs after the overlap move to their new place; a left piece stays where it is, at lo.
    if (target === a) {
      a.copyWithin((lo + insert) * STRIDE, hi * STRIDE, e.n * STRIDE);
    } else {
      target.set(a.subarray(0, (keepLeft ? lo + 1 : lo) * STRIDE));
      target.set(a.subarray(hi * STRIDE, e.n * STRIDE), (lo + insert) * STRIDE);
    }
    let w = lo;
    if (keepLeft) {
      // The left piece keeps its start, source and offset; only its end moves.
      target[w * STRIDE + 1] = start;
      w++;
    }
    target.set([start, end, source, dataOffset], w * STRIDE);
    w++;
    if (right !== undefined) target.set(right, w * STRIDE);
    this.runCount += insert - removed;
    e.n = grown;
    e.a = target;
  }

  /** Removes the extent's runs whose source matches (compaction folded them into a new base). */
  removeWhere(extent: number, folded: (source: number) => boolean): void {
    const e = this.extents.get(extent);
    if (e === undefined) return;
    const a = e.a;
    let w = 0;
    for (let i = 0; i < e.n; i++) {
      const at = i * STRIDE;
      const src = elementAt(a, at + 2);
      if (folded(src)) {
        this.onDropped(src, elementAt(a, at + 1) - elementAt(a, at));
        continue;
      }
      if (w !== i) a.copyWithin(w * STRIDE, at, at + STRIDE);
      w++;
    }
    this.runCount -= e.n - w;
    e.n = w;
    if (w === 0) {
      this.capacityRuns -= a.length / STRIDE;
      this.extents.delete(extent);
    }
  }

  /** Forgets every run (the image was replaced wholesale). */
  clear(): void {
    this.extents.clear();
    this.capacityRuns = 0;
    this.runCount = 0;
  }

  /** Visits [start, end) of the extent in order: runs with their source, gaps with NO_SOURCE. */
  resolve(extent: number, start: number, end: number, visit: RunVisitor): void {
    const e = this.extents.get(extent);
    let pos = start;
    if (e !== undefined) {
      const a = e.a;
      for (let i = firstEndingAfter(e, start); i < e.n && pos < end; i++) {
        const at = i * STRIDE;
        const s = elementAt(a, at);
        if (s >= end) break;
        if (s > pos) visit(pos, s, NO_SOURCE, 0);
        const from = Math.max(s, pos);
        const to = Math.min(elementAt(a, at + 1), end);
        const off = elementAt(a, at + 3);
        visit(from, to, elementAt(a, at + 2), off === ZERO_DATA ? ZERO_DATA : off + (from - s));
        pos = to;
      }
    }
    if (pos < end) visit(pos, end, NO_SOURCE, 0);
  }

  /**
   * Up to `limit` extents holding the most runs (what compaction saves most memory on): a histogram
   * of run counts gives the threshold, then one pass collects the extents above it and enough at it,
   * stopping as soon as it has them — linear at worst, where sorting every extent would be n log n.
   * In extent order: compaction folds them sixteen at a time, reading each delta once per batch across
   * small gaps, and a delta lays its runs out by volume offset — so neighbours cost one GET per delta
   * where extents taken in the order they were first written cost one per extent.
   */
  busiestExtents(limit: number): number[] {
    const counts = new Uint32Array(HISTOGRAM_BUCKETS);
    for (const e of this.extents.values()) {
      const bucket = Math.min(e.n, HISTOGRAM_BUCKETS - 1);
      counts[bucket] = elementAt(counts, bucket) + 1;
    }
    let threshold = HISTOGRAM_BUCKETS - 1;
    let above = 0;
    for (; threshold > 0; threshold--) {
      if (above + elementAt(counts, threshold) >= limit) break;
      above += elementAt(counts, threshold);
    }
    const atThreshold = Math.min(limit - above, elementAt(counts, threshold));
    const high: number[] = [];
    const equal: number[] = [];
    for (const [extent, e] of this.extents) {
      const n = Math.min(e.n, HISTOGRAM_BUCKETS - 1);
      if (n > threshold) high.push(extent);
      else if (n === threshold && equal.length < atThreshold) equal.push(extent);
      if (high.length === above && equal.length === atThreshold) break;
    }
    return [...high, ...equal].sort((x, y) => x - y);
  }

  private ensureCapacity(e: ExtentRuns, runs: number): Uint32Array {
    const have = e.a.length / STRIDE;
    if (runs <= have) return e.a;
    let cap = have;
    while (cap < runs) cap *= 2;
    this.capacityRuns += cap - have;
    return new Uint32Array(cap * STRIDE);
  }
}

function firstEndingAfter(e: ExtentRuns, pos: number): number {
  let lo = 0;
  let hi = e.n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (elementAt(e.a, mid * STRIDE + 1) <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
