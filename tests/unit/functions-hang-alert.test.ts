/**
 * hang-alert through middy as Lambda runs it, with SNS mocked and DynamoDB real (dynalite): messages,
 * the debounce of brief episodes, de-duplication of redelivered events by Powertools Idempotency,
 * retries after a failed or timed-out invocation, and bad events.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { IdempotencyAlreadyInProgressError } from '@aws-lambda-powertools/idempotency';
import { mockClient } from 'aws-sdk-client-mock';
import { AlertPublishError, coldStart, handler, type AlertResult } from '../../functions/hang-alert/index.js';
import type { HoldfastEvent } from '../../shared/events.js';
import { type LocalDynamo, startLocalDynamo } from '../helpers/dynamodb-local.js';
import { capturingOutput, delivered, lambdaContext } from '../helpers/lambda.js';
import { sampleEvent } from '../helpers/holdfast-events.js';

const sns = mockClient(SNSClient);
const TOPIC = 'arn:aws:sns:eu-west-1:123456789012:holdfast-alerts';
/** Short in the tests; the stack's default is 2 s. */
const DEBOUNCE_MS = 300;
let dynamo: LocalDynamo;
let table = '';
let tables = 0;

before(async () => {
  dynamo = await startLocalDynamo();
});
after(async () => {
  await dynamo.close();
});

beforeEach(async () => {
  sns.reset();
  sns.on(PublishCommand).resolves({ MessageId: 'msg-1' });
  // A table per test: what one test remembered must not answer for the next.
  table = `holdfast-idempotency-${tables++}`;
  await dynamo.createTable(table);
  process.env.ALERT_TOPIC_ARN = TOPIC;
  process.env.IDEMPOTENCY_TABLE = table;
  process.env.ALERT_DEBOUNCE_MS = String(DEBOUNCE_MS);
  process.env.DASHBOARD_URL = 'https://console.aws.amazon.com/cloudwatch/home#dashboards/dashboard/holdfast?volume={volume}';
  coldStart();
});

/** Invokes the real middy handler the way Lambda does, with what EventBridge delivers. */
const invoke = (event: unknown, remainingMs = 30_000) =>
  capturingOutput(() => handler(event, { ...lambdaContext('hang-alert'), getRemainingTimeInMillis: () => remainingMs }));

function value(settled: PromiseSettledResult<AlertResult>): AlertResult {
  if (settled.status === 'rejected') throw settled.reason;
  return settled.value;
}

const published = () => sns.commandCalls(PublishCommand).map((c) => c.args[0].input);

/** A hang that started long enough ago to have outlasted the debounce. */
const hang = (overrides: Record<string, unknown> = {}): HoldfastEvent =>
  sampleEvent('db-volume', 0, {
    gateway: 'gw-eu-1',
    time: '2026-11-25T03:00:07.000Z',
    held: { requests: 17, bytes: 69632 },
    lastError: 'object store get volumes/db-volume/extents/000000000042 failed: connect ECONNREFUSED 10.0.3.7:443',
    ...overrides,
  });

const clearOf = (
  start: HoldfastEvent,
  durationMs: number,
  time = new Date(Date.parse(start.time) + durationMs).toISOString(),
): HoldfastEvent =>
  sampleEvent(start.volume, 1, { ...start, id: `${start.id}-clear`, set: false, durationMs, time, held: { requests: 0, bytes: 0 } });

