// gateway/image owns volume format 2 in the store: heads (written conditionally, with the lease that
// fences other gateways), base extents, index pages and delta objects, the run map that resolves
// reads, taking a volume, snapshots and clones, and garbage collection. Start with this file.
/**
 * A volume as its head describes it: the base extents (from the index pages), the deltas newer than
 * them (their runs in a RunMap, their CRC tables in memory) and the reads that turn those into bytes,
 * every 4 KiB block checked against its CRC32C on the way. It knows nothing of journals or caches:
 * the served Volume layers those on top, and export, clone and GC use it alone.
 */
import { elementAt, mapValue } from '../../shared/checked.js';
import { DataCorruptError } from '../../shared/errors.js';
import type { VolumeShape } from '../../shared/volume-manifest.js';
import type { ObjectStore } from '../store/object-store.js';
import { type AllocationSpan, baseSpans } from './base-extent.js';
import type { ObjectMeta } from './data-object.js';
import { type DeltaRef, type Head, type PageRef, shapeOf } from './head.js';
import { type BaseRef, pageOf, parsePage } from './index-page.js';
import { ObjectReader, type ObjectRef } from './object-reader.js';
import type { DeltaInfo, VolumeImageOptions } from './image-types.js';
import { type ExtentBufferSource, zeroed } from './extent-buffer-source.js';
import { BaseReader } from './base-reader.js';
import { fetchPieces, type Piece } from './pieces.js';
import { NO_SOURCE, RunMap, ZERO_DATA } from './run-map.js';

export type { AllocationSpan, DeltaInfo, VolumeImageOptions };

export class VolumeImage {
  private currentShape: VolumeShape;
  readonly bases = new Map<number, BaseRef>();
  readonly pages = new Map<number, PageRef>();
  /** Pages whose bases changed since the last head was written. */
  readonly dirtyPages = new Set<number>();
  /** Extents compaction is folding now: a delta zeroing one whole is recorded as runs, so the fold sees it. */
  readonly compacting = new Set<number>();
  /** Bases a whole-extent zero run made obsolete, for the next head to release. */
  private obsoleteBases: string[] = [];
  /** Oldest first (Map keeps insertion order, and slots only grow). */
  readonly deltas = new Map<number, DeltaInfo>();
  readonly runs: RunMap;
  private nextSlot = 0;
  private crcBytes = 0;
  private readonly baseReader: BaseReader;
  /** Where object bytes come from: the local copies first, if any, then the store. */
  readonly reader: ObjectReader;

  private constructor(
    readonly store: ObjectStore,
    head: Head,
    opts: VolumeImageOptions,
  ) {
    this.currentShape = shapeOf(head);
    this.reader = new ObjectReader(store, opts.copies, head.name);
    this.runs = new RunMap((slot, bytes) => {
      const d = this.deltas.get(slot);
      if (d !== undefined) d.liveBytes -= bytes;
    });
    this.baseReader = new BaseReader(this.reader, opts.baseMetaBytes);
  }

  /** Loads the image a head names: its index pages and every delta's tables. */
  static async load(store: ObjectStore, head: Head, opts: VolumeImageOptions = {}, signal?: AbortSignal): Promise<VolumeImage> {
    const image = new VolumeImage(store, head, opts);
    for (const ref of head.pages) {
      const body = await store.get(ref.key, { signal });
      if (body === undefined) throw new DataCorruptError(`index page ${ref.key} named by the head of ${head.name} is missing`);
      for (const [extent, base] of parsePage(body, ref.crc, ref.page, ref.key)) image.bases.set(extent, base);
      image.pages.set(ref.page, ref);
    }
    for (const ref of head.deltas) image.addDelta(ref, await image.fetchMeta(ref, signal));
    return image;
  }

  get shape(): VolumeShape {
    return this.currentShape;
  }

