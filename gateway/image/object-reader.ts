/**
 * How a volume image reads its data objects (deltas and base extents): their tables, whole objects,
 * and ranges of checked 4 KiB blocks — from a local copy when there is one (the disk cache), else
 * from the store, keeping what the store returned for next time. Data objects are immutable, so a
 * key with its meta CRC names one content forever; even so nothing a copy returns is trusted: it is
 * checked against the same CRCs as the store's bytes, and a copy that fails is discarded and the
 * bytes fetched again, never served.
 */
import { DataCorruptError } from '../../shared/errors.js';
import type { ObjectStore } from '../store/object-store.js';
import { BufferPool, viewOrNew } from '../util/buffer-pool.js';
import { firstBadBlock, type ObjectMeta, parseMeta, verifyBlocks } from './data-object.js';

/** A data object as a head or an index page names it: enough to read it and check its tables. */
export interface ObjectRef {
  readonly key: string;
  readonly size: number;
  /** Where the tables start: the data region is [0, metaOffset). */
  readonly metaOffset: number;
  readonly metaCrc: number;
}

/**
 * Local copies of object bytes (gateway/disk-cache). Ranges are [offset, offset + length) of the
 * object; a data range starts on a 4 KiB block and ends on one or at the end of the data region,
 * a table range is the whole of [metaOffset, size).
 */
export interface ObjectCopies {
  /** Reads the range into `out` at `at`; false when no complete copy of it is held (nothing was read then). */
  read(ref: ObjectRef, offset: number, length: number, out: Buffer, at: number): Promise<boolean>;
  /**
   * Keeps bytes the store returned (checked), if there is room; never waits and never fails. What it
   * keeps it copies before it returns: the caller's buffer is the caller's again at once. With
   * `release`, the bytes are handed over instead, not copied: the caller must not change them until
   * `release` is called, once they are no longer needed (at once when nothing is kept).
   */
  keep(ref: ObjectRef, offset: number, bytes: Buffer, release?: () => void): void;
  /** A copy failed its check: it is dropped, not read again. */
  discard(ref: ObjectRef, why: string): void;
  /** The volume no longer names the object: its copy need not be kept for it. */
  forget(key: string): void;
}

/** What the copies did for one volume's reads. */
export interface CopyCounters {
  /** Reads answered by a copy. */
  hits: number;
  /** Reads a copy did not hold (or held damaged), fetched from the store. */
  misses: number;
}

/**
 * Free scratch for range GETs of several pieces (pieces.ts), per volume; a group larger than this
 * (one GET across a whole delta's scattered pieces) gets a buffer of its own. Capping the groups
 * instead, at 1 MiB, multiplied the GETs of a load on a fragmented volume past what the S3 client's
 * sockets serve within its request timeout: sequential reads on RGW stalled for a minute.
 */
const SCRATCH_FREE_BYTES = 4 * 2 ** 20;

export class ObjectReader {
  readonly counters: CopyCounters = { hits: 0, misses: 0 };
  /** Where a range GET of several pieces lands before they are copied out. */
  readonly scratch = new BufferPool(SCRATCH_FREE_BYTES);

  constructor(
    readonly store: ObjectStore,
    readonly copies: ObjectCopies | undefined,
    /** Names the volume in errors. */
    private readonly volume: string,
  ) {}

  /** The object's tables, checked against the meta CRC the head or index page holds. */
  async meta(ref: ObjectRef, signal?: AbortSignal): Promise<ObjectMeta> {
    const length = ref.size - ref.metaOffset;
    const copy = await this.fromCopy(ref, ref.metaOffset, length);
    if (copy !== undefined) {
      try {
        const meta = parseMeta(copy, ref.metaCrc, ref.key);
        this.counters.hits++;
        return meta;
      } catch {
        this.discard(ref, 'its tables fail their CRC32C');
      }
    }
    const bytes = await this.store.getRange(ref.key, ref.metaOffset, length, { signal });
    if (bytes === undefined) throw this.missing(ref);
    const meta = parseMeta(bytes, ref.metaCrc, ref.key);
    this.copies?.keep(ref, ref.metaOffset, bytes);
    return meta;
  }

