import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { backoffMs } from '../../gateway/util/backoff.js';
import { writeFileAtomic } from '../../gateway/util/atomic-write.js';
import { isNoSpace } from '../../gateway/util/classify-error.js';
import { steppedTimers } from '../../gateway/util/clock.js';
import { LogRateLimiter } from '../../gateway/util/rate-limited-log.js';
import { Semaphore } from '../../gateway/util/semaphore.js';
import { sleep } from '../../gateway/util/sleep.js';
import { StoreError } from '../../gateway/store/object-store.js';
import { FakeClock } from '../helpers/fake-clock.js';

describe('clock', () => {
  it('waits out a duration longer than one timer step in several steps, not at the first', async () => {
    // Steps of 10 ms stand in for Node's 2^31 ms limit: a 60 ms wait must not end after 10.
    const clock = steppedTimers(10);
    const started = performance.now();
    await new Promise<void>((resolve) => clock.setTimer(resolve, 60));
    assert.ok(performance.now() - started >= 59, `ended after ${performance.now() - started} ms`);
  });

  it('a cancelled timer never fires', async () => {
    const clock = steppedTimers(10);
    let fired = false;
    clock.setTimer(() => (fired = true), 30).cancel();
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(fired, false);
  });
});

describe('sleep', () => {
  it('ends when its time is up, or at once when woken', async () => {
    const clock = new FakeClock();
    let done = false;
    const s = sleep(1000, clock);
    void s.done.then(() => (done = true));
    await clock.advance(999);
    assert.equal(done, false);
    await clock.advance(1);
    assert.equal(done, true);
    const woken = sleep(60_000, clock);
    woken.wake();
    await woken.done;
  });
});

describe('backoff', () => {
  it('doubles up to the maximum, with jitter in the upper half', () => {
    for (let attempt = 0; attempt < 30; attempt++) {
      const base = Math.min(1000, 50 * 2 ** attempt);
      const ms = backoffMs(attempt, 50, 1000);
      assert.ok(ms >= base / 2 && ms <= base, `attempt ${attempt}: ${ms}`);
    }
  });
});

describe('semaphore', () => {
  it('serves waiters in arrival order once permits come back', async () => {
    const s = new Semaphore(1);
    assert.equal(s.acquire(), undefined);
    const order: number[] = [];
    const a = s.acquire()!.then(() => order.push(1));
    const b = s.acquire()!.then(() => order.push(2));
    s.release();
    s.release();
    await Promise.all([a, b]);
    assert.deepEqual(order, [1, 2]);
    s.release();
    assert.equal(s.free, 1);
  });
});

describe('rate-limited log', () => {
  it('lets one line per key through per interval and counts the ones left out', () => {
    let now = 0;
    const limiter = new LogRateLimiter(1000, () => now);
    assert.equal(limiter.admit('a'), 0);
    assert.equal(limiter.admit('a'), undefined);
    assert.equal(limiter.admit('a'), undefined);
    assert.equal(limiter.admit('b'), 0, 'keys are counted apart');
    now = 1000;
    assert.equal(limiter.admit('a'), 2);
    assert.equal(limiter.admit('a'), undefined);
  });
});

describe('atomic write', () => {
  it('replaces the file whole and leaves no temporary file behind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hf-atomic-'));
    try {
      const file = join(dir, 'manifest.json');
      await writeFileAtomic(file, 'one');
      await writeFileAtomic(file, Buffer.from('two'));
      assert.equal(await readFile(file, 'utf8'), 'two');
      assert.deepEqual(await readdir(dir), ['manifest.json']);
      await assert.rejects(writeFileAtomic(join(dir, 'missing', 'x'), 'y'), /ENOENT/);
      assert.deepEqual(await readdir(dir), ['manifest.json']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('cause chain', () => {
  it('a full disk anywhere in the chain is no-space; an error name alone is not', () => {
    const enospc = Object.assign(new Error('no space'), { code: 'ENOSPC' });
    assert.equal(isNoSpace(new StoreError('put', 'k', { cause: enospc })), true);
    assert.equal(isNoSpace(Object.assign(new Error('x'), { name: 'NoSpaceError' })), false);
    const loop: Error & { cause?: unknown } = new Error('loop');
    loop.cause = loop;
    assert.equal(isNoSpace(loop), false, 'a cause cycle ends');
  });
});
