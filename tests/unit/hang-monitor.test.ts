import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DataCorruptError, RequestAbortedError, RequestDroppedError } from '../../shared/errors.js';
import { DEFAULT_HANG_POLICY } from '../../shared/hang-policy.js';
import { STALL_MS, StorageFailedError } from '../../gateway/hang/index.js';
import { StoreError } from '../../gateway/store/object-store.js';
import { settle } from '../helpers/fake-clock.js';
import { BY, denied, edges, failedWith, harness, outcome, refused } from '../helpers/hang-harness.js';

/**
 * The hang engine's shell on a fake clock: held reads, their retries, the probe, the stall timer and
 * the deadline, each step moved forward by the test instead of waited for.
 */

/** A store whose nth attempt is refused, answered, or left unanswered until it is aborted, as `script(n)` says. */
function scripted(script: (attempt: number) => 'refused' | 'unanswered' | 'data') {
  const counts = { attempts: 0, abandoned: 0 };
  const op = (signal: AbortSignal): Promise<string> => {
    const what = script(++counts.attempts);
    if (what === 'refused') return Promise.reject(refused());
    if (what === 'data') return Promise.resolve('data');
    return new Promise((_resolve, reject) => {
      signal.addEventListener('abort', () => {
        counts.abandoned++;
        reject(new Error('aborted'));
      });
    });
  };
  return { op, counts };
}

