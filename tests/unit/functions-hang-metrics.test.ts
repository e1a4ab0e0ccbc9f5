import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { METRICS_NAMESPACE, coldStart, handler, type MetricsResult } from '../../functions/hang-metrics/index.js';
import { type LocalDynamo, startLocalDynamo } from '../helpers/dynamodb-local.js';
import { capturingOutput, delivered, lambdaContext } from '../helpers/lambda.js';
import { sampleEvent } from '../helpers/holdfast-events.js';

interface EmfRecord {
  readonly _aws: { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string; Unit: string }[] }[] };
  readonly [key: string]: unknown;
}

let dynamo: LocalDynamo;
let tables = 0;
before(async () => {
  dynamo = await startLocalDynamo();
});
after(async () => {
  await dynamo.close();
});
beforeEach(async () => {
  process.env.IDEMPOTENCY_TABLE = `holdfast-metrics-idempotency-${tables++}`;
  await dynamo.createTable(process.env.IDEMPOTENCY_TABLE);
  coldStart();
});

/** Invokes the real middy handler and returns its result and the EMF records it printed. */
async function invoke(event: unknown): Promise<{ result: MetricsResult; emf: EmfRecord[] }> {
  const { settled, lines } = await capturingOutput(() => handler(event, lambdaContext('hang-metrics')));
  if (settled.status === 'rejected') throw settled.reason;
  return { result: settled.value, emf: lines.filter((l): l is EmfRecord => '_aws' in l) };
}

/** metric name → value, and the dimension sets it is published under, from one invocation's records. */
function published(emf: EmfRecord[]): { values: Record<string, unknown>; dimensions: string[][]; units: Record<string, string> } {
  const values: Record<string, unknown> = {};
  const units: Record<string, string> = {};
  const dimensions: string[][] = [];
  for (const r of emf) {
    for (const d of r._aws.CloudWatchMetrics) {
      assert.equal(d.Namespace, METRICS_NAMESPACE);
      dimensions.push(...d.Dimensions);
      for (const m of d.Metrics) {
        values[m.Name] = r[m.Name];
        units[m.Name] = m.Unit;
      }
    }
  }
  return { values, dimensions, units };
}

test('a hang becomes an episode count with the requests held, per gateway and per volume', async () => {
  const event = sampleEvent('db-volume', 0, { gateway: 'gw-eu-1', held: { requests: 5, bytes: 20480 } });
  const { result, emf } = await invoke(delivered(event));
  assert.deepEqual(result, { outcome: 'recorded', metrics: ['HangEpisodes', 'HeldRequests'] });
  const p = published(emf);
  assert.deepEqual(p.values, { HangEpisodes: 1, HeldRequests: 5 });
  assert.equal(p.units.HangEpisodes, 'Count');
  assert.ok(
    p.dimensions.some((d) => d.includes('Gateway') && !d.includes('Volume')),
    JSON.stringify(p.dimensions),
  );
  assert.ok(
    p.dimensions.some((d) => d.includes('Gateway') && d.includes('Volume')),
    JSON.stringify(p.dimensions),
  );
  assert.equal(emf[0]!.Gateway, 'gw-eu-1');
  assert.equal(emf[0]!.Volume, 'db-volume');
  assert.equal(emf[0]!.episode, event.episode);
});

test('clears become durations in seconds, timeouts and outages counts, journal pressure a percentage', async () => {
  const cases: [Parameters<typeof sampleEvent>[2], Record<string, number>][] = [
    [{ set: false, durationMs: 12_500 }, { HangSeconds: 12.5 }],
    [{ kind: 'io-hang-timeout' }, { HangTimeouts: 1 }],
    [{ kind: 'io-hang-timeout', set: false, durationMs: 3000 }, { TimedOutSeconds: 3 }],
    [{ kind: 'storage-unavailable' }, { StorageOutages: 1 }],
    [{ kind: 'storage-unavailable', set: false, durationMs: 60_000 }, { StorageUnavailableSeconds: 60 }],
    [{ kind: 'journal-pressure', set: undefined, level: 'high', journalBytes: 800, journalLimitBytes: 1000 }, { JournalUsedPercent: 80 }],
  ];
  for (const [overrides, expected] of cases) {
    const { emf } = await invoke(delivered(sampleEvent('v', 0, overrides)));
    assert.deepEqual(published(emf).values, expected, JSON.stringify(overrides));
  }
});

test('a bad event is rejected with a log line and records no metric', async () => {
  const { settled, lines } = await capturingOutput(() =>
    handler({ source: 'holdfast.gateway', detail: { kind: 'io-hang' } }, lambdaContext('hang-metrics')),
  );
  assert.equal(settled.status, 'fulfilled');
  assert.equal(settled.value.outcome, 'rejected');
  assert.ok(lines.some((l) => l.level === 'ERROR' && String(l.message).startsWith('rejected event')));
  assert.ok(!lines.some((l) => '_aws' in l && JSON.stringify(l).includes('Hang')));
});

test('a redelivered event is counted once, in this container and in the next one', async () => {
  const event = sampleEvent('db-volume', 0, { kind: 'io-hang-timeout' });
  assert.deepEqual(published((await invoke(delivered(event))).emf).values, { HangTimeouts: 1 });
  const again = await invoke(delivered(event));
  assert.deepEqual(again.result, { outcome: 'recorded', metrics: ['HangTimeouts'] }, 'the first result is answered');
  assert.deepEqual(published(again.emf).values, {}, 'and nothing is counted again');
  coldStart();
  assert.deepEqual(published((await invoke(delivered(event))).emf).values, {});
  assert.deepEqual(
    published((await invoke(delivered(sampleEvent('db-volume', 1, { kind: 'io-hang-timeout' })))).emf).values,
    { HangTimeouts: 1 },
    'another event is counted',
  );
});
