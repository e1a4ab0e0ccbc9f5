import type { Logger } from '@aws-lambda-powertools/logger';
import type { MiddlewareObj } from '@middy/core';
import { describeError } from '../../shared/errors.js';
import type { HoldfastEnvelope } from './envelope.js';

/** What a function answers for an event it did not act on; returned, not thrown, so nothing retries it. */
export interface Rejected {
  readonly outcome: 'rejected';
  readonly reason: string;
}

/** What Powertools' parser middleware leaves in the event with `safeParse: true`. */
export type SafeParsed = { success: true; data: HoldfastEnvelope } | { success: false; error: Error; originalEvent: unknown };

/** A Standard Schema issue, as Powertools' parser puts them in its ParseError's cause. */
interface SchemaIssue {
  readonly message: string;
  readonly path?: readonly (PropertyKey | { readonly key: PropertyKey })[];
}

/** "detail.volume: Invalid input: expected string, received undefined", one per issue. */
function issuesOf(error: Error): string[] {
  if (!Array.isArray(error.cause)) return [error.message];
  return (error.cause as SchemaIssue[]).map(
    (i) => `${(i.path ?? []).map((p) => String(typeof p === 'object' ? p.key : p)).join('.') || '(event)'}: ${i.message}`,
  );
}

/**
 * Follows Powertools' parser (safeParse): a valid envelope goes on to the handler as the event; a bad
 * one is logged with what is wrong and answered without an error — a retry would fail the same way,
 * and a thrown error would only make Lambda and EventBridge deliver it again and again. It answers
 * before the idempotency middleware, so a bad event leaves no record.
 */
export function rejectInvalidEvents<R>(logger: Logger): MiddlewareObj<SafeParsed, R | Rejected> {
  return {
    name: 'rejectInvalidEvents',
    before: (request) => {
      const parsed = request.event;
      if (parsed.success) {
        const event = parsed.data.detail;
        logger.appendKeys({ volume: event.volume, gateway: event.gateway, episode: event.episode, holdfastEventId: event.id });
        (request as { event: unknown }).event = parsed.data;
        return undefined;
      }
      const issues = issuesOf(parsed.error);
      const delivered = parsed.originalEvent;
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
 * Logs an error that escaped the handler with the event it belongs to — its class and message, the
 * stack only at DEBUG — then lets it propagate: those are the failures worth a retry (SNS or
 * DynamoDB unavailable), which Lambda's asynchronous retries and the rule's dead-letter queue bound.
 */
export function logErrors<E, R>(logger: Logger): MiddlewareObj<E, R> {
  return {
    name: 'logErrors',
    onError: (request) => {
      logger.error('handler failed; the delivery will be retried', {
        err: describeError(request.error, logger.getLevelName() === 'DEBUG' || logger.getLevelName() === 'TRACE'),
      });
    },
  };
}
