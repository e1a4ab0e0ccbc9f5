import type { AllocationSpan } from '../image/volume-image.js';
import type { JournalEntry } from '../journal/journal.js';
import { RecordKind } from '../journal/record.js';
import type { PendingChanges } from './pending-changes.js';

/** Lays pending changes over the store's allocation: a pending write is data, a pending zero a hole. */
export function overlayAllocation(stored: AllocationSpan[], offset: number, pending: PendingChanges, extentSize: number): AllocationSpan[] {
  const length = stored.reduce((n, s) => n + s.length, 0);
  const marks: Array<[number, number, boolean]> = [];
  let pos = offset;
  for (const s of stored) {
    marks.push([pos, pos + s.length, s.hole]);
    pos += s.length;
  }
  const end = offset + length;
  const first = Math.floor(offset / extentSize);
  const last = Math.floor((end - 1) / extentSize);
  const seen = new Set<JournalEntry>();
  const changes: JournalEntry[] = [];
  for (let i = first; i <= last; i++) {
    for (const e of pending.entries(i)) {
      if (seen.has(e)) continue;
      seen.add(e);
      changes.push(e);
    }
  }
  changes.sort((a, b) => a.seq - b.seq);
  let spans = marks;
  for (const e of changes) {
    const s = Math.max(e.offset, offset);
    const t = Math.min(e.offset + e.length, end);
    if (s >= t) continue;
    const next: Array<[number, number, boolean]> = [];
    for (const [a, b, hole] of spans) {
      if (b <= s || a >= t) next.push([a, b, hole]);
      else {
        if (a < s) next.push([a, s, hole]);
        next.push([Math.max(a, s), Math.min(b, t), e.kind === RecordKind.Zero]);
        if (b > t) next.push([t, b, hole]);
      }
    }
    spans = next;
  }
  const out: AllocationSpan[] = [];
  for (const [a, b, hole] of spans) {
    const lastOut = out[out.length - 1];
    if (lastOut !== undefined && lastOut.hole === hole) out[out.length - 1] = { length: lastOut.length + b - a, hole };
    else out.push({ length: b - a, hole });
  }
  return out;
}
