import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import { z } from 'zod';
import { ALERT_KINDS, type HoldfastEnvelope } from '../../shared/eventbridge.js';
import { ConfigError, HoldfastError, errorMessage } from '../../shared/errors.js';
import { holdfastEventValidator, logErrors, type Rejected } from '../common/middleware.js';
import { AlertLedger, alertKey } from './ledger.js';
import { alertMessage, type AlertEvent } from './message.js';

/** Settings from the function's environment (set by the CDK stack). */
const SettingsSchema = z.object({
  ALERT_TOPIC_ARN: z.string().startsWith('arn:', 'ALERT_TOPIC_ARN must be an SNS topic ARN'),
  /** DynamoDB table for idempotency across containers; without it only this container de-duplicates. */
  IDEMPOTENCY_TABLE: z.string().min(1).optional(),
  /** Link put in every alert; `{volume}` and `{gateway}` are replaced. */
  DASHBOARD_URL: z.url().optional(),
});

export type AlertResult =
  | { readonly outcome: 'sent'; readonly key: string; readonly messageId: string }
  | { readonly outcome: 'duplicate'; readonly key: string; readonly firstEventId: string }
  | { readonly outcome: 'ignored'; readonly reason: string }
  | Rejected;

/** SNS refused or failed the publish; `cause` is the SDK error. */
export class AlertPublishError extends HoldfastError {}

const logger = new Logger({ serviceName: 'holdfast-hang-alert' });
// Clients live for the container, so their connections and the ledger's memory serve many invocations.
const sns = new SNSClient({});
const dynamo = new DynamoDBClient({});
let ledger: AlertLedger | undefined;

function settings(): z.infer<typeof SettingsSchema> {
  const parsed = SettingsSchema.safeParse(process.env);
  if (!parsed.success) throw new ConfigError(`hang-alert is misconfigured: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

function isAlertEvent(event: HoldfastEnvelope['detail']): event is AlertEvent {
  return (ALERT_KINDS as readonly string[]).includes(event.kind);
}

async function alert(envelope: HoldfastEnvelope): Promise<AlertResult> {
  const event = envelope.detail;
  if (!isAlertEvent(event)) {
    logger.info('event kind is not alerted on; the rule should not route it here', { kind: event.kind });
    return { outcome: 'ignored', reason: `${event.kind} events are not alerted on` };
  }
  const config = settings();
  ledger ??= new AlertLedger(config.IDEMPOTENCY_TABLE === undefined ? undefined : dynamo, config.IDEMPOTENCY_TABLE);
  const key = alertKey(event);
  const first = await ledger.claim(key, event.id);
  if (first !== undefined) {
    logger.info('duplicate delivery: this edge was alerted already, nothing sent', { key, firstEventId: first, eventBridgeId: envelope.id });
    return { outcome: 'duplicate', key, firstEventId: first };
  }
  const message = alertMessage(event, config.DASHBOARD_URL);
  try {
    const out = await sns.send(
      new PublishCommand({
        TopicArn: config.ALERT_TOPIC_ARN,
        Subject: message.subject,
        Message: message.body,
        MessageAttributes: {
          volume: { DataType: 'String', StringValue: event.volume },
          kind: { DataType: 'String', StringValue: event.kind },
          state: { DataType: 'String', StringValue: event.set ? 'raised' : 'cleared' },
        },
      }),
    );
    logger.info('alert sent', { key, subject: message.subject, messageId: out.MessageId });
    return { outcome: 'sent', key, messageId: out.MessageId ?? '' };
  } catch (err) {
    await ledger.release(key).catch((releaseErr: unknown) => logger.error('could not release the alert claim; a retry will not send it', { key, error: errorMessage(releaseErr) }));
    throw new AlertPublishError(`could not publish the alert for ${key} to ${config.ALERT_TOPIC_ARN}`, { cause: err });
  }
}

/** EventBridge rule target for hang, hang-timeout and storage-unavailable events. */
export const handler = middy<HoldfastEnvelope, AlertResult>()
  .use(injectLambdaContext(logger, { resetKeys: true }))
  .use(logErrors<AlertResult>(logger))
  .use(holdfastEventValidator<AlertResult>(logger))
  .handler(alert);

/** Forgets the container's remembered alerts: a cold start, for tests. */
export function coldStart(): void {
  ledger = undefined;
}
