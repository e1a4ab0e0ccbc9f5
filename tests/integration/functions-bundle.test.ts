import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, test } from 'node:test';
import type { Context } from 'aws-lambda';
import { startLocalDynamo } from '../helpers/dynamodb-local.js';
import { capturingOutput, delivered, lambdaContext } from '../helpers/lambda.js';
import { sampleEvent } from '../helpers/holdfast-events.js';

type BundledHandler = (event: unknown, context: Context) => Promise<{ outcome: string }>;

/** The minified bundle `npm run build` wrote (the test runner builds before the tests). */
async function bundled(name: string): Promise<BundledHandler> {
  const url = new URL(`../../dist/functions/${name}/index.mjs`, import.meta.url);
  assert.ok(existsSync(url), `dist/functions/${name}/index.mjs is missing: run npm run build`);
  assert.ok(existsSync(new URL(`${url.href}.map`)), 'with its source map');
  return ((await import(url.href)) as { handler: BundledHandler }).handler;
}

test('the bundled functions load on their own and run their middleware: a bad event is rejected, a good one recorded once', async () => {
  const dynamo = await startLocalDynamo();
  after(() => dynamo.close());
  await dynamo.createTable('holdfast-bundle-idempotency');
  Object.assign(process.env, {
    IDEMPOTENCY_TABLE: 'holdfast-bundle-idempotency',
    ALERT_TOPIC_ARN: 'arn:aws:sns:eu-west-1:123456789012:holdfast-alerts',
  });
  const alert = await bundled('hang-alert');
  const rejected = await capturingOutput(() => alert({ source: 'holdfast.gateway', detail: {} }, lambdaContext('hang-alert')));
  assert.equal(rejected.settled.status === 'fulfilled' && rejected.settled.value.outcome, 'rejected');
  assert.ok(rejected.lines.some((l) => String(l.message).startsWith('rejected event')));

  const metrics = await bundled('hang-metrics');
  const event = delivered(sampleEvent('vm1', 0, { kind: 'io-hang-timeout' }));
  const recorded = await capturingOutput(() => metrics(event, lambdaContext('hang-metrics')));
  assert.equal(recorded.settled.status === 'fulfilled' && recorded.settled.value.outcome, 'recorded');
  assert.ok(recorded.lines.some((l) => '_aws' in l && l.HangTimeouts === 1));
  const again = await capturingOutput(() => metrics(event, lambdaContext('hang-metrics')));
  assert.ok(
    !again.lines.some((l) => '_aws' in l && l.HangTimeouts === 1),
    'Powertools Idempotency in the bundle: a redelivery is not counted again',
  );
  assert.deepEqual(
    (await dynamo.items('holdfast-bundle-idempotency')).map((r) => r.status),
    ['COMPLETED'],
  );
});
