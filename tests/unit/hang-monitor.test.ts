import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { RequestAbortedError, JournalIoError } from '../../shared/errors.js';
import type { HoldfastEvent } from '../../shared/events.js';
import { DEFAULT_HANG_POLICY, type HangPolicy } from '../../shared/hang-policy.js';
import { StorageFailedError } from '../../gateway/hang/errors.js';
import { classifyError } from '../../gateway/hang/classify.js';
import { HangMonitor } from '../../gateway/hang/hang-monitor.js';
import { StoreError } from '../../gateway/store/object-store.js';

const logger = pino({ level: 'silent' });
const refused = () => new StoreError('get', 'k', { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }) });
const denied = () => new StoreError('get', 'k', { cause: Object.assign(new Error('Access Denied'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } }) });

/** A store that fails while `down` is set; the monitor's probe asks it too. */
function harness(policy: Partial<HangPolicy> = {}, makeError: () => Error = refused) {
  const events: HoldfastEvent[] = [];
  const state = { down: true, calls: 0 };
  const monitor = new HangMonitor({
    volume: 'v1',
    gateway: 'gw-test',
    policy: { ...DEFAULT_HANG_POLICY, retryMaxMs: 200, ...policy },
    probe: async () => {
      if (state.down) throw makeError();
    },
    journal: { held: () => ({ requests: 0, bytes: 0 }), failWaiters: () => undefined, usage: () => ({ bytes: 0, limit: 100 }) },
    events: { publish: (e) => events.push(e), close: async () => undefined },
    logger,
    probeIntervalMs: 20,
    retryInitialMs: 10,
  });
  const op = async () => {
    state.calls++;
    if (state.down) throw makeError();
    return 'data';
  };
  return { monitor, events, state, op };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const kinds = (events: HoldfastEvent[]) => events.map((e) => `${e.kind}:${'set' in e ? e.set : 'level' in e ? e.level : ''}`);

test('a transient failure is held and completes once the store answers, with events for both edges', async () => {
  const { monitor, events, state, op } = harness();
  const read = monitor.run(op, 4096, undefined);
  await sleep(100);
  assert.equal(monitor.state, 'hang');
  assert.deepEqual(monitor.snapshot().held, { requests: 1, bytes: 4096 });
  state.down = false;
  const recoveredAt = Date.now();
  assert.equal(await read, 'data');
  // Recovery is noticed by the probe (every 20 ms here), not by the request's back-off (up to 200 ms).
  assert.ok(Date.now() - recoveredAt < 150, `completed ${Date.now() - recoveredAt} ms after recovery`);
  assert.equal(monitor.state, 'normal');
  assert.deepEqual(kinds(events), ['storage-unavailable:true', 'io-hang:true', 'storage-unavailable:false', 'io-hang:false']);
  const end = events.find((e) => e.kind === 'io-hang' && !e.set);
  assert.ok(end && 'durationMs' in end && end.durationMs >= 90);
  const begin = events.find((e) => e.kind === 'io-hang' && e.set)!;
  assert.equal(begin.episode, end!.episode);
  assert.equal(begin.volume, 'v1');
  assert.equal(begin.gateway, 'gw-test');
  assert.equal(begin.errorClass, 'transient');
  assert.match(begin.lastError ?? '', /ECONNREFUSED/);
  assert.ok(monitor.counters.retries > 0);
  monitor.close();
});

test('denied fails at once by default and is held when the policy says hold', async () => {
  const a = harness({}, denied);
  await assert.rejects(a.monitor.run(a.op, 1, undefined), (e: unknown) => e instanceof StorageFailedError && e.reason === 'policy' && e.errorClass === 'denied');
  assert.equal(a.state.calls, 1);
  a.monitor.close();

  const b = harness({ classes: { ...DEFAULT_HANG_POLICY.classes, denied: 'hold' } }, denied);
  const read = b.monitor.run(b.op, 1, undefined);
  await sleep(60);
  assert.equal(b.monitor.state, 'hang');
  b.state.down = false;
  assert.equal(await read, 'data');
  b.monitor.close();
});

test('timeout off: nothing is held', async () => {
  const { monitor, op, events } = harness({ timeout: 'off' });
  await assert.rejects(monitor.run(op, 1, undefined), StorageFailedError);
  assert.equal(events.filter((e) => e.kind === 'io-hang').length, 0);
  monitor.close();
});

test('the hang timeout fires on its timer, fails held requests, fails fast until storage answers', async () => {
  const { monitor, events, state, op } = harness({ timeout: 300 });
  const started = Date.now();
  const results = await Promise.allSettled([monitor.run(op, 1, undefined), monitor.run(op, 1, undefined)]);
  const elapsed = Date.now() - started;
  // Within 100 ms of the deadline (the behaviour's own bound); the probe interval is 20 ms.
  assert.ok(elapsed >= 290 && elapsed < 400, `held requests failed after ${elapsed} ms for a 300 ms timeout`);
  for (const r of results) assert.ok(r.status === 'rejected' && r.reason instanceof StorageFailedError && r.reason.reason === 'timeout');
  assert.equal(monitor.state, 'timed-out');
  const callsBefore = state.calls;
  await assert.rejects(monitor.run(op, 1, undefined), (e: unknown) => e instanceof StorageFailedError && e.reason === 'timed-out');
  assert.equal(state.calls, callsBefore, 'a timed-out volume fails fast without asking the store');
  state.down = false;
  await sleep(80);
  assert.equal(monitor.state, 'normal');
  assert.equal(await monitor.run(op, 1, undefined), 'data');
  assert.deepEqual(kinds(events).filter((k) => k.startsWith('io-hang')), ['io-hang:true', 'io-hang-timeout:true', 'io-hang:false', 'io-hang-timeout:false']);
  assert.equal(monitor.counters.timeouts, 1);
  monitor.close();
});

test('changing the timeout applies to the running episode, counted from its start', async () => {
  const { monitor, op } = harness({ timeout: 60_000 });
  const started = Date.now();
  const read = monitor.run(op, 1, undefined);
  await sleep(150);
  monitor.setPolicy({ ...monitor.policy, timeout: 250 });
  await assert.rejects(read, (e: unknown) => e instanceof StorageFailedError && e.reason === 'timeout');
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 240 && elapsed < 350, `failed after ${elapsed} ms, expected about 250 from the episode start`);
  monitor.close();
});

