import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool, releaseMemory } from '../../gateway/util/buffer-pool.js';
import { detached } from '../helpers/detached.js';

const KiB = 1024;

describe('buffer pool', () => {
  it('keeps given buffers up to its bound and frees the rest at once', () => {
    const pool = new BufferPool(128 * KiB);
    const a = pool.take(100 * KiB);
    const b = pool.take(100 * KiB);
    assert.equal(a.buffer.byteLength, 128 * KiB, 'rounded up to a power of two');
    pool.give(a);
    pool.give(b);
    assert.equal(detached(a), false, 'kept for the next take');
    assert.equal(detached(b), true, 'no room: its memory went back to the allocator');
    pool.give(b);
    const again = pool.take(70 * KiB);
    assert.equal(again.buffer, a.buffer);
    assert.equal(pool.reused, 1);
  });

  it('frees a buffer larger than its bound when it is given back', () => {
    const pool = new BufferPool(128 * KiB);
    const big = pool.take(300 * KiB);
    assert.equal(big.length, 300 * KiB);
    pool.give(big.subarray(0, 10));
    assert.equal(detached(big), true);
    assert.notEqual(pool.take(300 * KiB).buffer, big.buffer);
  });

  it('never frees what it did not make, nor a buffer given twice', () => {
    const pool = new BufferPool(64 * KiB);
    const foreign = Buffer.allocUnsafeSlow(64 * KiB);
    pool.give(foreign);
    assert.equal(detached(foreign), false);
    const small = pool.take(1024);
    pool.give(small);
    assert.equal(detached(small), false, 'below the pooled size: a buffer of its own, never freed by the pool');
    const a = pool.take(64 * KiB);
    pool.give(a);
    pool.give(a);
    assert.equal(detached(a), false, 'the second give is ignored');
    assert.equal(pool.take(64 * KiB).buffer, a.buffer);
    assert.equal(pool.take(64 * KiB).buffer === a.buffer, false, 'and it was listed once');
  });

  it('releaseMemory empties every view of the buffer and is harmless twice', () => {
    const buf = Buffer.allocUnsafeSlow(4 * KiB);
    const view = buf.subarray(10, 20);
    releaseMemory(view);
    assert.equal(buf.length, 0);
    assert.equal(view.length, 0);
    releaseMemory(buf);
  });
});
