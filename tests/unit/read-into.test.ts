/**
 * Where the bytes of store reads and built objects land: in the buffer that needs them (an extent,
 * a reply) or one used again, not in a new buffer per read left to the garbage collector, which kept
 * the gateway's RSS tens of MiB above its cache bound (issue 15).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DataObjectWriter, type ObjectMeta, ObjectKind, parseMeta } from '../../gateway/image/data-object.js';
import { ObjectReader, type ObjectRef } from '../../gateway/image/object-reader.js';
import { fetchPieces, type Piece } from '../../gateway/image/pieces.js';
import { LocalDirectoryStore } from '../../gateway/store/local-store.js';
import type { StoreReadOptions } from '../../gateway/store/object-store.js';
import { DeltaBodies } from '../../gateway/volume/delta-bodies.js';
import { MemoryStore } from '../helpers/memory-store.js';
import { detached } from '../helpers/detached.js';

const MiB = 2 ** 20;

/** Records each range read: where, how long, and whether it was offered a buffer to land in. */
class RangeRecordingStore extends MemoryStore {
  readonly ranges: Array<{ offset: number; length: number; into: number | undefined }> = [];

  override async getRange(key: string, offset: number, length: number, opts?: StoreReadOptions): Promise<Buffer | undefined> {
    this.ranges.push({ offset, length, into: opts?.into?.length });
    return super.getRange(key, offset, length);
  }
}

/** One delta object holding `data` as a single run, put in the store as `d`: its tables and how a reader names it. */
async function putDelta(store: MemoryStore, data: Buffer): Promise<{ meta: ObjectMeta; ref: ObjectRef }> {
  const writer = new DataObjectWriter(ObjectKind.Delta, data.length, 1, 1, 1, 1);
  data.copy(writer.body, writer.addRun(0, data.length, false));
  const built = writer.finish();
  await store.put('d', built.body);
  const meta = parseMeta(built.body.subarray(built.metaOffset), built.metaCrc, 'd');
  return { meta, ref: { key: 'd', size: built.body.length, metaOffset: built.metaOffset, metaCrc: built.metaCrc } };
}

describe('reads land where they are needed', () => {
  it('a local store reads a range into the buffer it is given', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'holdfast-read-into-'));
    try {
      const store = new LocalDirectoryStore(dir);
      const body = randomBytes(64 * 1024);
      await store.put('obj', body);
      const into = Buffer.alloc(8192);
      const got = await store.getRange('obj', 4096, 8192, { into });
      assert.ok(got !== undefined && got.buffer === into.buffer && got.byteOffset === into.byteOffset, 'a view of the buffer given');
      assert.deepEqual(got, body.subarray(4096, 4096 + 8192));
      const tooSmall = Buffer.alloc(10);
      const other = await store.getRange('obj', 0, 4096, { into: tooSmall });
      assert.ok(other !== undefined && other.buffer !== tooSmall.buffer, 'a buffer of its own when the one given is too small');
      assert.deepEqual(other, body.subarray(0, 4096));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('large pieces of one object are each read into their own target, not through one buffer for all', async () => {
    const store = new RangeRecordingStore();
    const data = randomBytes(8 * MiB);
    const { meta, ref } = await putDelta(store, data);
    // Two extents' worth of one delta, as a read-ahead or a compaction batch asks for them.
    const targets = [Buffer.alloc(4 * MiB), Buffer.alloc(4 * MiB)];
    const pieces: Piece[] = targets.map((into, i) => ({
      at: 0,
      length: 4 * MiB,
      ref,
      dataOffset: i * 4 * MiB,
      crcs: meta.crcs,
      dataLength: meta.dataLength,
      into,
    }));
    await fetchPieces(new ObjectReader(store, undefined, 'v'), pieces, Buffer.alloc(0));
    assert.deepEqual(store.ranges, [
      { offset: 0, length: 4 * MiB, into: 4 * MiB },
      { offset: 4 * MiB, length: 4 * MiB, into: 4 * MiB },
    ]);
    assert.deepEqual(targets[0], data.subarray(0, 4 * MiB));
    assert.deepEqual(targets[1], data.subarray(4 * MiB));
  });

  it('small pieces of one object still share a read', async () => {
    const store = new RangeRecordingStore();
    const data = randomBytes(64 * 1024);
    const { meta, ref } = await putDelta(store, data);
    const out = Buffer.alloc(8192);
    const piece = (at: number, dataOffset: number): Piece => ({
      at,
      length: 4096,
      ref,
      dataOffset,
      crcs: meta.crcs,
      dataLength: meta.dataLength,
    });
    await fetchPieces(new ObjectReader(store, undefined, 'v'), [piece(0, 0), piece(4096, 8192)], out);
    assert.equal(store.ranges.length, 1, 'one read for both');
    assert.deepEqual(out, Buffer.concat([data.subarray(0, 4096), data.subarray(8192, 12288)]));
  });
});

