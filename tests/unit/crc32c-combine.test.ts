import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { crc32c } from '@node-rs/crc32';
import fc from 'fast-check';
import { CRC_BLOCK } from '../../gateway/image/data-object.js';
import { crc32cCombine } from '../../gateway/util/crc32c-combine.js';

const bytes = fc.uint8Array({ minLength: 0, maxLength: 9000 }).map((a) => Buffer.from(a));

describe('CRC32C combine', () => {
  it('gives the CRC32C of A ‖ B from those of A and B, for any A and B', () => {
    fc.assert(
      fc.property(bytes, bytes, (a, b) => {
        assert.equal(crc32cCombine(crc32c(a), crc32c(b), b.length), crc32c(Buffer.concat([a, b])));
      }),
      { numRuns: 500 },
    );
  });

  it('moves a CRC past a B of many MiB (bits of the length far above the block size)', () => {
    const a = randomBytes(1000);
    const b = randomBytes(5 * 2 ** 20 + 3);
    assert.equal(crc32cCombine(crc32c(a), crc32c(b), b.length), crc32c(Buffer.concat([a, b])));
  });

  it('by table, for a 4 KiB B (a block, the usual write), gives the CRC32C of A ‖ B', () => {
    fc.assert(
      fc.property(bytes, fc.uint8Array({ minLength: CRC_BLOCK, maxLength: CRC_BLOCK }), (a, block) => {
        const b = Buffer.from(block);
        assert.equal(crc32cCombine(crc32c(a), crc32c(b), CRC_BLOCK), crc32c(Buffer.concat([a, b])));
      }),
      { numRuns: 300 },
    );
  });

  it('refuses a length that is not one', () => {
    assert.throws(() => crc32cCombine(0, 0, -1), RangeError);
    assert.throws(() => crc32cCombine(0, 0, 1.5), RangeError);
  });
});