  /**
   * The volume's new size (a resize the head already records, or is about to). Extents wholly past a
   * smaller size are forgotten — their bases returned, to be released, and their delta runs dropped —
   * so a later grow finds zeros there; the caller zeroed the cut part of the last extent first.
   */
  resize(size: number): string[] {
    this.currentShape = { ...this.currentShape, size };
    const count = this.extentCount;
    const released: string[] = [];
    for (const [extent, base] of [...this.bases]) {
      if (extent < count) continue;
      released.push(base.key);
      this.bases.delete(extent);
      this.baseReader.forget(base.key);
      this.dirtyPages.add(pageOf(extent));
    }
    for (const extent of [...this.runs.extentIndexes()]) if (extent >= count) this.runs.removeWhere(extent, () => true);
    return released;
  }

  get extentCount(): number {
    return Math.ceil(this.shape.size / this.shape.extentSize);
  }

  extentLength(index: number): number {
    return Math.min(this.shape.extentSize, this.shape.size - index * this.shape.extentSize);
  }

  /** Memory the index holds: the run map and the deltas' CRC tables. */
  get indexBytes(): number {
    return this.runs.bytes + this.crcBytes;
  }

  /** Memory the deltas' CRC tables hold (a part of indexBytes). */
  get deltaTableBytes(): number {
    return this.crcBytes;
  }

  get deltaBytes(): number {
    let n = 0;
    for (const d of this.deltas.values()) n += d.ref.size;
    return n;
  }

  /** Fetches and checks an object's tables. */
  fetchMeta(ref: ObjectRef, signal?: AbortSignal): Promise<ObjectMeta> {
    return this.reader.meta(ref, signal);
  }

  /**
   * Adds a committed delta, newer than every delta already here: its runs take over the bytes they
   * cover, except in extents whose base already includes it.
   */
  addDelta(ref: DeltaRef, meta: ObjectMeta): DeltaInfo {
    const info: DeltaInfo = { ref, slot: this.nextSlot++, dataLength: meta.dataLength, crcs: meta.crcs, liveBytes: 0, extents: new Set() };
    this.deltas.set(info.slot, info);
    this.crcBytes += meta.crcs.byteLength;
    const es = this.shape.extentSize;
    const { count, offset, length, dataOffset } = meta.runs;
    for (let i = 0; i < count; i++) {
      let pos = elementAt(offset, i);
      const end = pos + elementAt(length, i);
      const zero = elementAt(dataOffset, i) < 0;
      while (pos < end) {
        const extent = Math.floor(pos / es);
        const extentStart = extent * es;
        const stop = Math.min(end, extentStart + es);
        const base = this.bases.get(extent);
        if (zero && pos === extentStart && stop === extentStart + this.extentLength(extent) && !this.compacting.has(extent)) {
          // A whole extent zeroed by a delta newer than every other (a TRIM): it reads as zeros
          // with no base and no runs, so a maximal TRIM costs no index memory for the extents it
          // empties. The head naming this delta describes the same disk with the old base, so the
          // base is dropped in the next head's index page, not before.
          if (base === undefined || base.seq < ref.seqTo) {
            const old = this.clearExtent(extent, ref.seqTo);
            if (old !== undefined) this.obsoleteBases.push(old.key);
          }
          pos = stop;
          continue;
        }
        if (base === undefined || base.seq < ref.seqTo) {
          info.liveBytes += stop - pos;
          this.runs.apply(
            extent,
            pos - extentStart,
            stop - extentStart,
            info.slot,
            zero ? ZERO_DATA : elementAt(dataOffset, i) + (pos - elementAt(offset, i)),
          );
          info.extents.add(extent);
        }
        pos = stop;
      }
    }
    return info;
  }

  /**
   * Points an extent at a new base that includes every delta up to `base.seq`: their runs in the
   * extent are dropped. Returns the base it replaces, if any.
   */
  setBase(extent: number, base: BaseRef): BaseRef | undefined {
    const old = this.bases.get(extent);
    this.bases.set(extent, base);
    this.baseReader.forget(old?.key ?? '');
    this.dirtyPages.add(pageOf(extent));
    this.runs.removeWhere(extent, (slot) => {
      const d = this.deltas.get(slot);
      return d === undefined || d.ref.seqTo <= base.seq;
    });
    return old;
  }

