import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { GatewayMetrics } from '../../gateway/admin/metrics.js';
import { EventBridgeSink, type EventBridgeSinkOptions } from '../../gateway/events/eventbridge-sink.js';
import { MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, createEventBridgeClient, entrySize } from '../../gateway/events/put-events.js';
import { DETAIL_TYPES, EVENT_SOURCE } from '../../shared/eventbridge.js';
import { HoldfastEventSchema, type HoldfastEvent } from '../../shared/events.js';
import { FakeEventBridge, TEST_CREDENTIALS, type ReceivedEntry } from '../helpers/eventbridge-server.js';
import { sampleEvent } from '../helpers/holdfast-events.js';

const logger = pino({ level: 'silent' });
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'holdfast-eb-'));
  dirs.push(d);
  return d;
}

function openSink(fake: FakeEventBridge, opts: Partial<EventBridgeSinkOptions> = {}): Promise<EventBridgeSink> {
  return EventBridgeSink.open({
    busName: 'holdfast-test',
    client: createEventBridgeClient({
      endpoint: fake.endpoint,
      region: 'eu-west-1',
      credentials: TEST_CREDENTIALS,
      requestTimeoutMs: 1000,
    }),
    logger,
    retryInitialMs: 20,
    retryMaxMs: 300,
    ...opts,
  });
}

const details = (entries: readonly ReceivedEntry[]): HoldfastEvent[] =>
  entries.map((e) => HoldfastEventSchema.parse(JSON.parse(e.Detail ?? 'null')));

/** The `seq` numbers of each volume's events, in the order EventBridge accepted them. */
function seqByVolume(entries: readonly ReceivedEntry[]): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const e of details(entries)) (out[e.volume] ??= []).push(Number(/seq (\d+)/.exec(e.lastError ?? '')?.[1]));
  return out;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>(
      (_, reject) =>
        (timer = setTimeout(() => {
          reject(new Error(`${what} took over ${ms} ms`));
        }, ms)),
    ),
  ]).finally(() => {
    clearTimeout(timer);
  });
}

test('events are put with the holdfast Source, a DetailType per kind and the event as Detail, in calls of at most 10 entries', async () => {
  const fake = await FakeEventBridge.start();
  const sink = await openSink(fake);
  const published: HoldfastEvent[] = [];
  for (const i of range(24)) {
    const e = sampleEvent(`vol${i % 12}`, Math.floor(i / 12));
    published.push(e);
    sink.publish(e);
  }
  const kinds = [
    sampleEvent('k', 0, { kind: 'io-hang-timeout', set: false, durationMs: 1500 }),
    sampleEvent('k', 1, { kind: 'storage-unavailable' }),
    sampleEvent('k', 2, { kind: 'journal-pressure', level: 'high', journalBytes: 800, journalLimitBytes: 1000, set: undefined }),
  ];
  for (const e of kinds) sink.publish(e);
  await within(5000, sink.idle(), 'delivery');
  await sink.close();
  await fake.stop();

  assert.deepEqual(fake.protocolErrors, []);
  assert.equal(fake.accepted.length, 27);
  assert.ok(fake.calls.every((c) => c.entries.length <= MAX_BATCH_ENTRIES));
  assert.ok(
    fake.calls.some((c) => c.entries.length === MAX_BATCH_ENTRIES),
    'batches are filled',
  );
  for (const entry of fake.accepted) {
    assert.equal(entry.Source, EVENT_SOURCE);
    assert.equal(entry.EventBusName, 'holdfast-test');
    const detail = HoldfastEventSchema.parse(JSON.parse(entry.Detail!));
    assert.equal(entry.DetailType, DETAIL_TYPES[detail.kind]);
  }
  assert.deepEqual(
    details(fake.accepted).find((d) => d.id === published[5]!.id),
    published[5],
  );
  assert.deepEqual(
    kinds.map((k) => fake.accepted.find((a) => (JSON.parse(a.Detail!) as HoldfastEvent).id === k.id)?.DetailType),
    ['Volume IO Hang Timeout', 'Volume Storage Unavailable', 'Volume Journal Pressure'],
  );
  assert.deepEqual(seqByVolume(fake.accepted).vol3, [0, 1]);
  assert.deepEqual(sink.counters(), {
    sink: 'eventbridge',
    delivered: 27,
    retried: 0,
    failedCalls: 0,
    queued: 0,
    dropped: { 'queue-full': 0, rejected: 0, shutdown: 0 },
  });
});

