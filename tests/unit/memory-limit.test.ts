import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { MARGIN_BYTES, MemoryLimit, type SqueezableCache } from '../../gateway/memory-limit.js';
import { ExtentBuffers } from '../../gateway/volume/extent-buffers.js';
import { ExtentCache } from '../../gateway/volume/extent-cache.js';

const MiB = 2 ** 20;
const EXTENT = 4 * MiB;

/** A volume's cache as the memory limit sees it, over a real ExtentCache filled with `extents` extents. */
function cacheOf(maxBytes: number, extents: number): { volume: SqueezableCache; cache: ExtentCache; buffers: ExtentBuffers } {
  let cache: ExtentCache | undefined;
  const buffers = new ExtentBuffers(EXTENT, () => Math.floor((cache?.unusedBytes ?? 0) / EXTENT));
  cache = new ExtentCache(maxBytes, buffers);
  for (let i = 0; i < extents; i++) cache.set(i, { data: buffers.take(), seq: 0 });
  const c = cache;
  return {
    volume: {
      cacheMaxBytes: maxBytes,
      squeezeCache: (bytes) => {
        c.squeeze(bytes);
      },
    },
    cache,
    buffers,
  };
}

/** A memory limit of `limitBytes` over `caches`, reading the RSS from `rss`. */
function limitOf(caches: SqueezableCache[], limitBytes: number, rss: () => number): MemoryLimit {
  return new MemoryLimit({ limitBytes: () => limitBytes, caches: () => caches, rss, logger: pino({ level: 'silent' }) });
}

describe('memory limit', () => {
  it('takes room from the caches while the RSS is over the limit less its margin, evicting what no longer fits', async () => {
    const a = cacheOf(64 * MiB, 16);
    const rss = 300 * MiB;
    const limit = limitOf([a.volume], 256 * MiB, () => rss);
    limit.tick();
    assert.equal(limit.squeezedBytes, 16 * MiB, 'one step at a time: what it frees takes a moment to leave the RSS');
    assert.equal(a.cache.bytes, 48 * MiB, 'the cache evicted down to its lowered bound');
    await nextTurn();
    assert.equal(a.buffers.freeBytes, 0, 'the evicted extents are not kept on the free list: the lowered bound has no room for them');
    for (let i = 0; i < 10; i++) limit.tick();
    assert.equal(limit.squeezedBytes, 32 * MiB, 'never more than half of the caches');
    assert.equal(a.cache.bytes, 32 * MiB);
    assert.ok(limit.squeezes >= 3);
  });

  it('gives room back slowly once the RSS is well under the target, and not while it is near it', () => {
    const a = cacheOf(64 * MiB, 0);
    let rss = 400 * MiB;
    const limit = limitOf([a.volume], 256 * MiB, () => rss);
    limit.tick();
    limit.tick();
    assert.equal(limit.squeezedBytes, 32 * MiB);
    rss = 256 * MiB - MARGIN_BYTES - MiB;
    limit.tick();
    assert.equal(limit.squeezedBytes, 32 * MiB, 'just under the target: kept, or it would swing');
    rss = 100 * MiB;
    limit.tick();
    assert.equal(limit.squeezedBytes, 28 * MiB, 'well under: a little goes back each look');
    assert.equal(a.cache.boundBytes, 36 * MiB);
    for (let i = 0; i < 10; i++) limit.tick();
    assert.equal(limit.squeezedBytes, 0);
    assert.equal(a.cache.boundBytes, 64 * MiB, 'the whole bound is back');
  });

  it('shares the squeeze among volumes in proportion to their caches', () => {
    const small = cacheOf(32 * MiB, 0);
    const large = cacheOf(96 * MiB, 0);
    const limit = limitOf([small.volume, large.volume], 200 * MiB, () => 200 * MiB - MARGIN_BYTES + 8 * MiB);
    limit.tick();
    assert.equal(small.cache.squeezed, 2 * MiB);
    assert.equal(large.cache.squeezed, 6 * MiB);
  });

  it('does nothing while the RSS stays under the target', () => {
    const a = cacheOf(64 * MiB, 16);
    const limit = limitOf([a.volume], 1024 * MiB, () => 500 * MiB);
    for (let i = 0; i < 5; i++) limit.tick();
    assert.equal(limit.squeezedBytes, 0);
    assert.equal(a.cache.bytes, 64 * MiB);
    assert.equal(limit.squeezes, 0);
  });
});
