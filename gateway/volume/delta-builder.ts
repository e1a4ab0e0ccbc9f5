import { elementAt } from '../../shared/checked.js';
import { CRC_BLOCK, DataObjectWriter, type ObjectMeta, ObjectKind, parseMeta } from '../image/data-object.js';
import type { DeltaRef } from '../image/head.js';
import type { JournalEntry } from '../journal/journal.js';
import { type PayloadPiece, readPayloads } from '../journal/payload-reader.js';
import { RecordKind } from '../journal/record.js';

/** A delta built and ready to PUT: its bytes, how the head will name it, and its parsed tables. */
export interface BuiltDelta {
  readonly body: Buffer;
  /** The body's CRC32C, for the PUT. */
  readonly bodyCrc: number;
  readonly ref: DeltaRef;
  readonly meta: ObjectMeta;
}

interface Piece {
  offset: number;
  length: number;
  entry: JournalEntry;
  /** Where in the entry's payload the piece starts. */
  from: number;
}

/**
 * Turns a run of journal entries (consecutive sequence numbers) into one delta object: each byte the
 * newest entry wrote, sorted by volume offset, adjacent pieces merged into one run, zeros as zero runs
 * without data. The payloads are read from the journal in a few large reads (journal/payload-reader.ts).
 * Built in `into` when the object fits in it.
 */
export async function buildDelta(entries: readonly JournalEntry[], key: string, epoch: number, into?: Buffer): Promise<BuiltDelta> {
  const pieces = newestPieces(entries);
  type Run = { offset: number; length: number; zero: boolean; pieces: Piece[] };
  const runs: Run[] = [];
  for (const p of pieces) {
    const zero = p.entry.kind === RecordKind.Zero;
    const last = runs[runs.length - 1];
    if (last !== undefined && last.zero === zero && last.offset + last.length === p.offset) {
      last.length += p.length;
      last.pieces.push(p);
    } else runs.push({ offset: p.offset, length: p.length, zero, pieces: [p] });
  }
  let dataLength = 0;
  for (const r of runs) if (!r.zero) dataLength += r.length;
  const seqFrom = elementAt(entries, 0).seq;
  const seqTo = elementAt(entries, entries.length - 1).seq;
  const writer = new DataObjectWriter(ObjectKind.Delta, dataLength, runs.length, epoch, seqFrom, seqTo, into);
  const reads: PayloadPiece[] = [];
  for (const r of runs) {
    let at = writer.addRun(r.offset, r.length, r.zero);
    if (r.zero) continue;
    for (const p of r.pieces) {
      reads.push({ entry: p.entry, from: p.from, length: p.length, into: at });
      // A 4 KiB write that is one whole block of the delta (the usual random write): its block CRC is
      // the one the journal computed from the guest's bytes, end to end, and the build skips a pass.
      if (p.length === CRC_BLOCK && p.entry.length === CRC_BLOCK && at % CRC_BLOCK === 0 && p.entry.payloadCrc >= 0)
        writer.setBlockCrc(at / CRC_BLOCK, p.entry.payloadCrc);
      at += p.length;
    }
  }
  await readPayloads(reads, writer.body);
  const built = writer.finish();
  const ref: DeltaRef = { key, size: built.body.length, metaOffset: built.metaOffset, metaCrc: built.metaCrc, seqFrom, seqTo };
  return { body: built.body, bodyCrc: built.bodyCrc, ref, meta: parseMeta(built.body.subarray(built.metaOffset), built.metaCrc, key) };
}

/**
 * The pieces of the volume the entries cover, each from the newest entry covering it, in volume
 * order: a sweep over the entries' boundaries with a heap of the entries open at each point.
 */
function newestPieces(entries: readonly JournalEntry[]): Piece[] {
  const byStart = [...entries].sort((a, b) => a.offset - b.offset);
  const points = new Set<number>();
  for (const e of entries) {
    points.add(e.offset);
    points.add(e.offset + e.length);
  }
  const bounds = [...points].sort((a, b) => a - b);
  const open = new MaxHeap();
  const out: Piece[] = [];
  let next = 0;
  for (let b = 0; b + 1 < bounds.length; b++) {
    const s = elementAt(bounds, b);
    const t = elementAt(bounds, b + 1);
    while (next < byStart.length && elementAt(byStart, next).offset <= s) open.push(elementAt(byStart, next++));
    let top = open.peek();
    while (top !== undefined && top.offset + top.length <= s) {
      open.pop();
      top = open.peek();
    }
    if (top === undefined) continue;
    const last = out[out.length - 1];
    if (last !== undefined && last.entry === top && last.offset + last.length === s) last.length += t - s;
    else out.push({ offset: s, length: t - s, entry: top, from: s - top.offset });
  }
  return out;
}

/** Entries by sequence number, newest on top. */
class MaxHeap {
  private readonly items: JournalEntry[] = [];

  push(e: JournalEntry): void {
    const a = this.items;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (elementAt(a, parent).seq >= elementAt(a, i).seq) break;
      [a[parent], a[i]] = [elementAt(a, i), elementAt(a, parent)];
      i = parent;
    }
  }

  peek(): JournalEntry | undefined {
    return this.items[0];
  }

  pop(): void {
    const a = this.items;
    const last = a.pop();
    if (a.length === 0 || last === undefined) return;
    a[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && elementAt(a, l).seq > elementAt(a, m).seq) m = l;
      if (r < a.length && elementAt(a, r).seq > elementAt(a, m).seq) m = r;
      if (m === i) break;
      [a[m], a[i]] = [elementAt(a, i), elementAt(a, m)];
      i = m;
    }
  }
}
