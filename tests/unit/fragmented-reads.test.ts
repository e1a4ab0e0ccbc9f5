/**
 * Reads of a volume whose extents have runs in many deltas (compaction behind its budget): what they
 * cost in store requests. A whole-extent load there is one GET per delta, so random reads must stay
 * small reads (one GET each) until an extent has been missed about as often as loading it costs, and
 * read-ahead must fetch several extents together (one GET per delta for all of them).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { VolumeCatalog } from '../../gateway/volume/catalog.js';
import { CountingStore } from '../helpers/counting-store.js';
import { openTestVolume } from '../helpers/volume-fixture.js';

const KiB = 1024;
const MiB = 2 ** 20;
const EXTENT = 4 * MiB;
const EXTENTS = 16;
const DELTAS = 40;

describe('reads of extents fragmented over many deltas', () => {
  const store = new CountingStore();
  const model = Buffer.alloc(EXTENTS * EXTENT);
  let dir = '';

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'holdfast-fragmented-'));
    await new VolumeCatalog(store).create({ name: 'model', size: model.length, extentSize: EXTENT });
    const writer = await openTestVolume(store, join(dir, 'j'), { uploadDelayMs: 60_000 });
    // Each drain ships one delta with a few blocks in every extent: every extent has runs in every delta.
    for (let d = 0; d < DELTAS; d++) {
      const writes: Array<Promise<void>> = [];
      for (let e = 0; e < EXTENTS; e++) {
        const offset = e * EXTENT + ((d * 7 + e * 13) % 1024) * 4 * KiB;
        const data = Buffer.alloc(4 * KiB, ((d + e) % 251) + 1);
        data.copy(model, offset);
        // Together: one journal sync, so the uploader gathers all of them into one delta.
        writes.push(writer.write(offset, data, false));
      }
      await Promise.all(writes);
      await writer.drain();
    }
    assert.equal(writer.status().stats.deltas, DELTAS, 'one delta per drain, none compacted');
    await writer.close();
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('random 4 KiB reads of one extent stay one GET each while loading it would cost more', async () => {
    const volume = await openTestVolume(store, join(dir, 'j'), { cacheBytes: 128 * MiB });
    try {
      const before = store.dataReads;
      const reads = 20;
      for (let i = 0; i < reads; i++) {
        // Blocks the deltas wrote (see before), every other one from the newest delta's down: not sequential.
        const d = DELTAS - 1 - 2 * i;
        const offset = 2 * EXTENT + ((d * 7 + 2 * 13) % 1024) * 4 * KiB;
        assert.deepEqual(await volume.read(offset, 4 * KiB), model.subarray(offset, offset + 4 * KiB));
      }
      await volume.drain();
      // 20 small reads; loading the extent whole after three of them (as before) cost 43: 3 small reads and 40 GETs for the load.
      assert.ok(store.dataReads - before <= reads, `${store.dataReads - before} store reads for ${reads} small reads`);
    } finally {
      await volume.close();
    }
  });

  it('small reads of an extent load it after three back to back, not after two that met by chance', async () => {
    const volume = await openTestVolume(store, join(dir, 'j'), { cacheBytes: 128 * MiB });
    try {
      const at = (block: number): number => 5 * EXTENT + block * 4 * KiB;
      const read = async (block: number): Promise<void> => {
        assert.deepEqual(await volume.read(at(block), 4 * KiB), model.subarray(at(block), at(block) + 4 * KiB), `block ${block}`);
      };
      let before = store.dataReads;
      // Random reads: the second lands right after the first, the third elsewhere.
      for (const block of [100, 101, 700]) await read(block);
      await volume.drain();
      // At most one GET each (blocks no delta wrote read as zeros without one); the load is one per delta.
      assert.ok(store.dataReads - before <= 3, `${store.dataReads - before} store reads: the extent was not loaded`);
      // A stream: three reads back to back, then the extent is loaded and the next reads are hits.
      before = store.dataReads;
      for (const block of [300, 301, 302]) await read(block);
      await volume.drain();
      assert.ok(store.dataReads - before >= DELTAS, `${store.dataReads - before} store reads: the extent was loaded`);
      before = store.dataReads;
      await read(303);
      await read(900);
      assert.equal(store.dataReads, before, 'the reads after it are answered from the cache');
    } finally {
      await volume.close();
    }
  });

  it('a sequential read loads the extents ahead together: about one GET per delta for several extents', async () => {
    const volume = await openTestVolume(store, join(dir, 'j'), { cacheBytes: 128 * MiB });
    try {
      const before = store.dataReads;
      for (let offset = 0; offset < model.length; offset += MiB)
        assert.deepEqual(await volume.read(offset, MiB), model.subarray(offset, offset + MiB), `bytes at ${offset}`);
      const reads = store.dataReads - before;
      // One extent at a time, the 16 extents cost 16 × 40 GETs; in windows of at least 4 extents, at most 4 × 40
      // (and the 1 MiB read before read-ahead starts, 40 more).
      assert.ok(reads <= 5 * DELTAS, `${reads} store reads for ${EXTENTS} extents with runs in ${DELTAS} deltas each`);
    } finally {
      await volume.close();
    }
  });
});