describe('held reads', () => {
  it('a transient failure is held and completes when the probe sees the store answer, with events for both edges', async () => {
    const { monitor, events, op, clock, up, state } = harness();
    const read = outcome(monitor.run(op, 4096, undefined));
    await clock.advance(100);
    assert.equal(monitor.state, 'hang');
    assert.deepEqual(monitor.snapshot().held, { requests: 1, bytes: 4096 });
    up();
    // The probe runs every 20 ms; its answer wakes the read before its own back-off (up to 200 ms) ends.
    await clock.advance(20);
    assert.equal(read.value, 'data');
    assert.equal(monitor.state, 'normal');
    assert.deepEqual(edges(events), ['storage-unavailable:true', 'io-hang:true', 'storage-unavailable:false', 'io-hang:false']);
    const [begin, end] = events.filter((e) => e.kind === 'io-hang');
    assert.ok(begin?.kind === 'io-hang' && end?.kind === 'io-hang' && !end.set);
    assert.equal(begin.episode, end.episode);
    // Ended by the read's own retry or by the probe at 120 ms, whichever came first.
    assert.ok(end.durationMs >= 100 && end.durationMs <= 120, `episode of ${end.durationMs} ms`);
    assert.equal(begin.errorClass, 'transient');
    assert.match(begin.lastError ?? '', /ECONNREFUSED/);
    assert.ok(monitor.counters.retries > 0 && state.recovered > 0);
    monitor.close();
  });

  it('an attempt still unanswered when the probe finds the store answering is given up for a new one', async () => {
    // A store that restarts (RGW) takes connections before it can answer them: an attempt sent then
    // would otherwise hold its read until the S3 client's own time-out, seconds after the recovery.
    const { monitor, clock, state } = harness();
    const { op, counts } = scripted((n) => (n === 1 ? 'refused' : n === 2 ? 'unanswered' : 'data'));
    const read = outcome(monitor.run(op, 4096, undefined));
    await clock.advance(100);
    assert.equal(counts.attempts, 2);
    assert.equal(read.settled, false);
    state.probeDown = false;
    await clock.advance(20);
    assert.equal(read.value, 'data');
    assert.deepEqual(counts, { attempts: 3, abandoned: 1 });
    assert.equal(monitor.state, 'normal');
    monitor.close();
  });

  it('a first attempt that stalled is given up too when the probe finds the store answering', async () => {
    // The read was held by the stall timer, not by a failure: its attempt is as stale as a held one's.
    const { monitor, clock, state } = harness();
    const { op, counts } = scripted((n) => (n === 1 ? 'unanswered' : 'data'));
    const read = outcome(monitor.run(op, 4096, undefined));
    await clock.advance(STALL_MS);
    assert.equal(monitor.state, 'hang');
    state.probeDown = false;
    await clock.advance(20);
    assert.equal(read.value, 'data');
    assert.deepEqual(counts, { attempts: 2, abandoned: 1 });
    assert.equal(monitor.state, 'normal');
    assert.equal(monitor.counters.storageErrors.transient, 0, 'the abandoned attempt is no store failure');
    monitor.close();
  });

  it('denied fails at once by default and is held when the policy says hold', async () => {
    const a = harness({}, denied);
    await assert.rejects(
      a.monitor.run(a.op, 1, undefined),
      (e: unknown) => failedWith('policy')(e) && (e as StorageFailedError).errorClass === 'denied',
    );
    assert.equal(a.state.calls, 1);
    a.monitor.close();

    const b = harness({ classes: { ...DEFAULT_HANG_POLICY.classes, denied: 'hold' } }, denied);
    const read = outcome(b.monitor.run(b.op, 1, undefined));
    await b.clock.advance(60);
    assert.equal(b.monitor.state, 'hang');
    b.up();
    await b.clock.advance(20);
    assert.equal(read.value, 'data');
    b.monitor.close();
  });

  it('timeout off: nothing is held', async () => {
    const { monitor, op, events } = harness({ timeout: 'off' });
    await assert.rejects(monitor.run(op, 1, undefined), StorageFailedError);
    assert.equal(events.filter((e) => e.kind === 'io-hang').length, 0);
    monitor.close();
  });

  it('the timeout fires on its timer, fails held reads, fails fast until storage answers', async () => {
    const { monitor, events, state, op, clock, up } = harness({ timeout: 300 });
    const reads = [outcome(monitor.run(op, 1, undefined)), outcome(monitor.run(op, 1, undefined))];
    await clock.advance(299);
    assert.ok(
      reads.every((r) => !r.settled),
      'still held 1 ms before the deadline',
    );
    await clock.advance(1);
    for (const r of reads) assert.ok(failedWith('timeout')(r.error), 'failed at the deadline');
    assert.equal(monitor.state, 'timed-out');
    const callsBefore = state.calls;
    await assert.rejects(monitor.run(op, 1, undefined), failedWith('timed-out'));
    assert.equal(state.calls, callsBefore, 'a timed-out volume fails fast without asking the store');
    up();
    await clock.advance(20);
    assert.equal(monitor.state, 'normal');
    assert.equal(await monitor.run(op, 1, undefined), 'data');
    assert.deepEqual(
      edges(events).filter((k) => k.startsWith('io-hang')),
      ['io-hang:true', 'io-hang-timeout:true', 'io-hang:false', 'io-hang-timeout:false'],
    );
    assert.equal(monitor.counters.timeouts, 1);
    assert.equal(monitor.counters.failedFast, 1);
    monitor.close();
  });

  it('a new timeout applies to the running episode, counted from its start', async () => {
    const { monitor, op, clock } = harness({ timeout: 60_000 });
    const read = outcome(monitor.run(op, 1, undefined));
    await clock.advance(150);
    monitor.setPolicy({ ...monitor.policy, timeout: 250 }, BY);
    await clock.advance(99);
    assert.equal(read.settled, false);
    await clock.advance(1);
    assert.ok(failedWith('timeout')(read.error));
    monitor.close();
  });

  it('a timeout longer than a Node timer holds until it is due, and forever holds on', async () => {
    const days = 30 * 24 * 3_600_000;
    const { monitor, op, clock } = harness({ timeout: days });
    const read = outcome(monitor.run(op, 1, undefined));
    await clock.advance(100);
    await clock.jump(days - 101);
    assert.equal(read.settled, false);
    assert.equal(monitor.state, 'hang');
    await clock.advance(1);
    assert.ok(failedWith('timeout')(read.error));
    monitor.close();

    const f = harness({ timeout: 'forever' });
    const held = outcome(f.monitor.run(f.op, 1, undefined));
    await f.clock.advance(100);
    await f.clock.jump(days * 12);
    assert.equal(held.settled, false);
    f.up();
    await f.clock.advance(20);
    assert.equal(held.value, 'data');
    f.monitor.close();
  });

  it('pause completes held reads and stops holding until resume; release fails them once', async () => {
    const { monitor, op, clock, events, up } = harness();
    const first = outcome(monitor.run(op, 1, undefined));
    await clock.advance(50);
    assert.equal(monitor.pause(BY), 1);
    await settle();
    assert.ok(failedWith('paused')(first.error));
    await assert.rejects(monitor.run(op, 1, undefined), failedWith('paused'));
    monitor.resume(BY);
    const again = outcome(monitor.run(op, 1, undefined));
    await clock.advance(50);
    assert.equal(monitor.state, 'hang');
    assert.equal(monitor.release(BY), 1);
    await settle();
    assert.ok(failedWith('released')(again.error));
    const third = outcome(monitor.run(op, 1, undefined));
    await clock.advance(50);
    assert.equal(monitor.snapshot().held.requests, 1, 'after release, new failures are held again');
    up();
    await clock.advance(20);
    assert.equal(third.value, 'data');
    const operator = events.filter((e) => e.kind === 'volume-paused' || e.kind === 'volume-resumed' || e.kind === 'held-released');
    assert.deepEqual(
      operator.map((e) => e.kind),
      ['volume-paused', 'volume-resumed', 'held-released'],
    );
    for (const e of operator) assert.ok('requestedBy' in e && e.requestedBy.address === BY.address);
    monitor.close();
  });

  it('a held read whose client disconnects is dropped and never retried', async () => {
    const { monitor, op, state, clock } = harness();
    const ac = new AbortController();
    const held = monitor.run(op, 1, ac.signal);
    await clock.advance(50);
    ac.abort();
    await assert.rejects(held, RequestAbortedError);
    const calls = state.calls;
    await clock.advance(1000);
    assert.equal(state.calls, calls, 'no retry after the client went away');
    assert.equal(monitor.snapshot().held.requests, 0);
    monitor.close();
  });

  it('shutdown drops held reads unanswered', async () => {
    const { monitor, op, clock } = harness();
    const held = monitor.run(op, 1, undefined);
    await clock.advance(50);
    monitor.close();
    await assert.rejects(held, RequestDroppedError);
  });

  it('corrupt data fails the read at once whatever the policy, counted and reported', async () => {
    const corrupt = () => new StoreError('get', 'k', { cause: new DataCorruptError('extent 3 of v1: CRC32C mismatch') });
    const { monitor, op, events, state } = harness({ timeout: 'forever' }, corrupt);
    await assert.rejects(monitor.run(op, 1, undefined), failedWith('corrupt'));
    assert.equal(state.calls, 1);
    assert.equal(monitor.counters.storageErrors.corrupt, 1);
    assert.deepEqual(edges(events), ['data-corrupt']);
    assert.equal(monitor.state, 'normal');
    monitor.close();
  });
});

