import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { parser } from '@aws-lambda-powertools/parser/middleware';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { z } from 'zod';
import { ALERT_ROUTES, DEFAULT_ALERT_DEBOUNCE_MS, MAX_ALERT_DEBOUNCE_MS } from '../../shared/eventbridge.js';
import { ConfigError, HoldfastError } from '../../shared/errors.js';
import { HoldfastEnvelopeSchema, type HoldfastEnvelope } from '../common/envelope.js';
import { idempotentOnEventId } from '../common/idempotency.js';
import { logErrors, rejectInvalidEvents, type Rejected, type SafeParsed } from '../common/middleware.js';
import { BriefEpisodeFilter } from './brief-episodes.js';
import { alertMessage, incidentMessage, type AlertEvent, type AlertMessage, type IncidentEvent } from './message.js';

/** Settings from the function's environment (set by the CDK stack). */
const SettingsSchema = z.object({
  ALERT_TOPIC_ARN: z.string().startsWith('arn:', 'ALERT_TOPIC_ARN must be an SNS topic ARN'),
  /** DynamoDB table of Powertools' idempotency records and of the episodes being debounced. */
  IDEMPOTENCY_TABLE: z.string().min(1),
  /** A hang or outage shorter than this pages nobody. */
  ALERT_DEBOUNCE_MS: z.coerce.number().int().min(0).max(MAX_ALERT_DEBOUNCE_MS).default(DEFAULT_ALERT_DEBOUNCE_MS),
  /** Link put in every alert; `{volume}` and `{gateway}` are replaced. */
  DASHBOARD_URL: z.url().optional(),
});
type Settings = z.infer<typeof SettingsSchema>;

export type AlertResult =
  | { readonly outcome: 'sent'; readonly subject: string; readonly messageId: string }
  /** A brief episode: nobody is paged for it, neither its start nor its end. */
  | { readonly outcome: 'brief'; readonly reason: string }
  | { readonly outcome: 'ignored'; readonly reason: string }
  | Rejected;

/** SNS refused or failed the publish; `cause` is the SDK error. */
export class AlertPublishError extends HoldfastError {}

/** Time left for the SNS publish after waiting out a debounce. */
const PUBLISH_MARGIN_MS = 5000;

const logger = new Logger({ serviceName: 'holdfast-hang-alert' });

function settings(): Settings {
  const parsed = SettingsSchema.safeParse(process.env);
  if (!parsed.success)
    throw new ConfigError(`hang-alert is misconfigured: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

function isIncident(event: HoldfastEnvelope['detail']): event is IncidentEvent {
  return event.kind === 'volume-deposed' || event.kind === 'data-corrupt';
}

function isAlertEvent(event: HoldfastEnvelope['detail']): event is AlertEvent {
  return ALERT_ROUTES[event.kind] !== 'metric' && 'set' in event;
}

/**
 * One container's handler: its settings, clients and middlewares, built at its first invocation.
 * The envelope is parsed by Powertools' parser; a bad one is answered, never retried; Powertools
 * Idempotency on the Holdfast event id makes a redelivered event (or one the gateway put twice)
 * alert once, and lets a failed publish be retried.
 */
function createHandler() {
  const config = settings();
  const sns = new SNSClient({});
  const dynamo = new DynamoDBClient({});
  const episodes = new BriefEpisodeFilter(dynamo, config.IDEMPOTENCY_TABLE, config.ALERT_DEBOUNCE_MS);

  async function alert(envelope: HoldfastEnvelope, context: Context): Promise<AlertResult> {
    const event = envelope.detail;
    if (isIncident(event)) return publish(event, 'raised', incidentMessage(event, config.DASHBOARD_URL));
    if (!isAlertEvent(event)) {
      logger.info('event kind is not alerted on; the rule should not route it here', { kind: event.kind });
      return { outcome: 'ignored', reason: `${event.kind} events are not alerted on` };
    }
    if (ALERT_ROUTES[event.kind] === 'page-unless-brief') {
      const page = event.set
        ? await episodes.raise(event, context.getRemainingTimeInMillis() - PUBLISH_MARGIN_MS)
        : await episodes.clear(event);
      if (!page) {
        const reason = event.set ? `the episode ended within ${config.ALERT_DEBOUNCE_MS} ms` : 'its start paged nobody (a brief episode)';
        logger.info('brief episode: nobody is paged', { kind: event.kind, set: event.set, reason });
        return { outcome: 'brief', reason };
      }
    }
    return publish(event, event.set ? 'raised' : 'cleared', alertMessage(event, config.DASHBOARD_URL));
  }

  async function publish(event: AlertEvent | IncidentEvent, state: 'raised' | 'cleared', message: AlertMessage): Promise<AlertResult> {
    try {
      const out = await sns.send(
        new PublishCommand({
          TopicArn: config.ALERT_TOPIC_ARN,
          Subject: message.subject,
          Message: message.body,
          MessageAttributes: {
            volume: { DataType: 'String', StringValue: event.volume },
            kind: { DataType: 'String', StringValue: event.kind },
            state: { DataType: 'String', StringValue: state },
          },
        }),
      );
      logger.info('alert sent', { subject: message.subject, messageId: out.MessageId });
      return { outcome: 'sent', subject: message.subject, messageId: out.MessageId ?? '' };
    } catch (err) {
      throw new AlertPublishError(`could not publish the ${event.kind} alert of episode ${event.episode} to ${config.ALERT_TOPIC_ARN}`, {
        cause: err,
      });
    }
  }

  return middy<SafeParsed, AlertResult>()
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logErrors(logger))
    .use(parser({ schema: HoldfastEnvelopeSchema, safeParse: true }))
    .use(rejectInvalidEvents<AlertResult>(logger))
    .use(idempotentOnEventId(dynamo, config.IDEMPOTENCY_TABLE))
    .handler((event, context) => alert(event as unknown as HoldfastEnvelope, context));
}

let container: ReturnType<typeof createHandler> | undefined;

/** EventBridge rule target for the kinds ALERT_ROUTES pages on. */
export const handler = (event: unknown, context: Context): Promise<AlertResult> => {
  container ??= createHandler();
  return container(event as Parameters<typeof container>[0], context);
};

/** Forgets the container: the next invocation is a cold start (tests change the settings between them). */
export function coldStart(): void {
  container = undefined;
}
