import { ConditionalCheckFailedException, DeleteItemCommand, PutItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { HoldfastError } from '../../shared/errors.js';
import type { AlertEvent } from './message.js';

/** Remembered keys per container; enough for every edge of a busy night, bounded all the same. */
const LOCAL_KEYS = 10_000;
const KEEP_SECONDS = 7 * 24 * 3600;

/**
 * One alert per edge of an episode: the set and the clear of a hang, a timeout or an outage. The
 * gateway gives each edge one event id, and EventBridge may deliver it more than once (and the
 * gateway may put it twice when a PutEvents answer is lost), so the key is the episode and edge,
 * and the event id is kept with it for the log.
 */
export function alertKey(event: AlertEvent): string {
  return `${event.episode}#${event.kind}#${event.set ? 'set' : 'clear'}`;
}

/** The idempotency table could not be asked; `cause` is the DynamoDB error. */
export class LedgerError extends HoldfastError {}

/**
 * Claims an alert before it is sent. With a table, a DynamoDB conditional put makes the claim hold
 * across containers and cold starts; without one, only this container remembers (duplicates that
 * land on another container, or arrive after a cold start, are sent again).
 */
export class AlertLedger {
  private readonly local = new Map<string, string>();

  constructor(
    private readonly dynamo: DynamoDBClient | undefined,
    private readonly table: string | undefined,
  ) {}

  /** The id of the event that claimed `key` first, or undefined when this call claimed it. */
  async claim(key: string, eventId: string): Promise<string | undefined> {
    const seen = this.local.get(key);
    if (seen !== undefined) return seen;
    if (this.dynamo !== undefined && this.table !== undefined) {
      try {
        await this.dynamo.send(
          new PutItemCommand({
            TableName: this.table,
            Item: { pk: { S: key }, eventId: { S: eventId }, expiresAt: { N: String(Math.floor(Date.now() / 1000) + KEEP_SECONDS) } },
            ConditionExpression: 'attribute_not_exists(pk)',
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
        );
      } catch (err) {
        if (err instanceof ConditionalCheckFailedException) {
          const first = err.Item?.eventId?.S ?? 'unknown';
          this.remember(key, first);
          return first;
        }
        throw new LedgerError(`cannot record alert ${key} in ${this.table}`, { cause: err });
      }
    }
    this.remember(key, eventId);
    return undefined;
  }

  /** Gives a claim back after the alert could not be sent, so that the retry sends it. */
  async release(key: string): Promise<void> {
    this.local.delete(key);
    if (this.dynamo !== undefined && this.table !== undefined) {
      await this.dynamo.send(new DeleteItemCommand({ TableName: this.table, Key: { pk: { S: key } } }));
    }
  }

  private remember(key: string, eventId: string): void {
    this.local.set(key, eventId);
    if (this.local.size > LOCAL_KEYS) this.local.delete(this.local.keys().next().value!);
  }
}
