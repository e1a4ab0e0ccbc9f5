import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool, discard } from '../../gateway/util/buffer-pool.js';

const KiB = 1024;

describe('buffer pool', () => {
  it('gives a buffer back for reuse within its free room, and discards the one beyond it', () => {
    const pool = new BufferPool(256 * KiB);
    const a = pool.take(200 * KiB);
    const b = pool.take(200 * KiB);
    assert.equal(a.buffer.byteLength, 256 * KiB, 'rounded up to a power of two');
    pool.give(a);
    pool.give(b);
    pool.give(b);
    assert.equal(b.buffer.byteLength, 0, 'no room left for the second: its memory is freed at once');
    assert.equal(a.buffer.byteLength, 256 * KiB, 'the first waits on the free list');
    const again = pool.take(150 * KiB);
    assert.equal(again.buffer, a.buffer);
    assert.equal(pool.reused, 1);
    assert.notEqual(pool.take(150 * KiB).buffer, a.buffer, 'given once, listed once');
  });

  it('discards only memory a buffer has to itself', () => {
    const whole = Buffer.allocUnsafeSlow(64 * KiB);
    const slice = whole.subarray(KiB);
    discard(slice);
    assert.equal(whole.length, 64 * KiB, 'a slice does not free what its parent holds');
    const small = Buffer.allocUnsafe(100);
    const neighbour = Buffer.allocUnsafe(100);
    discard(small);
    assert.equal(neighbour.length, 100, "Node's shared slab is left alone");
    discard(whole);
    assert.equal(slice.length, 0, 'views of a discarded buffer read as empty, never as other data');
    discard(whole);
  });
});