describe('range reads of several pieces', () => {
  it('share one GET across the gaps between them, read into scratch used again', async () => {
    const store = new RangeRecordingStore();
    const data = randomBytes(8 * MiB);
    const { meta, ref } = await putDelta(store, data);
    // 4 KiB pieces every 64 KiB: within the gap that joins them, as compaction meets scattered writes.
    const out = Buffer.alloc(8 * 4096);
    const pieces = (): Piece[] =>
      Array.from({ length: 8 }, (_, i) => ({
        at: i * 4096,
        length: 4096,
        ref,
        dataOffset: i * 64 * 1024,
        crcs: meta.crcs,
        dataLength: meta.dataLength,
      }));
    const reader = new ObjectReader(store, undefined, 'v');
    await fetchPieces(reader, pieces(), out, undefined, 256 * 1024);
    await fetchPieces(reader, pieces(), out, undefined, 256 * 1024);
    assert.equal(store.ranges.length, 2, 'one read for the eight pieces, each time');
    for (const r of store.ranges) assert.ok(r.into !== undefined, 'read into scratch');
    assert.equal(reader.scratch.reused, 1, "the second read landed in the first one's scratch");
    for (let i = 0; i < 8; i++)
      assert.deepEqual(out.subarray(i * 4096, (i + 1) * 4096), data.subarray(i * 65536, i * 65536 + 4096), `piece ${i}`);
  });
});

describe('a range read of several pieces that fails', () => {
  it('returns only once no other GET of it can still write into its targets, and aborts them', async () => {
    /** The first GET fails at once; the others answer only once their abort signal fires, or after 200 ms. */
    class FailingStore extends MemoryStore {
      calls = 0;
      aborted = 0;
      override async getRange(key: string, offset: number, length: number, opts?: StoreReadOptions): Promise<Buffer | undefined> {
        if (this.calls++ === 0) throw new Error('the store failed this one');
        const signal = opts?.signal;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 200);
          signal?.addEventListener('abort', () => {
            clearTimeout(timer);
            this.aborted++;
            resolve();
          });
        });
        signal?.throwIfAborted();
        const got = await super.getRange(key, offset, length);
        if (got !== undefined && opts?.into !== undefined) got.copy(opts.into);
        return opts?.into?.subarray(0, length) ?? got;
      }
    }
    const store = new FailingStore();
    const data = randomBytes(4 * MiB);
    const { meta, ref } = await putDelta(store, data);
    const targets = [0, 1, 2, 3].map(() => Buffer.alloc(MiB));
    const pieces: Piece[] = targets.map((into, i) => ({
      at: 0,
      length: MiB,
      ref,
      dataOffset: i * MiB,
      crcs: meta.crcs,
      dataLength: meta.dataLength,
      into,
    }));
    await assert.rejects(fetchPieces(new ObjectReader(store, undefined, 'v'), pieces, Buffer.alloc(0)), /failed this one/);
    const after = targets.map((t) => Buffer.from(t));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(targets, after, 'no GET wrote into a target after the call had failed');
    assert.equal(store.aborted, 3, 'the other GETs were aborted');
  });
});

describe('delta bodies', () => {
  it('are used again, count against the cache bound while held, and give their room back when drained', () => {
    let reserved = 0;
    const reserve = (bytes: number) => {
      reserved += bytes;
      let held = true;
      return {
        release: () => {
          if (held) reserved -= bytes;
          held = false;
        },
      };
    };
    const bodies = new DeltaBodies(MiB, reserve, 1);
    const a = bodies.take();
    const b = bodies.take();
    assert.equal(reserved, 2 * MiB, 'both held count');
    bodies.give(a);
    bodies.give(b);
    assert.equal(reserved, MiB, 'the one beyond the free list gave its room back');
    assert.equal(detached(b.buf), true, 'and its memory, at once');
    assert.equal(detached(a.buf), false);
    assert.equal(bodies.take().buf, a.buf, 'the free one is taken again');
    assert.equal(bodies.allocated, 2);
    bodies.give(a);
    bodies.drain();
    assert.equal(reserved, 0);
    assert.equal(bodies.freeCount, 0);
  });
});
