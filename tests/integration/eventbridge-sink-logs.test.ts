/**
 * What an operator reads while EventBridge fails: one log line per failed attempt, with the error's
 * class and message and when the events are sent again; the stack only at debug. The logger is
 * the gateway's (createLogger's serializer), writing into the test.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { EventBridgeSink } from '../../gateway/events/eventbridge-sink.js';
import { createEventBridgeClient } from '../../gateway/events/put-events.js';
import { errorSerializer } from '../../gateway/logger.js';
import { FakeEventBridge, TEST_CREDENTIALS } from '../helpers/eventbridge-server.js';
import { sampleEvent } from '../helpers/holdfast-events.js';

interface Line {
  level: number;
  msg: string;
  attempt?: number;
  retryInMs?: number;
  events?: number;
  refused?: Record<string, number>;
  err?: { class: string; message: string; code?: string; stack?: string };
}

/** A sink on `fake` whose log lines are collected; resolves once `attempts` attempts have failed. */
async function failedAttempts(
  fake: FakeEventBridge,
  level: 'info' | 'debug',
  attempts: number,
): Promise<{ lines: Line[]; failedCalls: number }> {
  const lines: Line[] = [];
  const collect = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Line);
      done();
    },
  });
  const sink = await EventBridgeSink.open({
    busName: 'holdfast-test',
    client: createEventBridgeClient({
      endpoint: fake.endpoint,
      region: 'eu-west-1',
      credentials: TEST_CREDENTIALS,
      requestTimeoutMs: 1000,
    }),
    logger: pino({ level, serializers: { err: errorSerializer(level) } }, collect),
    retryInitialMs: 10,
    retryMaxMs: 40,
    closeTimeoutMs: 0,
  });
  sink.publish(sampleEvent('vol-a', 1));
  sink.publish(sampleEvent('vol-b', 1));
  const deadline = Date.now() + 30_000;
  while (lines.filter((l) => l.attempt !== undefined).length < attempts) {
    if (Date.now() > deadline) assert.fail(`fewer than ${attempts} failed attempts logged: ${JSON.stringify(lines)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  const failedCalls = sink.counters().failedCalls;
  await sink.close();
  return { lines: lines.filter((l) => l.attempt !== undefined), failedCalls };
}

test('an unreachable endpoint: one warning per failed call, class and message, no stack', async () => {
  const fake = await FakeEventBridge.start();
  await fake.stop();
  const { lines } = await failedAttempts(fake, 'info', 4);
  assert.deepEqual(
    lines.slice(0, 4).map((l) => l.attempt),
    [1, 2, 3, 4],
    'one line per attempt, none left out',
  );
  for (const l of lines) {
    assert.equal(l.level, 40);
    assert.equal(l.msg, 'EventBridge PutEvents failed; the events stay queued and are sent again');
    assert.equal(l.err?.class, 'Error');
    assert.match(l.err.message, /ECONNREFUSED/);
    assert.equal(l.err.stack, undefined, 'no stack at info');
    assert.equal(l.events, 2);
    assert.ok(typeof l.retryInMs === 'number' && l.retryInMs <= 40);
  }
});

test('at debug the same lines carry the stack', async () => {
  const fake = await FakeEventBridge.start();
  await fake.stop();
  const { lines } = await failedAttempts(fake, 'debug', 2);
  for (const l of lines) assert.match(l.err?.stack ?? '', /^Error: .*ECONNREFUSED[\s\S]*\n +at /);
});

test('throttled calls and refused entries are named by their error code', async () => {
  const fake = await FakeEventBridge.start();
  try {
    fake.behaviour = (_entries, call) =>
      call % 2 === 0 ? 'throttle' : [{ errorCode: 'InternalFailure' }, { errorCode: 'InternalFailure' }];
    const { lines, failedCalls } = await failedAttempts(fake, 'info', 4);
    const throttled = lines.filter((l) => l.err !== undefined);
    const refused = lines.filter((l) => l.refused !== undefined);
    assert.ok(throttled.length >= 2 && refused.length >= 2, JSON.stringify(lines));
    for (const l of throttled) assert.deepEqual([l.err!.class, l.err!.message], ['ThrottlingException', 'Rate exceeded']);
    for (const l of refused) {
      assert.equal(l.msg, 'EventBridge refused events; they are sent again');
      assert.deepEqual(l.refused, { InternalFailure: 2 });
    }
    assert.ok(failedCalls >= throttled.length);
  } finally {
    await fake.stop();
  }
});
