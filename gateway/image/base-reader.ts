import { LRUCache } from 'lru-cache';
import { elementAt } from '../../shared/checked.js';
import type { ObjectMeta } from './data-object.js';
import { type ExtentBufferSource, zeroed } from './extent-buffer-source.js';
import type { BaseRef } from './index-page.js';
import type { ObjectReader } from './object-reader.js';
import { fetchPieces, type Piece } from './pieces.js';

const DEFAULT_BASE_META_BYTES = 16 * 2 ** 20;

/**
 * Reads base extents, whole or in part, and keeps their tables (runs and CRCs) in a bounded cache:
 * a base is read far more often than it changes, and its tables say where its data and holes are
 * without fetching them again.
 */
export class BaseReader {
  private readonly metas: LRUCache<string, ObjectMeta>;

  constructor(
    private readonly reader: ObjectReader,
    maxMetaBytes = DEFAULT_BASE_META_BYTES,
  ) {
    this.metas = new LRUCache({ maxSize: maxMetaBytes, sizeCalculation: (m) => m.crcs.byteLength + m.runs.count * 24 + 64 });
  }

  /** The base is no longer named by the image: its tables need not be kept. */
  forget(key: string): void {
    this.metas.delete(key);
  }

  clear(): void {
    this.metas.clear();
  }

  async metaOf(base: BaseRef, signal?: AbortSignal): Promise<ObjectMeta> {
    const cached = this.metas.get(base.key);
    if (cached !== undefined) return cached;
    const meta = await this.reader.meta(base, signal);
    this.metas.set(base.key, meta);
    return meta;
  }

  /** The extent's contents from its base alone; null when the base holds no data. */
  async whole(base: BaseRef, extentStart: number, len: number, signal?: AbortSignal, buffers?: ExtentBufferSource): Promise<Buffer | null> {
    const into = buffers?.take();
    let body: Buffer;
    let meta: ObjectMeta;
    try {
      ({ body, meta } = await this.reader.whole(base, signal, into));
    } catch (err) {
      if (into !== undefined) buffers?.release(into);
      throw err;
    }
    // Read into the buffer taken for it, or not (it did not fit): the result holds on to one of them.
    const unused = into !== undefined && body.buffer !== into.buffer ? into : undefined;
    if (unused !== undefined) buffers?.release(unused);
    this.metas.set(base.key, meta);
    const { count, offset, length, dataOffset } = meta.runs;
    // A dense base (one run over the whole extent) is its own data region: no copy.
    if (count === 1 && offset[0] === extentStart && length[0] === len && dataOffset[0] === 0) return body.subarray(0, len);
    const out = count === 0 ? null : zeroed(len, buffers);
    for (let i = 0; i < count && out !== null; i++) {
      const data = dataOffset[i] ?? -1;
      if (data >= 0) body.copy(out, (offset[i] ?? 0) - extentStart, data, data + (length[i] ?? 0));
    }
    if (into !== undefined && unused === undefined) buffers?.release(into);
    return out;
  }

  /** [start, start + n) of the extent (offsets within it) into `out` at `at`, zeros where the base has none. */
  async range(
    base: BaseRef | undefined,
    extentStart: number,
    start: number,
    n: number,
    out: Buffer,
    at: number,
    signal?: AbortSignal,
  ): Promise<void> {
    if (base === undefined) {
      out.fill(0, at, at + n);
      return;
    }
    const meta = await this.metaOf(base, signal);
    const pieces: Piece[] = [];
    let pos = start;
    const { count, offset, length, dataOffset } = meta.runs;
    for (let i = 0; i < count && pos < start + n; i++) {
      const s = elementAt(offset, i) - extentStart;
      const t = s + elementAt(length, i);
      if (t <= pos) continue;
      if (s >= start + n) break;
      if (s > pos) out.fill(0, at + pos - start, at + s - start);
      const from = Math.max(s, pos);
      const to = Math.min(t, start + n);
      const data = dataOffset[i] ?? -1;
      if (data < 0) out.fill(0, at + from - start, at + to - start);
      else
        pieces.push({
          at: at + from - start,
          length: to - from,
          ref: base,
          dataOffset: data + (from - s),
          crcs: meta.crcs,
          dataLength: meta.dataLength,
        });
      pos = to;
    }
    if (pos < start + n) out.fill(0, at + pos - start, at + n);
    await fetchPieces(this.reader, pieces, out, signal);
  }
}
