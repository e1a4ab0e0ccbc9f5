import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { pino } from 'pino';
import { SETTINGS_HELP } from '../../gateway/cli/settings-help.js';
import { envName, flagName, loadConfig } from '../../gateway/config/load-config.js';
import { LogEventSink } from '../../gateway/events/event-sink.js';
import { EventBridgeSink } from '../../gateway/events/eventbridge-sink.js';
import { openEventSinks } from '../../gateway/events/open-sinks.js';
import { ConfigError } from '../../shared/errors.js';

const logger = pino({ level: 'silent' });

test('events go to the log by default, and to an EventBridge bus (and the log) when asked', async () => {
  const plain = loadConfig({ flags: {}, env: {} });
  assert.deepEqual(plain.events, { kind: 'log' });
  assert.equal(plain.eventsSpill, false);
  const sinks = await openEventSinks(plain, logger);
  assert.equal(sinks.length, 1);
  assert.ok(sinks[0] instanceof LogEventSink);

  const env = {
    HOLDFAST_EVENTS: 'eventbridge:holdfast-prod',
    HOLDFAST_EVENTS_SPILL: 'true',
    HOLDFAST_EVENTS_ENDPOINT: 'http://127.0.0.1:4010',
    HOLDFAST_DATA_DIR: '/tmp/holdfast-events-config',
  };
  const c = loadConfig({ flags: {}, env });
  assert.deepEqual(c.events, { kind: 'eventbridge', bus: 'holdfast-prod' });
  assert.equal(c.eventsSpill, true);
  assert.equal(c.eventsEndpoint, 'http://127.0.0.1:4010');
  const both = await openEventSinks(c, logger);
  assert.equal(both.length, 2);
  assert.ok(both[1] instanceof EventBridgeSink);
  await Promise.all(both.map((s) => s.close()));

  const arn = 'arn:aws:events:eu-west-1:123456789012:event-bus/holdfast';
  assert.deepEqual(loadConfig({ flags: { events: `eventbridge:${arn}` }, env }).events, { kind: 'eventbridge', bus: arn });
});

test('a bad events setting is reported under the name it was given', () => {
  assert.throws(
    () => loadConfig({ flags: {}, env: { HOLDFAST_EVENTS: 'eventbridge:' } }),
    (e: unknown) =>
      e instanceof ConfigError && /HOLDFAST_EVENTS \(environment\): "eventbridge:" is not log or eventbridge:BUS/.test(e.message),
  );
  assert.throws(
    () => loadConfig({ flags: { events: 'sns:topic' }, env: {} }),
    (e: unknown) => e instanceof ConfigError && /--events: "sns:topic"/.test(e.message),
  );
  assert.throws(
    () => loadConfig({ flags: { eventsEndpoint: 'not a url' }, env: {} }),
    (e: unknown) => e instanceof ConfigError && /--events-endpoint/.test(e.message),
  );
});

test("the README's options table lists every event setting under its flag and environment name", () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  for (const setting of ['events', 'eventsEndpoint', 'eventsSpill'] as const) {
    assert.ok(setting in SETTINGS_HELP);
    assert.match(readme, new RegExp(`\\| \`${flagName(setting)}\` \\| \`${envName(setting)}\``), setting);
  }
});
