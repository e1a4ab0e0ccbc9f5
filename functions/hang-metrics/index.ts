import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit, Metrics } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { parser } from '@aws-lambda-powertools/parser/middleware';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { z } from 'zod';
import { ConfigError } from '../../shared/errors.js';
import type { HoldfastEvent } from '../../shared/events.js';
import { HoldfastEnvelopeSchema, type HoldfastEnvelope } from '../common/envelope.js';
import { idempotentOnEventId } from '../common/idempotency.js';
import { logErrors, rejectInvalidEvents, type Rejected, type SafeParsed } from '../common/middleware.js';

/** The CloudWatch namespace the stack's alarms and the dashboard read. */
export const METRICS_NAMESPACE = 'Holdfast';

type Unit = (typeof MetricUnit)[keyof typeof MetricUnit];

export type MetricsResult = { readonly outcome: 'recorded'; readonly metrics: readonly string[] } | Rejected;

/** Settings from the function's environment (set by the CDK stack). */
const SettingsSchema = z.object({ IDEMPOTENCY_TABLE: z.string().min(1) });

const logger = new Logger({ serviceName: 'holdfast-hang-metrics' });
const metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName: 'holdfast' });

/** Metric name, unit and value for one event: counts on the set edge, durations on the clear edge. */
function measure(event: HoldfastEvent): [string, Unit, number][] {
  switch (event.kind) {
    case 'io-hang':
      return event.set
        ? [
            ['HangEpisodes', MetricUnit.Count, 1],
            ['HeldRequests', MetricUnit.Count, event.held.requests],
          ]
        : [['HangSeconds', MetricUnit.Seconds, event.durationMs / 1000]];
    case 'io-hang-timeout':
      return event.set ? [['HangTimeouts', MetricUnit.Count, 1]] : [['TimedOutSeconds', MetricUnit.Seconds, event.durationMs / 1000]];
    case 'storage-unavailable':
      return event.set
        ? [['StorageOutages', MetricUnit.Count, 1]]
        : [['StorageUnavailableSeconds', MetricUnit.Seconds, event.durationMs / 1000]];
    case 'journal-pressure':
      return [['JournalUsedPercent', MetricUnit.Percent, (100 * event.journalBytes) / event.journalLimitBytes]];
    case 'volume-deposed':
      return [['VolumesDeposed', MetricUnit.Count, 1]];
    case 'volume-paused':
      return [['Pauses', MetricUnit.Count, 1]];
    case 'volume-resumed':
      return [['Resumes', MetricUnit.Count, 1]];
    case 'held-released':
      return [
        ['Releases', MetricUnit.Count, 1],
        ['ReleasedRequests', MetricUnit.Count, event.failed],
      ];
    case 'data-corrupt':
      return [['CorruptData', MetricUnit.Count, 1]];
  }
}

/**
 * Written as CloudWatch embedded metric format in the function's log (no API call, no throttling),
 * under two dimension sets: per gateway — what the stack's alarms watch, whatever the volumes — and
 * per gateway and volume, for the dashboard and for finding the volume.
 */
function record(envelope: HoldfastEnvelope): MetricsResult {
  const event = envelope.detail;
  metrics.addDimension('Gateway', event.gateway);
  metrics.addDimensions({ Gateway: event.gateway, Volume: event.volume });
  const recorded = measure(event);
  for (const [name, unit, value] of recorded) metrics.addMetric(name, unit, value);
  metrics.addMetadata('episode', event.episode);
  metrics.addMetadata('holdfastEventId', event.id);
  logger.info('event recorded as metrics', { kind: event.kind, metrics: recorded.map(([n]) => n) });
  return { outcome: 'recorded', metrics: recorded.map(([n]) => n) };
}

/**
 * One container's handler, built at its first invocation. Powertools Idempotency on the Holdfast
 * event id: a redelivered event is counted once (its first result is answered, no metric written).
 */
function createHandler() {
  const parsed = SettingsSchema.safeParse(process.env);
  if (!parsed.success)
    throw new ConfigError(
      `hang-metrics is misconfigured: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  const dynamo = new DynamoDBClient({});
  return middy<SafeParsed, MetricsResult>()
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logMetrics(metrics))
    .use(logErrors(logger))
    .use(parser({ schema: HoldfastEnvelopeSchema, safeParse: true }))
    .use(rejectInvalidEvents<MetricsResult>(logger))
    .use(idempotentOnEventId(dynamo, parsed.data.IDEMPOTENCY_TABLE))
    .handler((event) => record(event as unknown as HoldfastEnvelope));
}

let container: ReturnType<typeof createHandler> | undefined;

/** EventBridge rule target for every Holdfast event kind. */
export const handler = (event: unknown, context: Context): Promise<MetricsResult> => {
  container ??= createHandler();
  return container(event as Parameters<typeof container>[0], context);
};

/** Forgets the container: the next invocation is a cold start. */
export function coldStart(): void {
  container = undefined;
}
