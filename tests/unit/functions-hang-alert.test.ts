import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import { ConditionalCheckFailedException, DeleteItemCommand, DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { mockClient } from 'aws-sdk-client-mock';
import { AlertPublishError, coldStart, handler, type AlertResult } from '../../functions/hang-alert/index.js';
import type { HoldfastEnvelope } from '../../shared/eventbridge.js';
import { capturingOutput, delivered, lambdaContext } from '../helpers/lambda.js';
import { sampleEvent } from '../helpers/holdfast-events.js';

const sns = mockClient(SNSClient);
const dynamo = mockClient(DynamoDBClient);
const TOPIC = 'arn:aws:sns:eu-west-1:123456789012:holdfast-alerts';

beforeEach(() => {
  sns.reset();
  dynamo.reset();
  sns.on(PublishCommand).resolves({ MessageId: 'msg-1' });
  dynamo.on(PutItemCommand).resolves({});
  dynamo.on(DeleteItemCommand).resolves({});
  process.env.ALERT_TOPIC_ARN = TOPIC;
  process.env.IDEMPOTENCY_TABLE = 'holdfast-alerts-sent';
  process.env.DASHBOARD_URL = 'https://console.aws.amazon.com/cloudwatch/home#dashboards/dashboard/holdfast?volume={volume}';
  coldStart();
});

/** Invokes the real middy handler the way Lambda does, with what EventBridge delivers. */
const invoke = (event: unknown) => capturingOutput(() => handler(event as HoldfastEnvelope, lambdaContext('hang-alert')));

function value(settled: PromiseSettledResult<AlertResult>): AlertResult {
  if (settled.status === 'rejected') throw settled.reason;
  return settled.value;
}

const hang = () =>
  sampleEvent('db-volume', 0, {
    gateway: 'gw-eu-1',
    time: '2026-11-25T03:00:07.000Z',
    held: { requests: 17, bytes: 69632 },
    lastError: 'object store get volumes/db-volume/extents/000000000042 failed: connect ECONNREFUSED 10.0.3.7:443',
  });

test('a hang alert names the volume, the gateway, since when, what is held, the last error and the dashboard', async () => {
  const event = hang();
  const { settled } = await invoke(delivered(event));
  assert.deepEqual(value(settled), { outcome: 'sent', key: `${event.episode}#io-hang#set`, messageId: 'msg-1' });
  const calls = sns.commandCalls(PublishCommand);
  assert.equal(calls.length, 1);
  const input = calls[0]!.args[0].input;
  assert.equal(input.TopicArn, TOPIC);
  assert.equal(input.Subject, '[Holdfast] I/O HANG: volume db-volume on gw-eu-1 (17 held)');
  const body = input.Message!;
  assert.match(body, /Volume "db-volume" on gateway "gw-eu-1" is HOLDING guest I\/O/);
  assert.match(body, /Since: +2026-11-25T03:00:07\.000Z/);
  assert.match(body, /Held now: +17 requests \(68 KiB\)/);
  assert.match(body, /Error class: +transient/);
  assert.match(body, /Last error: +object store get .*ECONNREFUSED/);
  assert.match(body, /Dashboard: +https:\/\/console\.aws\.amazon\.com\/.*\?volume=db-volume/);
  assert.match(body, /What to do: /);
  assert.deepEqual(input.MessageAttributes?.volume, { DataType: 'String', StringValue: 'db-volume' });

  const put = dynamo.commandCalls(PutItemCommand)[0]!.args[0].input;
  assert.equal(put.TableName, 'holdfast-alerts-sent');
  assert.equal(put.ConditionExpression, 'attribute_not_exists(pk)');
  assert.equal(put.Item?.pk?.S, `${event.episode}#io-hang#set`);
  assert.equal(put.Item?.eventId?.S, event.id);
});

test('the all-clear says how long it lasted; timeout and storage alerts say what they mean', async () => {
  const start = hang();
  const clear = sampleEvent('db-volume', 1, { ...start, id: 'clear-id', set: false, durationMs: 125_400, time: '2026-11-25T03:02:12.400Z', held: { requests: 0, bytes: 0 } });
  const timeout = sampleEvent('db-volume', 2, { kind: 'io-hang-timeout', episode: start.episode });
  const outage = sampleEvent('db-volume', 3, { kind: 'storage-unavailable', errorClass: 'denied', lastError: 'AccessDenied: Access Denied' });
  for (const e of [clear, timeout, outage]) assert.equal(value((await invoke(delivered(e))).settled).outcome, 'sent');
  const [c, t, o] = sns.commandCalls(PublishCommand).map((call) => call.args[0].input);
  assert.equal(c!.Subject, '[Holdfast] RESOLVED I/O HANG: volume db-volume after 2m 5s');
  assert.match(c!.Message!, /Lasted: +2m 5s \(from 2026-11-25T03:00:07\.000Z to 2026-11-25T03:02:12\.400Z\)/);
  assert.doesNotMatch(c!.Message!, /What to do/);
  assert.match(t!.Subject!, /^\[Holdfast\] HANG TIMEOUT - guest I\/O FAILING: volume db-volume/);
  assert.match(t!.Message!, /FAILED with EIO/);
  assert.match(o!.Subject!, /^\[Holdfast\] STORAGE UNAVAILABLE: volume db-volume/);
  assert.match(o!.Message!, /Error class: +denied/);
  for (const m of [c, t, o]) assert.ok(m!.Subject!.length < 100 && /^[\x20-\x7e]+$/.test(m!.Subject!), m!.Subject);
});

test('a duplicate delivery sends no second alert: in the same container, and in another one through the conditional put', async () => {
  const event = hang();
  const first = delivered(event);
  assert.equal(value((await invoke(first)).settled).outcome, 'sent');
  // EventBridge redelivers the same event; the gateway may also put it again with a new EventBridge id.
  assert.equal(value((await invoke(first)).settled).outcome, 'duplicate');
  assert.equal(value((await invoke(delivered(event))).settled).outcome, 'duplicate');
  assert.equal(sns.commandCalls(PublishCommand).length, 1);

  coldStart();
  dynamo.on(PutItemCommand).rejects(new ConditionalCheckFailedException({ message: 'The conditional request failed', $metadata: {}, Item: { eventId: { S: event.id } } }));
  const { settled, lines } = await invoke(delivered(event));
  assert.deepEqual(value(settled), { outcome: 'duplicate', key: `${event.episode}#io-hang#set`, firstEventId: event.id });
  assert.equal(sns.commandCalls(PublishCommand).length, 1);
  assert.ok(lines.some((l) => l.message === 'duplicate delivery: this edge was alerted already, nothing sent' && l.volume === 'db-volume'));
});

test('without an idempotency table the container still de-duplicates, and DynamoDB is never called', async () => {
  delete process.env.IDEMPOTENCY_TABLE;
  const envelope = delivered(hang());
  assert.equal(value((await invoke(envelope)).settled).outcome, 'sent');
  assert.equal(value((await invoke(envelope)).settled).outcome, 'duplicate');
  assert.equal(sns.commandCalls(PublishCommand).length, 1);
  assert.equal(dynamo.calls().length, 0);
});

test('bad events are rejected with a clear log line and a handled result, never thrown', async () => {
  const good = delivered(hang());
  const { volume: _dropped, ...noVolume } = good.detail;
  const bad: [string, unknown][] = [
    ['detail without a volume', { ...good, detail: noVolume }],
    ['detail-type not matching the kind', { ...good, 'detail-type': 'Volume IO Hang Timeout' }],
    ['another source', { ...good, source: 'aws.ec2' }],
    ['not an object', 'hello'],
    ['an empty event', {}],
  ];
  for (const [what, event] of bad) {
    const { settled, lines } = await invoke(event);
    assert.equal(settled.status, 'fulfilled', what);
    const result = value(settled);
    assert.equal(result.outcome, 'rejected', what);
    const line = lines.find((l) => typeof l.message === 'string' && l.message.startsWith('rejected event: not a valid Holdfast event'));
    assert.ok(line, `${what}: a log line says it was rejected`);
    assert.equal(line.level, 'ERROR');
    assert.ok(Array.isArray(line.issues) && line.issues.length > 0, `${what}: the log line says what is wrong`);
  }
  const { lines } = await invoke(bad[0]![1]);
  assert.match(JSON.stringify(lines), /detail\.volume/);
  assert.equal(sns.commandCalls(PublishCommand).length, 0);
  assert.equal(dynamo.calls().length, 0);
});

test('a journal-pressure event routed here by mistake is ignored, not alerted', async () => {
  const event = sampleEvent('v', 0, { kind: 'journal-pressure', level: 'full', journalBytes: 10, journalLimitBytes: 10, set: undefined });
  assert.equal(value((await invoke(delivered(event))).settled).outcome, 'ignored');
  assert.equal(sns.commandCalls(PublishCommand).length, 0);
});

test('when SNS fails the error is logged and thrown for a retry, and the claim is released so that the retry alerts', async () => {
  sns.on(PublishCommand).rejectsOnce(Object.assign(new Error('Rate exceeded'), { name: 'ThrottledException' })).resolves({ MessageId: 'msg-2' });
  const envelope = delivered(hang());
  const { settled, lines } = await invoke(envelope);
  assert.equal(settled.status, 'rejected');
  assert.ok(settled.status === 'rejected' && settled.reason instanceof AlertPublishError && settled.reason.cause instanceof Error);
  assert.ok(lines.some((l) => l.level === 'ERROR' && l.message === 'handler failed; the delivery will be retried'));
  assert.equal(dynamo.commandCalls(DeleteItemCommand).length, 1);
  assert.equal(value((await invoke(envelope)).settled).outcome, 'sent');
  assert.equal(sns.commandCalls(PublishCommand).length, 2);
});