test('a hang alert names the volume, the gateway, since when, what is held, the last error and the dashboard', async () => {
  const { settled } = await invoke(delivered(hang()));
  assert.deepEqual(value(settled), {
    outcome: 'sent',
    subject: '[Holdfast] I/O HANG: volume db-volume on gw-eu-1 (17 held)',
    messageId: 'msg-1',
  });
  const [input] = published();
  assert.equal(published().length, 1);
  assert.equal(input!.TopicArn, TOPIC);
  const body = input!.Message!;
  assert.match(body, /Volume "db-volume" on gateway "gw-eu-1" is HOLDING guest I\/O/);
  assert.match(body, /Since: +2026-11-25T03:00:07\.000Z/);
  assert.match(body, /Held now: +17 requests \(68 KiB\)/);
  assert.match(body, /Error class: +transient/);
  assert.match(body, /Last error: +object store get .*ECONNREFUSED/);
  assert.match(body, /Dashboard: +https:\/\/console\.aws\.amazon\.com\/.*\?volume=db-volume/);
  assert.match(body, /What to do: /);
  assert.deepEqual(input!.MessageAttributes?.volume, { DataType: 'String', StringValue: 'db-volume' });
});

test('the all-clear says how long it lasted; timeout and storage alerts say what they mean', async () => {
  const start = hang();
  const timeout = sampleEvent('db-volume', 2, { kind: 'io-hang-timeout', episode: start.episode });
  const outage = sampleEvent('db-volume', 3, {
    kind: 'storage-unavailable',
    errorClass: 'denied',
    lastError: 'AccessDenied: Access Denied',
    time: '2026-11-25T03:00:00.000Z',
  });
  for (const e of [start, clearOf(start, 125_400), timeout, outage])
    assert.equal(value((await invoke(delivered(e))).settled).outcome, 'sent', e.kind);
  const [, c, t, o] = published();
  assert.equal(c!.Subject, '[Holdfast] RESOLVED I/O HANG: volume db-volume after 2m 5s');
  assert.match(c!.Message!, /Lasted: +2m 5s \(from 2026-11-25T03:00:07\.000Z to 2026-11-25T03:02:12\.400Z\)/);
  assert.doesNotMatch(c!.Message!, /What to do/);
  assert.match(t!.Subject!, /^\[Holdfast\] HANG TIMEOUT - guest I\/O FAILING: volume db-volume/);
  assert.match(o!.Subject!, /^\[Holdfast\] STORAGE UNAVAILABLE: volume db-volume/);
  assert.match(o!.Message!, /Error class: +denied/);
  for (const m of published()) assert.ok(m.Subject!.length < 100 && /^[\x20-\x7e]+$/.test(m.Subject!), m.Subject);
});

test('a hang or an outage shorter than the debounce pages nobody, whichever edge arrives first', async () => {
  for (const kind of ['io-hang', 'storage-unavailable'] as const) {
    // The set edge arrives as it happens and waits out the debounce; the clear arrives meanwhile.
    const start = hang({ kind, time: new Date().toISOString() });
    const raising = invoke(delivered(start));
    await new Promise((r) => setTimeout(r, 50));
    const cleared = await invoke(delivered(clearOf(start, 120)));
    assert.equal(value(cleared.settled).outcome, 'brief', `${kind}: the clear`);
    assert.equal(value((await raising).settled).outcome, 'brief', `${kind}: the set edge`);
    // The other order: the clear is delivered before its set.
    const second = hang({ kind, time: new Date(Date.now() - 5000).toISOString() });
    assert.equal(value((await invoke(delivered(clearOf(second, 900)))).settled).outcome, 'brief');
    assert.equal(value((await invoke(delivered(second))).settled).outcome, 'brief');
  }
  assert.equal(published().length, 0);
});

test('an episode that outlasts the debounce pages once it has, then sends its all-clear', async () => {
  const start = hang({ time: new Date().toISOString() });
  const began = Date.now();
  assert.equal(value((await invoke(delivered(start))).settled).outcome, 'sent');
  // A correctness bound, not a timing: the page waits for the debounce, never less.
  assert.ok(Date.now() - began >= DEBOUNCE_MS - 20, `paged after ${Date.now() - began} ms`);
  assert.equal(value((await invoke(delivered(clearOf(start, 5000)))).settled).outcome, 'sent');
  assert.deepEqual(
    published().map((p) => p.MessageAttributes?.state?.StringValue),
    ['raised', 'cleared'],
  );
});

