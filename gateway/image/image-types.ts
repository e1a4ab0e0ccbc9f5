import type { DeltaRef } from './head.js';
import type { ObjectCopies } from './object-reader.js';

/** A delta as the image holds it: its reference, its CRC table, and how many of its bytes still show. */
export interface DeltaInfo {
  readonly ref: DeltaRef;
  readonly slot: number;
  readonly dataLength: number;
  readonly crcs: Uint32Array;
  /** Bytes of its runs (zero runs included) no newer delta or base has taken over; at 0 it can leave the head. */
  liveBytes: number;
  /** Extents it has runs in (live or not), for compaction's choice of what to fold. */
  readonly extents: Set<number>;
}

export interface VolumeImageOptions {
  /** Bound on the cached tables of base extents (each about 1/1000 of the extent). */
  readonly baseMetaBytes?: number;
  /** Local copies of object bytes to read before the store (the disk cache). */
  readonly copies?: ObjectCopies | undefined;
}
