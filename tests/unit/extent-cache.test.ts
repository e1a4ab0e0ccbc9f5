import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExtentCache, type MaterializedExtent } from '../../gateway/volume/extent-cache.js';

const EXTENT = 64 * 1024;

test('an entry re-inserted after it grew is counted at its new size, and older entries make room', () => {
  const cache = new ExtentCache(2 * EXTENT);
  const zeros: MaterializedExtent[] = [0, 1, 2].map(() => ({ data: null, seq: 0 }));
  zeros.forEach((e, i) => cache.set(i, e));
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
