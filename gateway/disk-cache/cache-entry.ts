import type { FileHandle } from 'node:fs/promises';
import type { ObjectRef } from '../image/object-reader.js';

/** The unit the cache holds and counts: one 4 KiB block of an object's data region (the CRC block). */
export const BLOCK = 4096;

/**
 * One object's cached bytes: a sparse file holding them at their own offsets in the object, and which
 * of them it holds — one bit per 4 KiB block of the data region, one flag for the tables. Whole blocks
 * only: what the store returns is checked block by block, so a block is what can be trusted whole.
 */
export class CacheEntry {
  /** One bit per block of the data region. */
  readonly present: Uint8Array;
  /** The tables (metaOffset to the end) are held. */
  tables = false;
  /** Disk the held blocks and tables take, in whole blocks. */
  bytes = 0;
  /** Store requests that brought its bytes: what fetching them again would cost. */
  fetches = 0;
  /** Eviction priority (GreedyDual-Size, see DiskCache): raised on every use. */
  priority = 0;
  /** When it was last used, in the cache's count of uses. */
  used = 0;
  /** Reads and writes using its file now; a dropped entry's file is closed once none is. */
  users = 0;
  dropped = false;
  handle: FileHandle | undefined;
  opening: Promise<FileHandle> | undefined;

  constructor(
    readonly ref: ObjectRef,
    /** The file's name: a hash of the key and what makes its bytes valid. */
    readonly name: string,
  ) {
    this.present = new Uint8Array(Math.ceil(Math.ceil(ref.metaOffset / BLOCK) / 8));
  }

  matches(ref: ObjectRef): boolean {
    return ref.metaCrc === this.ref.metaCrc && ref.size === this.ref.size && ref.metaOffset === this.ref.metaOffset;
  }

  /** Whether every byte of [offset, offset + length) is held. */
  holds(offset: number, length: number): boolean {
    const end = offset + length;
    const metaOffset = this.ref.metaOffset;
    if (end > metaOffset && !this.tables) return false;
    const dataEnd = Math.min(end, metaOffset);
    for (let b = Math.floor(offset / BLOCK); b * BLOCK < dataEnd; b++) if (!this.has(b)) return false;
    return true;
  }

  /** Disk bytes that marking [offset, offset + length) held would add. */
  growth(offset: number, length: number): number {
    return this.walk(offset, length, false);
  }

  /** Marks the whole blocks (and whole tables) [offset, offset + length) covers as held; returns the bytes added. */
  mark(offset: number, length: number): number {
    const added = this.walk(offset, length, true);
    this.bytes += added;
    return added;
  }

  private walk(offset: number, length: number, set: boolean): number {
    const end = offset + length;
    const { metaOffset, size } = this.ref;
    let added = 0;
    const dataEnd = Math.min(end, metaOffset);
    for (let b = Math.ceil(offset / BLOCK); b * BLOCK < dataEnd; b++) {
      // A block counts once it is whole: its end is inside the range (the last block may be short).
      if (Math.min((b + 1) * BLOCK, metaOffset) > end || this.has(b)) continue;
      added += BLOCK;
      if (set) this.present[b >> 3] = (this.present[b >> 3] ?? 0) | (1 << (b & 7));
    }
    if (offset <= metaOffset && end >= size && !this.tables) {
      added += Math.ceil((size - metaOffset) / BLOCK) * BLOCK;
      if (set) this.tables = true;
    }
    return added;
  }

  private has(block: number): boolean {
    return ((this.present[block >> 3] ?? 0) & (1 << (block & 7))) !== 0;
  }

  /** Restores what an index file recorded. */
  restore(present: Uint8Array, tables: boolean, fetches: number): void {
    this.present.set(present.subarray(0, this.present.length));
    this.tables = tables;
    this.fetches = fetches;
    let blocks = 0;
    for (const byte of this.present) for (let v = byte; v !== 0; v &= v - 1) blocks++;
    this.bytes = blocks * BLOCK + (tables ? Math.ceil((this.ref.size - this.ref.metaOffset) / BLOCK) * BLOCK : 0);
  }
}
