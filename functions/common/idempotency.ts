import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { IdempotencyConfig } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import { makeHandlerIdempotent } from '@aws-lambda-powertools/idempotency/middleware';

/**
 * How long a handled event is remembered: longer than EventBridge retries a delivery (the rules'
 * maxEventAge, 2 h) and than a gateway keeps undelivered events in its spill file across a restart.
 */
export const REMEMBER_EVENTS_SECONDS = 24 * 3600;

/**
 * Powertools Idempotency on the Holdfast event id (`detail.id`, one per state change however often
 * EventBridge delivers it or the gateway puts it), in the DynamoDB table the stack creates. A record
 * is "in progress" only until the invocation's own timeout: a function that dies between its claim
 * and its work leaves no lock behind, and the retry does the work.
 */
export function idempotentOnEventId(client: DynamoDBClient, tableName: string) {
  return makeHandlerIdempotent({
    persistenceStore: new DynamoDBPersistenceLayer({ tableName, awsSdkV3Client: client }),
    config: new IdempotencyConfig({
      eventKeyJmesPath: 'detail.id',
      expiresAfterSeconds: REMEMBER_EVENTS_SECONDS,
      throwOnNoIdempotencyKey: true,
    }),
  });
}
