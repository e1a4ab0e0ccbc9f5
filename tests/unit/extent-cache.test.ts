import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExtentCache, type MaterializedExtent } from '../../gateway/volume/extent-cache.js';

const EXTENT = 64 * 1024;

test('an entry re-inserted after it grew is counted at its new size, and older entries make room', () => {
  const cache = new ExtentCache(2 * EXTENT);
  const zeros: MaterializedExtent[] = [0, 1, 2].map(() => ({ data: null, seq: 0 }));
  zeros.forEach((e, i) => {
    cache.set(i, e);
  });
  assert.equal(cache.size, 3);
  for (const [i, e] of zeros.entries()) {
    e.data = Buffer.alloc(EXTENT, i + 1);
    cache.set(i, e);
    assert.ok(cache.bytes <= cache.maxBytes, `after extent ${i} grew the cache counts ${cache.bytes} of ${cache.maxBytes} bytes`);
  }
  assert.equal(cache.bytes, 2 * EXTENT);
  assert.equal(cache.peek(0), undefined, 'the least recently used extent was evicted');
  assert.equal(cache.peek(2)?.data?.[0], 3);
});

test('an entry re-inserted after it shrank to zeros frees its bytes', () => {
  const cache = new ExtentCache(4 * EXTENT);
  const e: MaterializedExtent = { data: Buffer.alloc(EXTENT, 7), seq: 1 };
  cache.set(5, e);
  assert.equal(cache.bytes, EXTENT);
  e.data = null;
  cache.set(5, e);
  assert.ok(cache.bytes < 1024, `a zero extent counts ${cache.bytes} bytes`);
  assert.equal(cache.peek(5), e);
});

test('reserved bytes count against the bound until released', () => {
  const cache = new ExtentCache(3 * EXTENT);
  for (let i = 0; i < 3; i++) cache.set(i, { data: Buffer.alloc(EXTENT), seq: 0 });
  const loading = cache.reserve(EXTENT);
  assert.equal(cache.size, 2, 'the least recently used extent made room for the reservation');
  assert.equal(cache.peek(0), undefined);
  cache.set(3, { data: Buffer.alloc(EXTENT), seq: 0 });
  assert.equal(cache.bytes + cache.reserved, 3 * EXTENT, 'a new entry evicts another while the reservation holds');
  loading.release();
  loading.release();
  assert.equal(cache.reserved, 0, 'releasing twice gives back the bytes once');
  cache.set(4, { data: Buffer.alloc(EXTENT), seq: 0 });
  assert.equal(cache.size, 3, 'released bytes are usable again');
});
