import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { ExtentBuffers } from '../../gateway/volume/extent-buffers.js';
import { ExtentCache } from '../../gateway/volume/extent-cache.js';
import { VolumeCatalog } from '../../gateway/volume/catalog.js';
import { MemoryStore } from '../helpers/memory-store.js';
import { openTestVolume } from '../helpers/volume-fixture.js';

const SIZE = 64 * 1024;
const MiB = 1024 * 1024;

describe('extent buffers', () => {
  it('a released buffer is taken again after the turn it was released in, not before', async () => {
    const pool = new ExtentBuffers(SIZE, 4);
    const a = pool.take();
    pool.release(a.subarray(0, 100));
    const during = pool.take();
    assert.notEqual(during.buffer, a.buffer, 'a continuation queued in the same turn may still read it');
    await nextTurn();
    assert.equal(pool.take().buffer, a.buffer);
    assert.equal(pool.reused, 1);
    assert.equal(pool.allocated, 2);
  });

  it('a buffer with a view lent out is never taken again, even once the view comes back', async () => {
    const pool = new ExtentBuffers(SIZE, 4);
    const a = pool.take();
    const view = a.subarray(4096, 8192);
    pool.lend(view);
    pool.release(a);
    await nextTurn();
    assert.notEqual(pool.take().buffer, a.buffer, 'lent when released: left to the garbage collector');
    pool.returned(view);
    await nextTurn();
    assert.notEqual(pool.take().buffer, a.buffer);
    // A view lent and returned before the release does not keep the buffer from being reused.
    const b = pool.take();
    pool.lend(b.subarray(0, 10));
    pool.returned(b.subarray(0, 10));
    pool.release(b);
    await nextTurn();
    assert.equal(pool.take().buffer, b.buffer);
  });

  it('ignores buffers it did not make, releases twice, and keeps at most its free list', async () => {
    const pool = new ExtentBuffers(SIZE, 2);
    pool.release(Buffer.alloc(SIZE));
    const taken = [pool.take(), pool.take(), pool.take()];
    for (const b of taken) pool.release(b);
    pool.release(taken[0]!);
    await nextTurn();
    assert.equal(pool.freeBytes, 2 * SIZE, 'two kept, the third left to the collector');
    const again = [pool.take(), pool.take(), pool.take()];
    assert.equal(new Set(again.map((b) => b.buffer)).size, 3, 'no buffer handed out twice');
  });

  it('the extent cache gives back what it evicts and drops, not what it puts back', async () => {
    const pool = new ExtentBuffers(SIZE, 4);
    const cache = new ExtentCache(2 * SIZE, pool);
    const extents = [0, 1, 2].map(() => ({ data: pool.take(), seq: 0 }));
    cache.set(0, extents[0]!);
    cache.set(1, extents[1]!);
    // Re-inserting an entry (its size changed) keeps its buffer its own.
    cache.set(0, extents[0]!);
    await nextTurn();
    assert.equal(pool.freeBytes, 0);
    cache.set(2, extents[2]!);
    await nextTurn();
    assert.equal(cache.peek(1), undefined, 'the least recently used extent was evicted');
    assert.equal(pool.take().buffer, extents[1]!.data.buffer, "the evicted extent's buffer is used again");
    cache.clear();
    await nextTurn();
    assert.equal(pool.freeBytes, 2 * SIZE, 'clearing gives every buffer back');
  });
});

describe('extent buffers in a volume', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hf-extent-buffers-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a zero-copy read keeps its bytes while its extent is evicted and other loads reuse buffers', async () => {
    const store = new MemoryStore();
    await new VolumeCatalog(store).create({ name: 'pooled', size: 8 * MiB, extentSize: MiB });
    const volume = await openTestVolume(store, join(dir, 'journal'), { name: 'pooled', cacheBytes: 2 * MiB });
    const data = randomBytes(8 * MiB);
    await volume.write(0, data, false);
    await volume.drain();
    // Whole-extent reads load extents 0 and 1 into the two-extent cache; the 4 KiB read is a view of extent 0.
    await volume.read(0, MiB);
    const view = await volume.read(4096, 4096);
    const kept = Buffer.from(view);
    for (let round = 0; round < 3; round++) {
      for (let e = 2; e < 8; e++) assert.ok((await volume.read(e * MiB, MiB)).equals(data.subarray(e * MiB, (e + 1) * MiB)));
      await nextTurn();
    }
    assert.ok(view.equals(kept), 'the lent view was not overwritten by a load that reused buffers');
    assert.ok(view.equals(data.subarray(4096, 8192)));
    volume.readDone(view);
    await volume.close({ release: true });
  });
});