test('pause completes held requests now and stops holding until resume; release fails them once', async () => {
  const { monitor, op, state } = harness();
  const held = monitor.run(op, 1, undefined);
  await sleep(50);
  assert.equal(monitor.pause(), 1);
  await assert.rejects(held, (e: unknown) => e instanceof StorageFailedError && e.reason === 'paused');
  await assert.rejects(monitor.run(op, 1, undefined), (e: unknown) => e instanceof StorageFailedError && e.reason === 'paused');
  monitor.resume();
  const again = monitor.run(op, 1, undefined);
  await sleep(50);
  assert.equal(monitor.state, 'hang');
  assert.equal(monitor.release(), 1);
  await assert.rejects(again, (e: unknown) => e instanceof StorageFailedError && e.reason === 'released');
  const third = monitor.run(op, 1, undefined);
  await sleep(50);
  assert.equal(monitor.snapshot().held.requests, 1, 'after release, new failures are held again');
  state.down = false;
  assert.equal(await third, 'data');
  monitor.close();
});

test('a held request whose client disconnects is dropped and never retried', async () => {
  const { monitor, op, state } = harness();
  const ac = new AbortController();
  const held = monitor.run(op, 1, ac.signal);
  await sleep(50);
  ac.abort();
  await assert.rejects(held, RequestAbortedError);
  const calls = state.calls;
  await sleep(100);
  assert.equal(state.calls, calls, 'no retry after the client went away');
  assert.equal(monitor.snapshot().held.requests, 0);
  monitor.close();
});

test('errors are classified by cause', () => {
  const sdk = (name: string, status?: number) => new StoreError('put', 'k', { cause: Object.assign(new Error(name), { name, ...(status ? { $metadata: { httpStatusCode: status } } : {}) }) });
  const sys = (code: string) => Object.assign(new Error(code), { code });
  assert.equal(classifyError(refused()), 'transient');
  assert.equal(classifyError(new StoreError('get', 'k', { cause: sys('ECONNRESET') })), 'transient');
  assert.equal(classifyError(new StoreError('get', 'k', { cause: sys('ENOTFOUND') })), 'transient');
  assert.equal(classifyError(sdk('TimeoutError')), 'transient');
  assert.equal(classifyError(sdk('SlowDown', 503)), 'transient');
  assert.equal(classifyError(sdk('InternalError', 500)), 'transient');
  assert.equal(classifyError(sdk('Unknown', 502)), 'transient');
  assert.equal(classifyError(sdk('Unknown', 504)), 'transient');
  assert.equal(classifyError(sdk('RequestTimeout', 400)), 'transient');
  assert.equal(classifyError(denied()), 'denied');
  assert.equal(classifyError(sdk('ExpiredToken', 400)), 'denied');
  assert.equal(classifyError(sdk('CredentialsProviderError')), 'denied');
  assert.equal(classifyError(sdk('NoSuchBucket', 404)), 'missing');
  assert.equal(classifyError(sdk('InvalidArgument', 400)), 'invalid');
  assert.equal(classifyError(new JournalIoError('sync failed', { cause: sys('EIO') })), 'io');
  assert.equal(classifyError(new JournalIoError('write failed', { cause: sys('ENOSPC') })), 'no-space');
  assert.equal(classifyError(new JournalIoError('write failed', { cause: sys('EDQUOT') })), 'no-space');
  assert.equal(classifyError(new StoreError('put', 'k', { cause: sys('EACCES') })), 'denied');
});