test('a call never exceeds 256 KiB, and an error text too long for one entry is cut', async () => {
  const fake = await FakeEventBridge.start();
  const sink = await openSink(fake);
  for (const i of range(12)) sink.publish(sampleEvent(`big${i}`, 0, { lastError: `seq 0 ${'x'.repeat(40_000)}` }));
  sink.publish(sampleEvent('huge', 0, { lastError: `seq 0 ${'y'.repeat(400_000)}` }));
  await within(5000, sink.idle(), 'delivery');
  await sink.close();
  await fake.stop();
  assert.equal(fake.accepted.length, 13);
  for (const call of fake.calls) {
    const bytes = call.entries.reduce((n, e) => n + entrySize({ ...e, Time: e.Time === undefined ? undefined : new Date() }), 0);
    assert.ok(bytes <= MAX_BATCH_BYTES, `a call of ${bytes} bytes`);
  }
  assert.ok(fake.calls.length >= 3, `${fake.calls.length} calls for 520 KiB of events`);
  const huge = details(fake.accepted).find((d) => d.volume === 'huge')!;
  assert.ok(huge.lastError!.length < 70_000 && huge.lastError!.endsWith('(cut)'));
});

test('entries refused in a partial failure are retried, in order per volume; permanently invalid ones are dropped and counted', async () => {
  const fake = await FakeEventBridge.start();
  fake.behaviour = (entries, call) => {
    if (call === 0) return entries.map((_, i) => (i % 2 === 1 ? { errorCode: 'InternalFailure', errorMessage: 'try again' } : 'ok'));
    if (call === 1) return entries.map((_, i) => (i === 0 ? { errorCode: 'ThrottlingException' } : 'ok'));
    return entries.map((e) => (e.Detail?.includes('poison') ? { errorCode: 'MalformedDetail', errorMessage: 'bad detail' } : 'ok'));
  };
  const sink = await openSink(fake);
  for (const seq of range(5)) for (const v of ['a', 'b', 'c', 'd']) sink.publish(sampleEvent(v, seq));
  sink.publish(sampleEvent('a', 99, { lastError: 'poison' }));
  await within(5000, sink.idle(), 'delivery');
  await sink.close();
  await fake.stop();

  assert.deepEqual(fake.protocolErrors, []);
  assert.equal(fake.calls[0]!.entries.length, 4, 'one entry per volume in a call');
  const seqs = seqByVolume(fake.accepted);
  for (const v of ['a', 'b', 'c', 'd']) assert.deepEqual(seqs[v], [0, 1, 2, 3, 4], `volume ${v}`);
  const c = sink.counters();
  assert.equal(c.delivered, 20);
  assert.equal(c.dropped.rejected, 1);
  assert.ok(c.retried >= 3, `retried ${c.retried}`);
});

test('a throttled call (400 ThrottlingException) is retried with back-off until EventBridge accepts it', async () => {
  const fake = await FakeEventBridge.start();
  const times: number[] = [];
  fake.behaviour = (_entries, call) => {
    times.push(Date.now());
    return call < 4 ? 'throttle' : 'ok';
  };
  const sink = await openSink(fake, { retryInitialMs: 40, retryMaxMs: 400 });
  for (const seq of range(3)) for (const v of ['x', 'y']) sink.publish(sampleEvent(v, seq));
  await within(5000, sink.idle(), 'delivery');
  await sink.close();
  await fake.stop();
  assert.equal(sink.counters().failedCalls, 4);
  assert.deepEqual(seqByVolume(fake.accepted), { x: [0, 1, 2], y: [0, 1, 2] });
  const gaps = times.slice(1, 5).map((t, i) => t - times[i]!);
  assert.ok(
    gaps.every((g) => g >= 15),
    `back-off between attempts: ${gaps.join(', ')} ms`,
  );
  assert.ok(gaps[3]! > gaps[0]!, `back-off grows: ${gaps.join(', ')} ms`);
});

