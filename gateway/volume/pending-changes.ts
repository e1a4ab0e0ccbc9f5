import { elementAt } from '../../shared/checked.js';
import type { JournalEntry } from '../journal/journal.js';
import { RecordKind } from '../journal/record.js';

/**
 * A record touching more extents than this is kept once, in the wide list, instead of once per
 * extent: a maximal TRIM costs one entry, not a thousand.
 */
const WIDE_EXTENTS = 8;

/**
 * The acknowledged changes the object store does not have yet, as reads need them: per extent, the
 * journal entries to lay over what the store holds, in sequence order. The uploader ships them in
 * sequence order from `at()`; `removeThrough(seq)` drops what a committed head now covers.
 */
export class PendingChanges {
  /** Every pending entry, by sequence (a queue: shifted from `first`). */
  private readonly all: JournalEntry[] = [];
  private first = 0;
  private readonly byExtent = new Map<number, JournalEntry[]>();
  /** Entries spanning more than WIDE_EXTENTS extents, by sequence; read by every extent they touch. */
  private wide: JournalEntry[] = [];
  /** Bumped whenever entries leave an extent, so a read that raced an upload starts over. */
  private readonly generations = new Map<number, number>();
  private wideGeneration = 0;

  constructor(private readonly extentSize: number) {}

  add(entry: JournalEntry): void {
    this.all.push(entry);
    const first = Math.floor(entry.offset / this.extentSize);
    const last = Math.floor((entry.offset + entry.length - 1) / this.extentSize);
    if (last - first + 1 > WIDE_EXTENTS) {
      // A wide zero record makes older wide zero records inside its range invisible to every read.
      if (entry.kind === RecordKind.Zero)
        this.wide = this.wide.filter(
          (w) => !(w.kind === RecordKind.Zero && w.offset >= entry.offset && w.offset + w.length <= entry.offset + entry.length),
        );
      this.wide.push(entry);
      return;
    }
    for (let i = first; i <= last; i++) {
      const list = this.byExtent.get(i);
      if (list === undefined) this.byExtent.set(i, [entry]);
      else list.push(entry);
    }
  }

  /**
   * The entries a read of the extent must lay over the stored bytes, oldest first. Entries older than
   * the newest wide zero record covering the whole extent are left out: it hides them all.
   */
  entries(extent: number): readonly JournalEntry[] {
    const narrow = this.byExtent.get(extent) ?? EMPTY;
    if (this.wide.length === 0) return narrow;
    const start = extent * this.extentSize;
    const end = start + this.extentSize;
    const wide: JournalEntry[] = [];
    let floor = 0;
    for (let i = this.wide.length - 1; i >= 0; i--) {
      const w = elementAt(this.wide, i);
      if (w.offset >= end || w.offset + w.length <= start) continue;
      wide.push(w);
      if (w.kind === RecordKind.Zero && w.offset <= start && w.offset + w.length >= end) {
        floor = w.seq;
        break;
      }
    }
    if (wide.length === 0) return narrow;
    wide.reverse();
    const out: JournalEntry[] = [];
    let j = 0;
    for (const e of narrow) {
      if (e.seq < floor) continue;
      while (j < wide.length && elementAt(wide, j).seq < e.seq) out.push(elementAt(wide, j++));
      out.push(e);
    }
    while (j < wide.length) out.push(elementAt(wide, j++));
    return out;
  }

  /** Changes when pending entries of the extent leave (a read compares it before and after). */
  generation(extent: number): number {
    return (this.generations.get(extent) ?? 0) + this.wideGeneration;
  }

  /** The pending entry `index` entries after the oldest, in sequence order. */
  at(index: number): JournalEntry | undefined {
    return this.all[this.first + index];
  }

  /** Removes every entry up to `seq` (a committed head covers them); returns them, oldest first. */
  removeThrough(seq: number): JournalEntry[] {
    const done: JournalEntry[] = [];
    while (this.first < this.all.length && elementAt(this.all, this.first).seq <= seq) done.push(elementAt(this.all, this.first++));
    if (this.first > 1024 && this.first * 2 > this.all.length) {
      this.all.splice(0, this.first);
      this.first = 0;
    }
    if (done.length === 0) return done;
    let wideLeft = false;
    for (const e of done) {
      const first = Math.floor(e.offset / this.extentSize);
      const last = Math.floor((e.offset + e.length - 1) / this.extentSize);
      if (last - first + 1 > WIDE_EXTENTS) {
        wideLeft = true;
        continue;
      }
      for (let i = first; i <= last; i++) {
        const list = this.byExtent.get(i);
        if (list === undefined) continue;
        let n = 0;
        while (n < list.length && elementAt(list, n).seq <= seq) n++;
        if (n === 0) continue;
        if (n === list.length) this.byExtent.delete(i);
        else list.splice(0, n);
        this.generations.set(i, (this.generations.get(i) ?? 0) + 1);
      }
    }
    if (wideLeft || this.wide.some((w) => w.seq <= seq)) {
      this.wide = this.wide.filter((w) => w.seq > seq);
      this.wideGeneration++;
    }
    return done;
  }

  /** Cached extents a new entry must be applied to are found by the caller; this says which extents it touches. */
  extentsOf(entry: JournalEntry): { first: number; last: number } {
    return { first: Math.floor(entry.offset / this.extentSize), last: Math.floor((entry.offset + entry.length - 1) / this.extentSize) };
  }

  get count(): number {
    return this.all.length - this.first;
  }

  get dirtyExtentCount(): number {
    return this.byExtent.size + (this.wide.length > 0 ? 1 : 0);
  }

  /** Sequence of the oldest pending entry, if any. */
  get oldestSeq(): number | undefined {
    return this.all[this.first]?.seq;
  }
}

const EMPTY: readonly JournalEntry[] = Object.freeze([]);
