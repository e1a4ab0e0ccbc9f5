import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { crc32c } from '@node-rs/crc32';
import fc from 'fast-check';
import { verifyBlocks } from '../../gateway/image/data-object.js';
import type { JournalEntry } from '../../gateway/journal/journal.js';
import { RecordKind } from '../../gateway/journal/record.js';
import { DataCorruptError } from '../../shared/errors.js';
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

/** Entries as the journal leaves them once durable: each write's payload CRC computed when it was encoded. */
function entries(changes: readonly Change[]): JournalEntry[] {
  return changes.map((c, i) => {
    const data = c.zero ? undefined : Buffer.alloc(c.length, c.fill);
    return {
      seq: 100 + i,
      kind: c.zero ? RecordKind.Zero : RecordKind.Write,
      offset: c.offset,
      length: c.length,
      data,
      segment: undefined,
      payloadPosition: 0,
      payloadCrc: data === undefined ? 0 : crc32c(data),
      durable: true,
      arrivedAt: 0,
    };
  });
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
  assert.equal(built.bodyCrc, crc32c(built.body), "the checksum sent with the PUT is the body's");
  verifyBlocks(built.meta.crcs, built.meta.dataLength, 0, built.body.subarray(0, built.meta.dataLength), 'delta');
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

  it("takes a 4 KiB write's block CRC from the journal, so a payload that changed since it was appended fails its check", async () => {
    const writes = entries([
      { offset: 0, length: 4096, zero: false, fill: 1 },
      { offset: 8192, length: 4096, zero: false, fill: 2 },
    ]);
    // What a disk that flipped a bit under the journal would give back.
    const flipped = writes[1]!.data!;
    flipped[100] = flipped[100]! ^ 0x10;
    const built = await buildDelta(writes, 'delta', 1);
    const { crcs, dataLength } = built.meta;
    verifyBlocks(crcs, dataLength, 0, built.body.subarray(0, 4096), 'delta');
    assert.throws(() => {
      verifyBlocks(crcs, dataLength, 4096, built.body.subarray(4096, 8192), 'delta');
    }, DataCorruptError);
  });
});