test(
  'endpoint down for 30 s: publish stays instant, nothing is dropped, and everything arrives in order per volume once it is back',
  { timeout: 60_000 },
  async () => {
    const fake = await FakeEventBridge.start();
    const spillDir = tempDir();
    const spillFile = join(spillDir, '.events-spill.jsonl');
    const sink = await openSink(fake, { retryMaxMs: 1000, spillFile });
    sink.publish(sampleEvent('v1', 0));
    await within(5000, sink.idle(), 'first delivery');
    await fake.stop();
    const downAt = Date.now();

    let seq = 1;
    let slowest = 0;
    while (Date.now() - downAt < 30_000) {
      for (const v of ['v1', 'v2', 'v3']) {
        const t0 = process.hrtime.bigint();
        sink.publish(sampleEvent(v, seq));
        slowest = Math.max(slowest, Number(process.hrtime.bigint() - t0) / 1e6);
      }
      seq++;
      await new Promise((r) => setTimeout(r, 2500));
    }
    assert.ok(sink.counters().queued >= 30, `queued ${sink.counters().queued}`);
    assert.ok(sink.counters().failedCalls >= 10, `failed calls ${sink.counters().failedCalls}`);
    const spilled = readFileSync(spillFile, 'utf8').trim().split('\n');
    assert.ok(spilled.length >= sink.counters().queued - 3, 'the outage backlog is mirrored in the spill file');

    await fake.listen();
    const backAt = Date.now();
    await within(10_000, sink.idle(), 'delivery after the endpoint came back');
    const catchUp = Date.now() - backAt;
    await sink.close();
    await fake.stop();

    // publish() never waits for the network: a call that waited for the dead endpoint would take its
    // connect timeout (seconds). The bound is far from that and far above what a busy machine adds to a
    // synchronous call (tens of milliseconds seen with the CPU saturated), so it cannot flake.
    assert.ok(slowest < 500, `slowest publish() during the outage took ${slowest.toFixed(2)} ms`);
    assert.ok(catchUp < 3000, `caught up ${catchUp} ms after the endpoint returned`);
    const expected = range(seq - 1).map((i) => i + 1);
    assert.deepEqual(seqByVolume(fake.accepted), { v1: [0, ...expected], v2: expected, v3: expected });
    assert.deepEqual(sink.counters().dropped, { 'queue-full': 0, rejected: 0, shutdown: 0 });
    assert.equal(existsSync(spillFile), false, 'the spill file is removed once everything is delivered');
  },
);

test('events still queued at close are spilled to the journal directory and sent first by the next run', async () => {
  const fake = await FakeEventBridge.start();
  const port = Number(new URL(fake.endpoint).port);
  await fake.stop();
  const spillFile = join(tempDir(), '.events-spill.jsonl');
  const first = await openSink(fake, { spillFile, closeTimeoutMs: 300 });
  for (const seq of range(4)) first.publish(sampleEvent('v', seq));
  await within(3000, first.close(), 'close');
  assert.equal(readFileSync(spillFile, 'utf8').trim().split('\n').length, 4);
  assert.equal(first.counters().dropped.shutdown, 0);

  const again = await FakeEventBridge.start(port);
  const second = await openSink(again, { spillFile });
  second.publish(sampleEvent('v', 4));
  await within(5000, second.idle(), 'delivery');
  await second.close();
  await again.stop();
  assert.deepEqual(seqByVolume(again.accepted), { v: [0, 1, 2, 3, 4] });
  assert.equal(existsSync(spillFile), false);
});

test('the queue is bounded: past it events are dropped, counted in the metrics, and publish still returns at once', async () => {
  const fake = await FakeEventBridge.start();
  await fake.stop();
  const sink = await openSink(fake, { maxQueuedEvents: 5, closeTimeoutMs: 100 });
  for (const seq of range(8)) sink.publish(sampleEvent('v', seq));
  const metrics = new GatewayMetrics({ volumes: () => [], nbd: () => undefined, events: () => [sink.counters()] });
  const text = await metrics.registry.metrics();
  assert.match(text, /holdfast_events_dropped_total\{sink="eventbridge",reason="queue-full"\} 3/);
  assert.match(text, /holdfast_events_queued\{sink="eventbridge"\} 5/);
  await sink.close();
  assert.equal(sink.counters().dropped.shutdown, 5, 'without a spill file, undelivered events are dropped at close and counted');
});

test('close() is bounded even when the endpoint hangs', async () => {
  const fake = await FakeEventBridge.start();
  fake.behaviour = () => 'hang';
  const sink = await openSink(fake, { closeTimeoutMs: 300 });
  sink.publish(sampleEvent('v', 0));
  await new Promise((r) => setTimeout(r, 50));
  const t0 = Date.now();
  await sink.close();
  assert.ok(Date.now() - t0 < 1500, `close took ${Date.now() - t0} ms`);
  assert.equal(sink.counters().dropped.shutdown, 1);
  await fake.stop();
});
