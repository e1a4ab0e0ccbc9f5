import { elementAt } from '../../shared/checked.js';
import type { JournalEntry } from '../journal/journal.js';

/** A part of a read one pending entry supplies: [start, stop) in volume offsets. */
export interface OverlayPiece {
  readonly entry: JournalEntry;
  readonly start: number;
  readonly stop: number;
}

export interface OverlayPlan {
  /** Newest entry first; no two pieces overlap. */
  readonly pieces: OverlayPiece[];
  /** Every byte of the read is in some piece: the store is not needed. */
  readonly covered: boolean;
}

/**
 * Where each byte of a read of [pos, end) comes from among an extent's pending entries (oldest
 * first in `entries`): the newest entry that wrote it. Walked newest first and stopped once nothing
 * is left uncovered, so a block rewritten a hundred times while its writes wait for upload costs one
 * piece, not a hundred (a zipf-skewed workload rewrites its hot blocks that often).
 */
export function planOverlay(entries: readonly JournalEntry[], pos: number, end: number): OverlayPlan {
  const pieces: OverlayPiece[] = [];
  /** The parts no newer entry wrote: [start, end) pairs, in order. */
  let gaps = [pos, end];
  for (let i = entries.length - 1; i >= 0 && gaps.length > 0; i--) {
    const entry = elementAt(entries, i);
    const entryEnd = entry.offset + entry.length;
    if (entryEnd <= pos || entry.offset >= end) continue;
    const left: number[] = [];
    for (let g = 0; g < gaps.length; g += 2) {
      const gapStart = elementAt(gaps, g);
      const gapEnd = elementAt(gaps, g + 1);
      const start = Math.max(entry.offset, gapStart);
      const stop = Math.min(entryEnd, gapEnd);
      if (start >= stop) {
        left.push(gapStart, gapEnd);
        continue;
      }
      if (gapStart < start) left.push(gapStart, start);
      if (stop < gapEnd) left.push(stop, gapEnd);
      pieces.push({ entry, start, stop });
    }
    gaps = left;
  }
  return { pieces, covered: gaps.length === 0 };
}

/** True when the union of the entries' ranges covers [start, end). */
export function covers(entries: readonly JournalEntry[], start: number, end: number): boolean {
  return planOverlay(entries, start, end).covered;
}
