import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Failpoints } from '../../gateway/failpoints.js';
import { readHead } from '../../gateway/image/take-volume.js';
import { VolumeImage } from '../../gateway/image/volume-image.js';
import {
  type CompactionBudget,
  HARD_LIMIT,
  SOFT_DUTY,
  compactionDuty,
  deltaPressure,
  indexPressure,
  pauseAfter,
} from '../../gateway/volume/compaction-pace.js';
import { VolumeCatalog } from '../../gateway/volume/catalog.js';
import type { VolumeStats } from '../../gateway/volume/volume-stats.js';
import { FakeClock, settle } from '../helpers/fake-clock.js';
import { MemoryStore } from '../helpers/memory-store.js';
import { waitFor } from '../helpers/wait-for.js';
import { openTestVolume } from '../helpers/volume-fixture.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hf-pace-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('compaction pace', () => {
  const budget = { indexMemoryBytes: MiB, deltaBytes: 100 * MiB, deltaCount: 10 };

  it('pressure is the fuller of the two delta budgets', () => {
    assert.equal(deltaPressure(50 * MiB, 2, budget), 0.5);
    assert.equal(deltaPressure(50 * MiB, 15, budget), 1.5);
    assert.equal(deltaPressure(250 * MiB, 15, budget), 2.5);
  });

  it('the index is at the soft budget at three quarters of --index-memory and at the hard limit at all of it', () => {
    assert.ok(indexPressure(0.5 * MiB, budget) < 1, 'half of it is under the budget');
    assert.equal(indexPressure(0.75 * MiB, budget), 1);
    assert.equal(indexPressure(0.875 * MiB, budget), 1.5);
    assert.equal(indexPressure(MiB, budget), HARD_LIMIT);
  });

  it('a fifth of the time busy up to 1.5× the budget, flat out from twice it, linear between', () => {
    assert.equal(compactionDuty(1), SOFT_DUTY);
    assert.equal(compactionDuty(1.5), SOFT_DUTY);
    assert.ok(Math.abs(compactionDuty(1.75) - (SOFT_DUTY + 1) / 2) < 1e-9);
    assert.equal(compactionDuty(HARD_LIMIT), 1);
    assert.equal(compactionDuty(7), 1);
    for (let p = 1; p < 3; p += 0.01) assert.ok(compactionDuty(p + 0.01) >= compactionDuty(p), `duty falls at ${p.toFixed(2)}`);
  });

  it('the pause after a batch makes the busy share the duty', () => {
    assert.equal(pauseAfter(100, SOFT_DUTY), 400);
    assert.equal(pauseAfter(100, 0.5), 100);
    assert.equal(pauseAfter(100, 1), 0);
  });
});

/** Writes in one group of fillWhileCompactionFails: at most this many are in one delta. */
const GROUP = 32;

/**
 * Writes 100 groups of 32 scattered 4 KiB writes while every compaction fails before its commit, checks
 * that uploads waited for it, then lets it succeed and checks that every write reaches the store.
 * Resolves with the most `measure` reached while compaction failed.
 */
async function fillWhileCompactionFails(
  name: string,
  size: number,
  concurrency: number,
  compaction: CompactionBudget,
  measure: (s: VolumeStats) => number,
): Promise<number> {
  const store = new MemoryStore();
  await new VolumeCatalog(store).create({ name, size, extentSize: MiB });
  const failpoints = new Failpoints();
  // Every compaction fails after writing its first base, before its commit: nothing is ever folded.
  failpoints.arm('compact.after-put', 'error', Number.MAX_SAFE_INTEGER);
  const volume = await openTestVolume(store, join(dir, `${name}-journal`), {
    name,
    failpoints,
    uploadConcurrency: concurrency,
    compaction,
  });
  try {
    const model = Buffer.alloc(size);
    let seed = 7;
    const next = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31);
    let most = 0;
    for (let g = 0; g < 100; g++) {
      const writes: Array<Promise<void>> = [];
      for (let i = 0; i < GROUP; i++) {
        const at = (next() % (size / 4096)) * 4096;
        const data = Buffer.alloc(4096, (g * GROUP + i) % 251);
        data.copy(model, at);
        writes.push(volume.write(at, data, false));
      }
      await Promise.all(writes);
      most = Math.max(most, measure(volume.stats()));
    }
    const stats = volume.stats();
    assert.ok(
      stats.compactionWaits >= 1,
      `uploads never waited for compaction (most ${most}, index ${stats.indexBytes}, deltas ${stats.deltas})`,
    );
    assert.ok(stats.pendingEntries > 0, 'the writes past the limit wait in the journal');
    assert.equal(stats.compactedExtents, 0, 'no compaction succeeded while the failpoint was armed');

    failpoints.disarm();
    await volume.drain();
    assert.ok(volume.stats().compactedExtents > 0, 'compaction ran once it could');
    assert.equal(volume.stats().pendingEntries, 0);
    assert.ok((await volume.read(0, size)).equals(model), 'the volume reads back every write');
    const image = await VolumeImage.load(store, (await readHead(store, name)).head);
    const alone = Buffer.alloc(size);
    await image.read(0, size, alone, 0);
    assert.ok(alone.equals(model), 'the store alone holds every write');
    return most;
  } finally {
    await volume.close();
  }
}

