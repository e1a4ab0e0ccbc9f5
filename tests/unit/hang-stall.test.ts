import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import type { HoldfastEvent } from '../../shared/events.js';
import { DEFAULT_HANG_POLICY } from '../../shared/hang-policy.js';
import { StorageFailedError } from '../../gateway/hang/errors.js';
import { HangMonitor } from '../../gateway/hang/hang-monitor.js';

/**
 * A store that accepts requests and never answers (a frozen server, a black-holed route): the read
 * waiting on it is held after a second, not only when the SDK gives up, and the timeout, pause and
 * disconnect reach it while its attempt is still unanswered.
 */

const logger = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function harness(timeout: number) {
  const events: HoldfastEvent[] = [];
  let answer: (() => void) | undefined;
  const monitor = new HangMonitor({
    volume: 'v1',
    gateway: 'gw-test',
    policy: { ...DEFAULT_HANG_POLICY, timeout },
    probe: () => new Promise<void>(() => undefined),
    journal: { held: () => ({ requests: 0, bytes: 0 }), failWaiters: () => undefined, usage: () => ({ bytes: 0, limit: 100 }) },
    events: { publish: (e) => events.push(e), close: async () => undefined },
    logger,
    probeIntervalMs: 20,
  });
  const unanswered = () =>
    new Promise<string>((resolve) => {
      answer = () => resolve('data');
    });
  return { monitor, events, unanswered, answer: () => answer?.() };
}

test('a read whose store attempt goes unanswered is held after a second, and completes when the answer comes', async () => {
  const { monitor, events, unanswered, answer } = harness(60_000);
  const read = monitor.run(unanswered, 4096, undefined);
  await sleep(500);
  assert.equal(monitor.state, 'normal', 'a slow answer is not yet a hang');
  await sleep(700);
  assert.equal(monitor.state, 'hang');
  assert.deepEqual(monitor.snapshot().held, { requests: 1, bytes: 4096 });
  const begin = events.find((e) => e.kind === 'io-hang' && e.set);
  assert.equal(begin?.errorClass, 'transient');
  assert.ok(events.some((e) => e.kind === 'storage-unavailable' && e.set));
  answer();
  assert.equal(await read, 'data');
  assert.equal(monitor.state, 'normal');
  assert.ok(events.some((e) => e.kind === 'storage-unavailable' && !e.set));
  monitor.close();
});

test('the hang timeout fails a read on time while its store attempt is still unanswered', async () => {
  const { monitor, unanswered } = harness(1500);
  const started = Date.now();
  const read = monitor.run(unanswered, 4096, undefined);
  await assert.rejects(read, (err: unknown) => err instanceof StorageFailedError && err.reason === 'timeout');
  const elapsed = Date.now() - started;
  // Held at 1 s, so the 1.5 s timeout runs from there.
  assert.ok(elapsed >= 2400 && elapsed < 2700, `failed after ${elapsed} ms`);
  assert.equal(monitor.state, 'timed-out');
  monitor.close();
});

test('pause and a disconnect reach a read whose store attempt is unanswered', async () => {
  const { monitor, unanswered } = harness(60_000);
  const paused = monitor.run(unanswered, 4096, undefined);
  await sleep(1100);
  assert.equal(monitor.pause(), 1);
  await assert.rejects(paused, (err: unknown) => err instanceof StorageFailedError && err.reason === 'paused');
  monitor.resume();

  const ac = new AbortController();
  const dropped = monitor.run(unanswered, 4096, ac.signal);
  await sleep(1100);
  assert.equal(monitor.snapshot().held.requests, 1);
  ac.abort();
  await assert.rejects(dropped, (err: unknown) => err instanceof Error && err.name === 'RequestAbortedError');
  assert.equal(monitor.snapshot().held.requests, 0);
  monitor.close();
});