test('a hang timeout pages at once, without waiting for a debounce', async () => {
  const timeout = sampleEvent('db-volume', 0, { kind: 'io-hang-timeout', time: new Date().toISOString() });
  const { settled } = await invoke(delivered(timeout), DEBOUNCE_MS / 2);
  assert.equal(value(settled).outcome, 'sent');
});

test('a redelivered event alerts once: the same delivery, a new EventBridge id, another container', async () => {
  const event = hang();
  const first = delivered(event);
  assert.equal(value((await invoke(first)).settled).outcome, 'sent');
  assert.equal(value((await invoke(first)).settled).outcome, 'sent', 'the first result is answered again');
  // The gateway put the event again after a lost PutEvents answer: same Holdfast id, new envelope.
  assert.equal(value((await invoke(delivered(event))).settled).outcome, 'sent');
  coldStart();
  assert.equal(value((await invoke(delivered(event))).settled).outcome, 'sent');
  assert.equal(published().length, 1);
  const records = await dynamo.items(table);
  assert.deepEqual(
    records.filter((r) => !r.id!.startsWith('episode#')).map((r) => r.status),
    ['COMPLETED'],
    `one Powertools record: ${JSON.stringify(records)}`,
  );
});

test('a failed publish is thrown for a retry, logged in one line, and the retry alerts', async () => {
  sns
    .on(PublishCommand)
    .rejectsOnce(Object.assign(new Error('Rate exceeded'), { name: 'ThrottledException' }))
    .resolves({ MessageId: 'msg-2' });
  const envelope = delivered(hang());
  const { settled, lines } = await invoke(envelope);
  assert.ok(settled.status === 'rejected' && settled.reason instanceof AlertPublishError && settled.reason.cause instanceof Error);
  const line = lines.find((l) => l.level === 'ERROR' && l.message === 'handler failed; the delivery will be retried');
  assert.ok(line, JSON.stringify(lines));
  assert.deepEqual(line.err, {
    class: 'AlertPublishError',
    message: line.err && (line.err as { message: string }).message,
    cause: { class: 'ThrottledException', message: 'Rate exceeded' },
  });
  assert.equal(value((await invoke(envelope)).settled).outcome, 'sent');
  assert.equal(published().length, 2);
});

/** The hung invocation's timeout in the test below, on a Lambda clock the test advances itself. */
const HUNG_TIMEOUT_MS = 60_000;

