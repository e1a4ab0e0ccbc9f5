import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { JournalEntry } from '../../gateway/journal/journal.js';
import { RecordKind } from '../../gateway/journal/record.js';
import { buildDelta } from '../../gateway/volume/delta-builder.js';

const VOLUME = 256 * 1024;
/** A byte no write or zero record produces here: what a delta leaves untouched. */
const UNTOUCHED = 0xee;

interface Change {
  readonly offset: number;
  readonly length: number;
  readonly zero: boolean;
  readonly fill: number;
}

function entries(changes: readonly Change[]): JournalEntry[] {
  return changes.map((c, i) => ({
    seq: 100 + i,
    kind: c.zero ? RecordKind.Zero : RecordKind.Write,
    offset: c.offset,
    length: c.length,
    data: c.zero ? undefined : Buffer.alloc(c.length, c.fill),
    segment: undefined,
    payloadPosition: 0,
    durable: true,
    arrivedAt: 0,
  }));
}

/** The volume as the changes leave it, applied in sequence order. */
function applied(changes: readonly Change[]): Buffer {
  const disk = Buffer.alloc(VOLUME, UNTOUCHED);
  for (const c of changes) disk.fill(c.zero ? 0 : c.fill, c.offset, c.offset + c.length);
  return disk;
}

/** The volume as the delta's runs leave it. */
async function viaDelta(changes: readonly Change[]): Promise<{ disk: Buffer; runs: number }> {
  const built = await buildDelta(entries(changes), 'delta', 1);
  const { runs } = built.meta;
  const disk = Buffer.alloc(VOLUME, UNTOUCHED);
  for (let r = 0; r < runs.count; r++) {
    const offset = runs.offset[r]!;
    const length = runs.length[r]!;
    const at = runs.dataOffset[r]!;
    if (at < 0) disk.fill(0, offset, offset + length);
    else built.body.copy(disk, offset, at, at + length);
    if (r > 0) assert.ok(offset >= runs.offset[r - 1]! + runs.length[r - 1]!, 'runs in volume order, not overlapping');
  }
  return { disk, runs: runs.count };
}

const change = fc
  .record({
    offset: fc.integer({ min: 0, max: VOLUME / 512 - 1 }).map((n) => n * 512),
    length: fc.integer({ min: 1, max: 24 }).map((n) => n * 512),
    zero: fc.boolean(),
    fill: fc.integer({ min: 1, max: 250 }),
  })
  .map((c) => ({ ...c, length: Math.min(c.length, VOLUME - c.offset) }));

describe('delta builder', () => {
  it('holds, for every byte the changes touch, what the newest of them wrote (overlapping or not)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(change, { minLength: 1, maxLength: 40 }), async (changes) => {
        assert.ok((await viaDelta(changes)).disk.equals(applied(changes)));
      }),
      { numRuns: 300 },
    );
  });

  it('builds disjoint writes, given in any order, as runs in volume order with adjacent ones merged', async () => {
    // 4 KiB writes at shuffled offsets, none overlapping, every second pair adjacent.
    const offsets = Array.from({ length: 32 }, (_, i) => Math.floor(i / 2) * 12_288 + (i % 2) * 4096);
    const shuffled = fc.sample(fc.shuffledSubarray(offsets, { minLength: offsets.length }), { numRuns: 1, seed: 7 })[0]!;
    const changes = shuffled.map((offset, i) => ({ offset, length: 4096, zero: false, fill: 1 + i }));
    const { disk, runs } = await viaDelta(changes);
    assert.ok(disk.equals(applied(changes)));
    assert.equal(runs, 16, 'each adjacent pair is one run');
  });
});
