// Reads many records' payloads at once, as the uploader needs them to build a delta. The records of a
// delta were appended one after another, so their payloads lie close together in a few segments: a
// handful of large reads replaces one read (one trip through the libuv pool) per 4 KiB record. Each
// is a scatter read (preadv): the kernel puts every payload straight where it goes in the delta and
// the bytes between them (record headers, payloads not wanted) into a sink, so nothing is copied again.
import { elementAt } from '../../shared/checked.js';
import { JournalCorruptError, JournalIoError } from '../../shared/errors.js';
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

/** One read covers at most this much of a segment: of 4 KiB records, a few hundred buffers. */
const SPAN_MAX_BYTES = 1 << 20;
/** Pieces further apart than this in a segment are read separately rather than reading the gap. */
const GAP_MAX_BYTES = 64 << 10;
/**
 * Where the bytes between wanted pieces are read to, by every read at once: they are never looked at,
 * so reads racing to fill it do no harm.
 */
const GAP_SINK = Buffer.allocUnsafeSlow(GAP_MAX_BYTES);
/** Reads in flight per call: libuv's pool has four threads. */
const READS_AT_ONCE = 4;

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
  const spans: Span[] = [];
  for (let i = 0; i < onDisk.length;) {
    const first = elementAt(onDisk, i);
    const buffers: Buffer[] = [];
    let end = first.position;
    let j = i;
    for (; j < onDisk.length; j++) {
      const { piece, segment, position } = elementAt(onDisk, j);
      const pieceEnd = position + piece.length;
      // A piece that overlaps the one before (a delta's never do) starts a read of its own: one read fills each byte once.
      const apart = segment !== first.segment || position < end || position - end > GAP_MAX_BYTES;
      if (j > i && (apart || pieceEnd - first.position > SPAN_MAX_BYTES)) break;
      if (position > end) buffers.push(GAP_SINK.subarray(0, position - end));
      buffers.push(out.subarray(piece.into, piece.into + piece.length));
      end = pieceEnd;
    }
    spans.push({ first, buffers, bytes: end - first.position });
    i = j;
  }
  await readSpans(spans);
}

interface Span {
  readonly first: Located;
  readonly buffers: Buffer[];
  readonly bytes: number;
}

/**
 * Spans go READS_AT_ONCE at a time: one after another, a 16 MiB delta of 4 KiB writes was ~17 trips
 * through the libuv pool in a row, each waiting its turn for a core beside a busy S3 server (a build
 * took 100-400 ms of which ~20 were work). Every read has ended before this returns, even after one
 * failed: `out` may be a pooled buffer built in again once the caller has given up on it.
 */
async function readSpans(spans: readonly Span[]): Promise<void> {
  let next = 0;
  let failure: { readonly err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < spans.length) {
      const { first, buffers, bytes } = elementAt(spans, next++);
      try {
        const n = await first.segment.file.readv(buffers, first.position);
        if (n !== bytes)
          throw new JournalCorruptError(
            `journal record ${first.piece.entry.seq} in ${first.segment.path} is truncated (or a record after it)`,
          );
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(READS_AT_ONCE, spans.length) }, worker));
  if (failure !== undefined) throw failure.err;
}
