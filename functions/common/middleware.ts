import type { Logger } from '@aws-lambda-powertools/logger';
import type { MiddlewareObj } from '@middy/core';
import { HoldfastEnvelopeSchema, type HoldfastEnvelope } from '../../shared/eventbridge.js';

/** What a function answers for an event it did not act on; returned, not thrown, so nothing retries it. */
export interface Rejected {
  readonly outcome: 'rejected';
  readonly reason: string;
}

/**
 * Checks the delivery against the shared event schema (the same zod schema the gateway builds its
 * events with) before the handler runs. A bad event is logged with what is wrong and answered
 * without an error: a retry would fail the same way, and a thrown error would only make Lambda and
 * EventBridge deliver it again and again.
 */
export function holdfastEventValidator<R>(logger: Logger): MiddlewareObj<HoldfastEnvelope, R | Rejected> {
  return {
    name: 'holdfastEventValidator',
    before: (request) => {
      const delivered: unknown = request.event;
      const parsed = HoldfastEnvelopeSchema.safeParse(delivered);
      if (parsed.success) {
        request.event = parsed.data;
        logger.appendKeys({ volume: parsed.data.detail.volume, gateway: parsed.data.detail.gateway, episode: parsed.data.detail.episode, holdfastEventId: parsed.data.detail.id });
        return undefined;
      }
      const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(event)'}: ${i.message}`);
      const envelope = typeof delivered === 'object' && delivered !== null ? (delivered as Record<string, unknown>) : {};
      logger.error('rejected event: not a valid Holdfast event; it is dropped, not retried', {
        eventBridgeId: envelope.id,
        source: envelope.source,
        detailType: envelope['detail-type'],
        issues,
      });
      const rejected: Rejected = { outcome: 'rejected', reason: issues.join('; ') };
      return rejected;
    },
  };
}

/**
 * Logs an error that escaped the handler with the event it belongs to, then lets it propagate:
 * those are the failures worth a retry (SNS or DynamoDB unavailable), which Lambda's asynchronous
 * retries and the rule's dead-letter queue bound.
 */
export function logErrors<R>(logger: Logger): MiddlewareObj<HoldfastEnvelope, R> {
  return {
    name: 'logErrors',
    onError: (request) => {
      logger.error('handler failed; the delivery will be retried', { error: request.error ?? undefined });
    },
  };
}