  /**
   * The whole object with its tables parsed and every data block checked; read into `into` when it
   * fits (the body is then a view of it) — except from the store when there are copies, which keep
   * the store's bytes after this returns and must not see them overwritten.
   */
  async whole(ref: ObjectRef, signal?: AbortSignal, into?: Buffer): Promise<{ body: Buffer; meta: ObjectMeta }> {
    const copy = await this.fromCopy(ref, 0, ref.size, into);
    if (copy !== undefined) {
      const checked = this.checkWhole(ref, copy);
      if (checked !== undefined) {
        this.counters.hits++;
        return { body: copy, meta: checked };
      }
      this.discard(ref, 'it fails its CRC32C');
    }
    const body = await this.store.get(ref.key, { signal, into });
    if (body === undefined) throw this.missing(ref);
    if (body.length !== ref.size)
      throw new DataCorruptError(`object ${ref.key} has ${body.length} bytes, the volume ${this.volume} names ${ref.size}`);
    const meta = parseMeta(body.subarray(ref.metaOffset), ref.metaCrc, ref.key);
    verifyBlocks(meta.crcs, meta.dataLength, 0, body.subarray(0, meta.dataLength), ref.key);
    this.copies?.keep(ref, 0, body);
    return { body, meta };
  }

  /**
   * Data blocks [start, end) of the object (start on a block, end on one or at the data's end),
   * checked. With `into`, they are read straight into it at `at` (a reply buffer: no copy on a hit)
   * and the view of them is returned.
   */
  async blocks(
    ref: ObjectRef,
    crcs: Uint32Array,
    dataLength: number,
    start: number,
    end: number,
    signal?: AbortSignal,
    into?: Buffer,
    at = 0,
  ): Promise<Buffer> {
    const length = end - start;
    if (this.copies !== undefined) {
      const target = into === undefined ? Buffer.allocUnsafe(length) : into.subarray(at, at + length);
      if (await this.copies.read(ref, start, length, target, 0)) {
        if (firstBadBlock(crcs, dataLength, start, target) < 0) {
          this.counters.hits++;
          return target;
        }
        this.discard(ref, `data blocks ${start}..${end} fail their CRC32C`);
      } else this.counters.misses++;
    }
    const target = into?.subarray(at, at + length);
    // Straight into the target, so that no store-sized buffer is left for the collector.
    const bytes = await this.store.getRange(ref.key, start, length, { signal, into: target });
    if (bytes === undefined) throw this.missing(ref);
    if (bytes.length !== length)
      throw new DataCorruptError(`object ${ref.key}: read ${bytes.length} bytes at ${start}, expected ${length}`);
    verifyBlocks(crcs, dataLength, start, bytes, ref.key);
    this.copies?.keep(ref, start, bytes);
    if (target === undefined || (bytes.buffer === target.buffer && bytes.byteOffset === target.byteOffset)) return bytes;
    bytes.copy(target);
    return target;
  }

  private async fromCopy(ref: ObjectRef, offset: number, length: number, into?: Buffer): Promise<Buffer | undefined> {
    if (this.copies === undefined) return undefined;
    const buf = viewOrNew(into, length);
    if (await this.copies.read(ref, offset, length, buf, 0)) return buf;
    this.counters.misses++;
    return undefined;
  }

  private checkWhole(ref: ObjectRef, body: Buffer): ObjectMeta | undefined {
    try {
      const meta = parseMeta(body.subarray(ref.metaOffset), ref.metaCrc, ref.key);
      return firstBadBlock(meta.crcs, meta.dataLength, 0, body.subarray(0, meta.dataLength)) < 0 ? meta : undefined;
    } catch {
      return undefined;
    }
  }

  private discard(ref: ObjectRef, why: string): void {
    this.counters.misses++;
    this.copies?.discard(ref, why);
  }

  private missing(ref: ObjectRef): DataCorruptError {
    return new DataCorruptError(`object ${ref.key} named by the head of ${this.volume} is missing`);
  }
}