describe('the hard limits: new deltas wait for compaction', () => {
  it('at twice the delta budget: with compaction failing, deltas stay under the limit while writes are acknowledged; once it succeeds, all of them reach the store', async () => {
    const deltaBudget = 256 * KiB;
    const concurrency = 3;
    const compaction = { indexMemoryBytes: 64 * MiB, deltaBytes: deltaBudget, deltaCount: 100_000 };
    const most = await fillWhileCompactionFails('paced', 16 * MiB, concurrency, compaction, (s) => s.deltaBytes);
    // Deltas already being built when the limit was reached still go: each holds at most one group of writes.
    const bound = HARD_LIMIT * deltaBudget + concurrency * (GROUP * 4 * KiB + 16 * KiB);
    assert.ok(most <= bound, `deltas reached ${most} bytes, the bound is ${bound}`);
  });

  it('at --index-memory: with compaction failing, the index stays under it while writes are acknowledged; once it succeeds, all of them reach the store', async () => {
    const indexMemory = 16 * KiB;
    const concurrency = 3;
    const compaction = { indexMemoryBytes: indexMemory, deltaBytes: 1024 * MiB, deltaCount: 100_000 };
    const most = await fillWhileCompactionFails('indexed', 64 * MiB, concurrency, compaction, (s) => s.indexBytes);
    // Each delta being built when the limit was reached still goes: per write, at most two runs (the
    // write and the rest of the run it split) in an array that may double, and its CRC.
    const bound = indexMemory + concurrency * GROUP * (2 * 2 * 16 + 4);
    assert.ok(most <= bound, `the index reached ${most} bytes, the bound is ${bound}`);
  });
});

describe('paced compaction just above the delta budget', () => {
  it('folds one batch, then pauses on its clock; compact() ends the pause and folds the rest', async () => {
    const store = new MemoryStore();
    const size = 64 * MiB;
    await new VolumeCatalog(store).create({ name: 'paused', size, extentSize: MiB });
    const journalDir = join(dir, 'paused-journal');
    const model = Buffer.alloc(size);
    // Deltas that show in all 64 extents, written under a budget they do not reach.
    const first = await openTestVolume(store, journalDir, { name: 'paused' });
    const writes: Array<Promise<void>> = [];
    for (let extent = 0; extent < 64; extent++) {
      const data = Buffer.alloc(4096, extent + 1);
      data.copy(model, extent * MiB + 8192);
      writes.push(first.write(extent * MiB + 8192, data, false));
    }
    await Promise.all(writes);
    await first.drain();
    const deltaBytes = first.stats().deltaBytes;
    await first.close();

    // Reopened with a budget the deltas pass by a fifth: compaction starts at once, paced.
    const clock = new FakeClock();
    const volume = await openTestVolume(store, journalDir, {
      name: 'paused',
      compactionClock: clock,
      compaction: { indexMemoryBytes: 64 * MiB, deltaBytes: Math.floor(deltaBytes / 1.2), deltaCount: 100_000 },
    });
    try {
      await waitFor(() => clock.pending > 0, 'a pause after the first batch');
      assert.equal(clock.pending, 1, 'one pause');
      const afterOne = volume.stats().compactedExtents;
      assert.ok(afterOne > 0 && afterOne < 64, `${afterOne} extents folded by the first batch`);
      for (let i = 0; i < 20; i++) await settle();
      assert.equal(volume.stats().compactedExtents, afterOne, 'nothing more is folded while the pause lasts');
      await clock.advance(60_000);
      await waitFor(() => volume.stats().compactedExtents > afterOne, 'the next batch, once the pause is over');

      await volume.compact();
      assert.equal(volume.stats().deltas, 0, 'compact() folds everything without waiting for the clock');
      assert.ok((await volume.read(0, size)).equals(model));
    } finally {
      await volume.close();
    }
  });
});