  /**
   * The extent reads as zeros as of `seq`: no base, and the runs of every delta up to `seq` dropped
   * (what compaction does instead of writing a base of zeros). Returns the base it had, if any.
   */
  clearExtent(extent: number, seq: number): BaseRef | undefined {
    const old = this.bases.get(extent);
    if (old !== undefined) {
      this.bases.delete(extent);
      this.baseReader.forget(old.key);
      this.dirtyPages.add(pageOf(extent));
    }
    this.runs.removeWhere(extent, (slot) => {
      const d = this.deltas.get(slot);
      return d === undefined || d.ref.seqTo <= seq;
    });
    return old;
  }

  /** Bases dropped by whole-extent zero runs since the last call: the head about to be written releases them. */
  takeObsoleteBases(): string[] {
    const keys = this.obsoleteBases;
    this.obsoleteBases = [];
    return keys;
  }

  /** Removes deltas none of whose bytes show any more; returns them (their objects are released). */
  takeDeadDeltas(): DeltaInfo[] {
    const dead = [...this.deltas.values()].filter((d) => d.liveBytes <= 0);
    for (const d of dead) {
      this.deltas.delete(d.slot);
      this.crcBytes -= d.crcs.byteLength;
    }
    return dead;
  }

  /**
   * Replaces the whole image with these base extents and no deltas (an import): every extent without
   * a base reads as zeros. Returns the keys of every object the image named before.
   */
  replaceAll(bases: ReadonlyMap<number, BaseRef>): string[] {
    const released = [...[...this.bases.values()].map((b) => b.key), ...[...this.deltas.values()].map((d) => d.ref.key)];
    for (const extent of [...this.bases.keys(), ...bases.keys()]) this.dirtyPages.add(pageOf(extent));
    this.bases.clear();
    for (const [extent, base] of bases) this.bases.set(extent, base);
    this.deltas.clear();
    this.crcBytes = 0;
    this.runs.clear();
    this.baseReader.clear();
    return released;
  }

  deltaRefs(): DeltaRef[] {
    return [...this.deltas.values()].map((d) => d.ref);
  }