describe('a store that does not answer', () => {
  /** Every attempt stays unanswered until `answer` is called. */
  function silent(timeout: number) {
    const h = harness({ timeout });
    let answer: (() => void) | undefined;
    const unanswered = () =>
      new Promise<string>((resolve) => {
        answer = () => {
          resolve('data');
        };
      });
    return {
      ...h,
      unanswered,
      answer: () => {
        answer?.();
      },
    };
  }

  it('holds a read after a second without an answer, and completes it when the answer comes', async () => {
    const { monitor, events, unanswered, answer, clock } = silent(60_000);
    const read = outcome(monitor.run(unanswered, 4096, undefined));
    await clock.advance(STALL_MS - 1);
    assert.equal(monitor.state, 'normal', 'a slow answer is not yet a hang');
    await clock.advance(1);
    assert.equal(monitor.state, 'hang');
    assert.deepEqual(monitor.snapshot().held, { requests: 1, bytes: 4096 });
    assert.equal(events.find((e) => e.kind === 'io-hang')?.errorClass, 'transient');
    answer();
    await settle();
    assert.equal(read.value, 'data');
    assert.equal(monitor.state, 'normal');
    assert.ok(events.some((e) => e.kind === 'storage-unavailable' && !e.set));
    monitor.close();
  });

  it('the timeout fails a read on time while its attempt is still unanswered', async () => {
    const { monitor, unanswered, clock } = silent(1500);
    const read = outcome(monitor.run(unanswered, 4096, undefined));
    await clock.advance(STALL_MS + 1499);
    assert.equal(read.settled, false);
    await clock.advance(1);
    assert.ok(failedWith('timeout')(read.error), 'held at 1 s, so the 1.5 s timeout runs from there');
    assert.equal(monitor.state, 'timed-out');
    monitor.close();
  });

  it('pause and a disconnect reach a read whose attempt is unanswered', async () => {
    const { monitor, unanswered, clock } = silent(60_000);
    const paused = outcome(monitor.run(unanswered, 4096, undefined));
    await clock.advance(STALL_MS + 100);
    assert.equal(monitor.pause(BY), 1);
    await settle();
    assert.ok(failedWith('paused')(paused.error));
    monitor.resume(BY);
    const ac = new AbortController();
    const dropped = outcome(monitor.run(unanswered, 4096, ac.signal));
    await clock.advance(STALL_MS + 100);
    assert.equal(monitor.snapshot().held.requests, 1);
    ac.abort();
    await settle();
    assert.ok(dropped.error instanceof RequestAbortedError);
    assert.equal(monitor.snapshot().held.requests, 0);
    monitor.close();
  });
});

describe('abandoned store attempts', () => {
  it('the attempt under way is aborted when its read stops waiting for it, and that is no storage failure', async () => {
    const { monitor, clock, events } = harness({ timeout: 60_000 });
    const signals: AbortSignal[] = [];
    const unanswered = (signal: AbortSignal) =>
      new Promise<string>((_, reject) => {
        signals.push(signal);
        signal.addEventListener('abort', () => {
          reject(new StoreError('get', 'k', { cause: Object.assign(new Error('aborted'), { name: 'AbortError' }) }));
        });
      });
    const client = new AbortController();
    const first = outcome(monitor.run(unanswered, 1, client.signal));
    await clock.advance(10);
    client.abort();
    await settle();
    assert.ok(first.error instanceof RequestAbortedError);
    assert.equal(signals[0]?.aborted, true, 'a client that left aborts the attempt');
    assert.equal(monitor.counters.storageErrors.transient, 0, 'the abort is not counted as a store failure');
    assert.equal(events.length, 0);

    const held = outcome(monitor.run(unanswered, 1, undefined));
    await clock.advance(STALL_MS);
    assert.equal(monitor.state, 'hang');
    assert.equal(monitor.release(BY), 1);
    await settle();
    assert.ok(failedWith('released')(held.error));
    assert.equal(signals[1]?.aborted, true, 'a released read aborts its attempt');
    monitor.close();
  });
});
