import type { JournalEntry } from '../journal/journal.js';

/**
 * Per extent, the journal entries not yet in the object store, in sequence order. It is what a
 * read overlays on the stored extent and what the uploader folds into the next PUT. The map's
 * insertion order is the order extents became dirty, which the uploader follows so that the
 * oldest journal segments are emptied first.
 */
export class PendingChanges {
  private readonly byExtent = new Map<number, JournalEntry[]>();
  /** Bumped whenever entries leave an extent, so a materialization that raced an upload restarts. */
  private readonly generations = new Map<number, number>();
  /** When each dirty extent's oldest pending change arrived (ms, monotonic clock). */
  private readonly dirtySince = new Map<number, number>();
  private entryCount = 0;

  add(extent: number, entry: JournalEntry, now: number): void {
    const list = this.byExtent.get(extent);
    if (list === undefined) {
      this.byExtent.set(extent, [entry]);
      this.dirtySince.set(extent, now);
    } else list.push(entry);
    entry.pendingExtents++;
    this.entryCount++;
  }

  entries(extent: number): readonly JournalEntry[] {
    return this.byExtent.get(extent) ?? EMPTY;
  }

  generation(extent: number): number {
    return this.generations.get(extent) ?? 0;
  }

  /**
   * Removes the extent's entries up to `seq` (they are in the store now) and returns those whose
   * last pending extent this was, for the journal to release.
   */
  removeThrough(extent: number, seq: number, now: number): JournalEntry[] {
    const list = this.byExtent.get(extent);
    if (list === undefined) return [];
    let n = 0;
    while (n < list.length && list[n]!.seq <= seq) n++;
    if (n === 0) return [];
    const done: JournalEntry[] = [];
    for (let i = 0; i < n; i++) {
      const e = list[i]!;
      e.pendingExtents--;
      if (e.pendingExtents === 0) done.push(e);
    }
    this.entryCount -= n;
    this.generations.set(extent, this.generation(extent) + 1);
    this.byExtent.delete(extent);
    this.dirtySince.delete(extent);
    // Still dirty: re-inserted at the back, behind extents that have waited longer.
    if (n < list.length) {
      this.byExtent.set(extent, list.slice(n));
      this.dirtySince.set(extent, now);
    }
    return done;
  }

  /** When the extent's oldest pending change arrived, or undefined when it is clean. */
  dirtySinceOf(extent: number): number | undefined {
    return this.dirtySince.get(extent);
  }

  /** Dirty extents, the longest-waiting first. */
  dirtyExtents(): IterableIterator<number> {
    return this.byExtent.keys();
  }

  get dirtyExtentCount(): number {
    return this.byExtent.size;
  }

  get count(): number {
    return this.entryCount;
  }
}

const EMPTY: readonly JournalEntry[] = Object.freeze([]);