test('an invocation that timed out between its claim and its publish does not lock the alert out', async (t) => {
  let calls = 0;
  sns.on(PublishCommand).callsFake(() => (++calls === 1 ? new Promise(() => undefined) : Promise.resolve({ MessageId: 'msg-3' })));
  // DynamoDB's answer to the first claim is held back until `release`: the checks below run while
  // that invocation is, by construction, between its claim and its publish — not within a time.
  let claimed!: () => void;
  const claimWritten = new Promise<void>((resolve) => (claimed = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let holdNextClaim = true;
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called below with the client it belongs to
  const send = DynamoDBClient.prototype.send as (this: DynamoDBClient, command: unknown, ...rest: unknown[]) => Promise<unknown>;
  t.mock.method(DynamoDBClient.prototype, 'send', async function (this: DynamoDBClient, command: unknown, ...rest: unknown[]) {
    const out = await send.call(this, command, ...rest);
    if (holdNextClaim && command instanceof PutItemCommand) {
      holdNextClaim = false;
      claimed();
      await released;
    }
    return out;
  });
  // Lambda's clock for the first invocation: what it has used of its timeout, moved on by the test.
  let elapsedMs = 0;
  const envelope = delivered(sampleEvent('db-volume', 0, { kind: 'io-hang-timeout' }));
  const began = Date.now();
  const first = handler(envelope, { ...lambdaContext('hang-alert'), getRemainingTimeInMillis: () => HUNG_TIMEOUT_MS - elapsedMs }).then(
    () => assert.fail('the hung invocation cannot succeed'),
    (err: unknown) => err,
  );
  // (Should the claim fail instead, `first` settles and the checks below say what is missing.)
  await Promise.race([claimWritten, first]);
  // Its record is in progress, but only until its own deadline: a process Lambda killed outright
  // (no chance to delete it) would not lock the event out for longer.
  const [record] = (await dynamo.items(table)).filter((r) => !r.id!.startsWith('episode#'));
  assert.equal(record?.status, 'INPROGRESS');
  const expiration = Number(record.in_progress_expiration);
  assert.ok(
    began + HUNG_TIMEOUT_MS <= expiration && expiration <= Date.now() + HUNG_TIMEOUT_MS,
    `in progress until ${record.in_progress_expiration}: not the deadline of an invocation started at ${began} (now ${Date.now()})`,
  );
  const early = await invoke(envelope);
  assert.ok(
    early.settled.status === 'rejected' && early.settled.reason instanceof IdempotencyAlreadyInProgressError,
    'while the first still runs, a retry is refused (and retried later by Lambda)',
  );
  // Its claim answered with its time all but used up: SNS never answers its publish, and middy ends
  // it just before Lambda would, as a TimeoutError.
  elapsedMs = HUNG_TIMEOUT_MS - 20;
  release();
  assert.equal(((await first) as Error).name, 'TimeoutError');
  assert.equal(value((await invoke(envelope)).settled).outcome, 'sent');
  assert.equal(calls, 2);
});

test('bad events are rejected with a clear log line and a handled result, never thrown, and leave no record', async () => {
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
    assert.equal(value(settled).outcome, 'rejected', what);
    const line = lines.find((l) => typeof l.message === 'string' && l.message.startsWith('rejected event: not a valid Holdfast event'));
    assert.ok(line, `${what}: a log line says it was rejected`);
    assert.equal(line.level, 'ERROR');
    assert.ok(Array.isArray(line.issues) && line.issues.length > 0, `${what}: the log line says what is wrong`);
  }
  assert.match(JSON.stringify((await invoke(bad[0]![1])).lines), /detail\.volume/);
  assert.equal(published().length, 0);
  assert.deepEqual(await dynamo.items(table), []);
});

test('a journal-pressure event routed here by mistake is ignored, not alerted', async () => {
  const event = sampleEvent('v', 0, { kind: 'journal-pressure', level: 'full', journalBytes: 10, journalLimitBytes: 10, set: undefined });
  assert.equal(value((await invoke(delivered(event))).settled).outcome, 'ignored');
  assert.equal(published().length, 0);
});

test('a volume taken over by another gateway and corrupt data page at once, once each', async () => {
  const deposed = sampleEvent('db-volume', 0, {
    kind: 'volume-deposed',
    set: undefined,
    epoch: 7,
    reason: 'head epoch 8 written by gw-eu-2',
    time: new Date().toISOString(),
  });
  const corrupt = sampleEvent('db-volume', 1, {
    kind: 'data-corrupt',
    set: undefined,
    errorClass: 'corrupt',
    lastError: 'volumes/db-volume/extents/3-9 block 12: CRC32C 0x1 != 0x2',
  });
  for (const e of [deposed, corrupt]) {
    const envelope = delivered(e);
    assert.equal(value((await invoke(envelope, DEBOUNCE_MS / 2)).settled).outcome, 'sent', e.kind);
    assert.equal(value((await invoke(envelope)).settled).outcome, 'sent', `${e.kind} redelivered`);
  }
  const [d, c] = published();
  assert.equal(published().length, 2);
  assert.equal(d!.Subject, '[Holdfast] VOLUME TAKEN OVER: volume db-volume on gw-test');
  assert.match(d!.Message!, /epoch 7: head epoch 8 written by gw-eu-2/);
  assert.equal(c!.Subject, '[Holdfast] DATA CORRUPT: volume db-volume on gw-test');
  assert.match(c!.Message!, /CRC32C 0x1 != 0x2/);
  assert.match(c!.Message!, /What to do: /);
});
