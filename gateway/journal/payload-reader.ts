// Reads many records' payloads at once, as the uploader needs them to build a delta. The records of a
// delta were appended one after another, so their payloads lie close together in a few segments: a
// handful of large reads replaces one read (one trip through the libuv pool) per 4 KiB record.
import { elementAt } from '../../shared/checked.js';
import { JournalCorruptError, JournalIoError } from '../../shared/errors.js';
import { BufferPool } from '../util/buffer-pool.js';
import type { JournalEntry, Segment } from './segment-format.js';

/** One slice of a write record's payload and where it goes in the output buffer. */
export interface PayloadPiece {
  readonly entry: JournalEntry;
  /** Where in the entry's payload the slice starts. */
  readonly from: number;
  readonly length: number;
  /** Where in the output buffer it goes. */
  readonly into: number;
}

/** One read covers at most this much of a segment, so the scratch buffer stays small. */
const SPAN_MAX_BYTES = 1 << 20;
/** Pieces further apart than this in a segment are read separately rather than reading the gap. */
const GAP_MAX_BYTES = 64 << 10;
/** Scratch used again by the deltas being built at once (four by default), of every volume. */
const SCRATCH = new BufferPool(4 * SPAN_MAX_BYTES);

interface Located {
  readonly piece: PayloadPiece;
  readonly segment: Segment;
  /** Position of the piece's first byte in the segment file. */
  readonly position: number;
}

/** Copies every piece into `out`, from memory when the entry still holds its payload, else from its segment. */
export async function readPayloads(pieces: readonly PayloadPiece[], out: Buffer): Promise<void> {
  const onDisk: Located[] = [];
  for (const piece of pieces) {
    const { entry } = piece;
    if (entry.data !== undefined) {
      entry.data.copy(out, piece.into, piece.from, piece.from + piece.length);
      continue;
    }
    const segment = entry.segment;
    if (segment === undefined || segment.retired) throw new JournalIoError(`journal record ${entry.seq} is no longer readable`);
    onDisk.push({ piece, segment, position: entry.payloadPosition + piece.from });
  }
  onDisk.sort((a, b) => a.segment.epoch - b.segment.epoch || a.segment.no - b.segment.no || a.position - b.position);
  let scratch: Buffer | undefined;
  for (let i = 0; i < onDisk.length;) {
    const first = elementAt(onDisk, i);
    let end = first.position + first.piece.length;
    let j = i + 1;
    for (; j < onDisk.length; j++) {
      const next = elementAt(onDisk, j);
      const nextEnd = next.position + next.piece.length;
      if (next.segment !== first.segment || next.position - end > GAP_MAX_BYTES || Math.max(end, nextEnd) - first.position > SPAN_MAX_BYTES)
        break;
      end = Math.max(end, nextEnd);
    }
    if (j === i + 1) {
      await readExact(first.segment, out, first.piece.into, first.piece.length, first.position, first.piece.entry);
    } else {
      scratch ??= SCRATCH.take(SPAN_MAX_BYTES);
      await readExact(first.segment, scratch, 0, end - first.position, first.position, first.piece.entry);
      for (let k = i; k < j; k++) {
        const { piece, position } = elementAt(onDisk, k);
        const at = position - first.position;
        scratch.copy(out, piece.into, at, at + piece.length);
      }
    }
    i = j;
  }
  if (scratch !== undefined) SCRATCH.give(scratch);
}

async function readExact(
  segment: Segment,
  into: Buffer,
  intoOffset: number,
  length: number,
  position: number,
  entry: JournalEntry,
): Promise<void> {
  const n = await segment.file.read(into, intoOffset, length, position);
  if (n !== length) throw new JournalCorruptError(`journal record ${entry.seq} in ${segment.path} is truncated (or a record after it)`);
}