  /**
   * Reads [offset, offset + length) of the volume as the store holds it into `out` at `outOffset`.
   * Pieces from the same object are fetched with one range GET where they are adjacent.
   */
  async read(offset: number, length: number, out: Buffer, outOffset: number, signal?: AbortSignal): Promise<void> {
    const pieces: Piece[] = [];
    const bases: Array<Promise<void>> = [];
    const es = this.shape.extentSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const extent = Math.floor(pos / es);
      const extentStart = extent * es;
      const stop = Math.min(end, extentStart + this.extentLength(extent));
      this.runs.resolve(extent, pos - extentStart, stop - extentStart, (s, t, src, dataOffset) => {
        const at = outOffset + extentStart + s - offset;
        if (src === NO_SOURCE) bases.push(this.baseReader.range(this.bases.get(extent), extentStart, s, t - s, out, at, signal));
        else if (dataOffset === ZERO_DATA) out.fill(0, at, at + t - s);
        else {
          const d = mapValue(this.deltas, src);
          pieces.push({ at, length: t - s, ref: d.ref, dataOffset, crcs: d.crcs, dataLength: d.dataLength });
        }
      });
      pos = stop;
    }
    await Promise.all([...bases, fetchPieces(this.reader, pieces, out, signal)]);
  }

  /**
   * The extent's contents as the store holds them; null when it is all zeros (holes). What it reads
   * is decided synchronously, at the call: a caller may pair the result with the state it saw then.
   */
  async materialize(extent: number, signal?: AbortSignal, buffers?: ExtentBufferSource): Promise<Buffer | null> {
    return elementAt(await this.materializeMany([extent], signal, buffers), 0);
  }

  /** How many objects hold the extent's bytes (its base and the deltas with data runs in it): the GETs of a `materialize`. */
  objectsHolding(extent: number): number {
    const slots = new Set<number>();
    this.runs.resolve(extent, 0, this.extentLength(extent), (_s, _t, src, dataOffset) => {
      if (src !== NO_SOURCE && dataOffset !== ZERO_DATA) slots.add(src);
    });
    return slots.size + (this.bases.has(extent) ? 1 : 0);
  }

  /**
   * Several extents' contents at once, as `materialize` gives each. Their pieces are fetched together:
   * a delta holding runs of several of them is read with one range GET, reading through gaps of up to
   * `gapBytes` — compaction folds extents whose runs lie in hundreds of deltas, and one request per
   * extent and delta would cost more than the bytes — with at most `inFlight` range GETs at once.
   */
  async materializeMany(
    extents: readonly number[],
    signal?: AbortSignal,
    buffers?: ExtentBufferSource,
    gapBytes?: number,
    inFlight?: number,
  ): Promise<Array<Buffer | null>> {
    const plans = extents.map((extent) => {
      const len = this.extentLength(extent);
      const pieces: Piece[] = [];
      const zeros: Array<[number, number]> = [];
      this.runs.resolve(extent, 0, len, (s, t, src, dataOffset) => {
        if (src === NO_SOURCE) return;
        if (dataOffset === ZERO_DATA) {
          zeros.push([s, t]);
          return;
        }
        const d = mapValue(this.deltas, src);
        pieces.push({ at: s, length: t - s, ref: d.ref, dataOffset, crcs: d.crcs, dataLength: d.dataLength });
      });
      return { extent, len, pieces, zeros, base: this.bases.get(extent) };
    });
    const es = this.shape.extentSize;
    const bases = await Promise.all(
      plans.map((p) =>
        p.base === undefined ? Promise.resolve(null) : this.baseReader.whole(p.base, p.extent * es, p.len, signal, buffers),
      ),
    );
    const fetches: Piece[] = [];
    const out = plans.map((p, i) => {
      let data = elementAt(bases, i);
      if (p.pieces.length === 0 && p.zeros.length === 0) return data;
      if (data === null) {
        if (p.pieces.length === 0) return null;
        data = zeroed(p.len, buffers);
      }
      for (const [s, t] of p.zeros) data.fill(0, s, t);
      for (const piece of p.pieces) fetches.push({ ...piece, into: data });
      return data;
    });
    await fetchPieces(this.reader, fetches, NO_OUT, signal, gapBytes, inFlight);
    return out;
  }

  /** Data and holes of [offset, offset + length), adjacent spans of one kind merged. */
  async allocation(offset: number, length: number, signal?: AbortSignal): Promise<AllocationSpan[]> {
    const spans: AllocationSpan[] = [];
    const push = (n: number, hole: boolean): void => {
      const last = spans[spans.length - 1];
      if (last !== undefined && last.hole === hole) spans[spans.length - 1] = { length: last.length + n, hole };
      else if (n > 0) spans.push({ length: n, hole });
    };
    const es = this.shape.extentSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const extent = Math.floor(pos / es);
      const extentStart = extent * es;
      const stop = Math.min(end, extentStart + this.extentLength(extent));
      const gaps: Array<[number, number]> = [];
      const order: Array<[number, number, boolean | undefined]> = [];
      this.runs.resolve(extent, pos - extentStart, stop - extentStart, (s, t, src, dataOffset) => {
        if (src === NO_SOURCE) {
          gaps.push([s, t]);
          order.push([s, t, undefined]);
        } else order.push([s, t, dataOffset === ZERO_DATA]);
      });
      const base = this.bases.get(extent);
      const meta = base !== undefined && gaps.length > 0 ? await this.baseReader.metaOf(base, signal) : undefined;
      for (const [s, t, hole] of order) {
        if (hole !== undefined) push(t - s, hole);
        else if (meta === undefined) push(t - s, true);
        else for (const span of baseSpans(meta, extentStart, s, t)) push(span.length, span.hole);
      }
      pos = stop;
    }
    return spans;
  }
}

/** Every piece of a materialization names its own target buffer. */
const NO_OUT = Buffer.alloc(0);
