/**
 * Pieces of a read that come from data objects, and how they are fetched: whole 4 KiB blocks (so each
 * can be checked), one read per run of adjacent pieces of one object.
 */
import { elementAt } from '../../shared/checked.js';
import { blockSpan, CRC_BLOCK } from './data-object.js';
import type { ObjectReader, ObjectRef } from './object-reader.js';

export interface Piece {
  /** Where in `out` the piece goes. */
  readonly at: number;
  readonly length: number;
  /** The object and the offset in its data region. */
  readonly ref: ObjectRef;
  readonly dataOffset: number;
  readonly crcs: Uint32Array;
  readonly dataLength: number;
  /** The buffer the piece goes into, when not the `out` of the call (pieces of several extents at once). */
  readonly into?: Buffer;
}

/** Range GETs of one read in flight at once, by default: a compaction batch can name a thousand objects. */
export const GROUPS_IN_FLIGHT = 32;

/**
 * A piece of whole blocks this large is read straight into its place with a GET of its own, not
 * with its neighbours into a buffer it is then copied out of: a sequential read of deltas that hold
 * four extents each allocated a 16 MiB buffer per four extents for the collector (5.4 GB in 10 s),
 * and one more request per MiB costs little beside the transfer.
 */
const DIRECT_PIECE_BYTES = 1024 * 1024;

/**
 * Fetches pieces, one range GET per run of adjacent pieces of one object, whole 4 KiB blocks so each
 * can be checked, and copies them into place.
 */
export async function fetchPieces(
  reader: ObjectReader,
  pieces: Piece[],
  out: Buffer,
  signal?: AbortSignal,
  gapBytes = CRC_BLOCK,
  inFlight = GROUPS_IN_FLIGHT,
): Promise<void> {
  if (pieces.length === 0) return;
  if (pieces.length === 1) return fetchGroup(reader, pieces, out, signal);
  pieces.sort((a, b) => (a.ref.key < b.ref.key ? -1 : a.ref.key > b.ref.key ? 1 : a.dataOffset - b.dataOffset));
  const groups: Piece[][] = [];
  let lastAlone = false;
  for (const p of pieces) {
    const g = groups[groups.length - 1];
    const last = g?.[g.length - 1];
    const alone = p.length >= DIRECT_PIECE_BYTES && wholeBlocks(p);
    // Pieces in the same or the next 4 KiB block of one object share a GET (or within `gapBytes`:
    // reading a gap costs less than another request).
    if (
      !alone &&
      !lastAlone &&
      g !== undefined &&
      last !== undefined &&
      last.ref.key === p.ref.key &&
      p.dataOffset <= last.dataOffset + last.length + gapBytes
    )
      g.push(p);
    else groups.push([p]);
    lastAlone = alone;
  }
  // On the first failure the other workers stop, their GETs are aborted, and the call returns only
  // once none of them can still write: its caller gives the targets back to be used again.
  const stop = new AbortController();
  const follow = (): void => {
    stop.abort(signal?.reason);
  };
  signal?.addEventListener('abort', follow, { once: true });
  let next = 0;
  let failed: { readonly err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < groups.length && failed === undefined) {
      try {
        await fetchGroup(reader, elementAt(groups, next++), out, stop.signal);
      } catch (err) {
        failed ??= { err };
        stop.abort(err);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(inFlight, groups.length) }, worker));
  } finally {
    signal?.removeEventListener('abort', follow);
  }
  if (failed !== undefined) throw failed.err;
}

async function fetchGroup(reader: ObjectReader, group: Piece[], out: Buffer, signal?: AbortSignal): Promise<void> {
  const first = group[0];
  const last = group[group.length - 1];
  if (first === undefined || last === undefined) return;
  const { start, end } = blockSpan(first.dataOffset, last.dataOffset + last.length - first.dataOffset, first.dataLength);
  // A lone piece of whole blocks is read straight into its place: a copy's bytes land in the reply.
  if (group.length === 1 && wholeBlocks(first)) {
    await reader.blocks(first.ref, first.crcs, first.dataLength, start, end, signal, first.into ?? out, first.at);
    return;
  }
  const scratch = reader.scratch.take(end - start);
  const bytes = await reader.blocks(first.ref, first.crcs, first.dataLength, start, end, signal, scratch);
  for (const p of group) bytes.copy(p.into ?? out, p.at, p.dataOffset - start, p.dataOffset - start + p.length);
  reader.scratch.give(scratch);
}

/** The piece starts on a block and ends on one or at the data's end: it can be checked where it lands. */
function wholeBlocks(p: Piece): boolean {
  const { start, end } = blockSpan(p.dataOffset, p.length, p.dataLength);
  return p.dataOffset === start && p.length === end - start;
}
