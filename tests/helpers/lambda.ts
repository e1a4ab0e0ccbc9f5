import { randomUUID } from 'node:crypto';
import type { Context } from 'aws-lambda';
import { toPutEventsEntry } from '../../gateway/events/put-events.js';
import type { HoldfastEnvelope } from '../../functions/common/envelope.js';
import type { HoldfastEvent } from '../../shared/events.js';

/**
 * What a rule target receives for `event`: the gateway sink's real PutEvents entry, wrapped the way
 * EventBridge wraps it (Detail parsed back from its JSON text, DetailType as `detail-type`).
 */
export function delivered(event: HoldfastEvent, overrides: Partial<Record<keyof HoldfastEnvelope, unknown>> = {}): HoldfastEnvelope {
  const entry = toPutEventsEntry(event, 'holdfast-test');
  return {
    version: '0',
    id: randomUUID(),
    'detail-type': entry.DetailType!,
    source: entry.Source!,
    account: '123456789012',
    time: (entry.Time ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    region: 'eu-west-1',
    resources: entry.Resources ?? [],
    detail: JSON.parse(entry.Detail!) as HoldfastEnvelope['detail'],
    ...overrides,
  } as HoldfastEnvelope;
}

export function lambdaContext(functionName: string): Context {
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:eu-west-1:123456789012:function:${functionName}`,
    memoryLimitInMB: '256',
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: '2026/11/25/[$LATEST]test',
    getRemainingTimeInMillis: () => 30_000,
    /* eslint-disable @typescript-eslint/no-deprecated */
    // Deprecated, but the Context type still declares them.
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
    /* eslint-enable @typescript-eslint/no-deprecated */
  };
}

/**
 * Runs `fn` and returns how it settled and what it printed as JSON lines on stdout and stderr (the
 * functions' structured logs — errors go to stderr — and their EMF metric records).
 */
export async function capturingOutput<T>(
  fn: () => Promise<T>,
): Promise<{ settled: PromiseSettledResult<T>; lines: Record<string, unknown>[] }> {
  let text = '';
  const streams = [process.stdout, process.stderr];
  const originals = streams.map((s) => s.write.bind(s));
  for (const s of streams) {
    s.write = (chunk: string | Uint8Array) => {
      text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      return true;
    };
  }
  let settled: PromiseSettledResult<T>;
  try {
    settled = { status: 'fulfilled', value: await fn() };
  } catch (reason) {
    settled = { status: 'rejected', reason };
  } finally {
    streams.forEach((s, i) => (s.write = originals[i]!));
  }
  const lines = text
    .split('\n')
    .filter((l) => l.trim().startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { settled, lines };
}
