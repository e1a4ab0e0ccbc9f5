import { ConditionalCheckFailedException, UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { HoldfastError } from '../../shared/errors.js';
import { REMEMBER_EVENTS_SECONDS } from '../common/idempotency.js';
import type { AlertEvent } from './message.js';

/**
 * EventBridge usually delivers within a second; an all-clear that arrives this much after its
 * episode's debounce still keeps a brief episode from paging.
 */
export const DELIVERY_SLACK_MS = 1000;

/** The episode table could not be asked; `cause` is the DynamoDB error. */
export class EpisodeTableError extends HoldfastError {}

/**
 * Keeps hangs and outages shorter than the debounce from paging anyone. The set edge waits until
 * the episode is debounce (+ delivery slack) old, then claims the page in DynamoDB unless the clear
 * edge has been recorded; the clear edge records itself and sends the all-clear only if the set edge
 * paged. Both are single conditional writes on one item per episode and kind, in the idempotency
 * table beside Powertools' records, so the decision holds across containers and in any order of
 * arrival: a page is always followed by its all-clear, and a brief episode sends neither.
 */
export class BriefEpisodeFilter {
  constructor(
    private readonly dynamo: DynamoDBClient,
    private readonly table: string,
    private readonly debounceMs: number,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  ) {}

  /** The set edge: true when the episode outlasted the debounce and this call claimed its page. */
  async raise(event: AlertEvent, maxWaitMs: number): Promise<boolean> {
    const wait = Math.min(Date.parse(event.time) + this.debounceMs + DELIVERY_SLACK_MS - Date.now(), maxWaitMs);
    if (wait > 0) await this.sleep(wait);
    try {
      await this.update(event, 'paged', 'attribute_not_exists(cleared)');
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      throw new EpisodeTableError(`cannot record the page of ${event.kind} episode ${event.episode} in ${this.table}`, { cause: err });
    }
  }

  /** The clear edge: true when its set edge paged someone, who now needs the all-clear. */
  async clear(event: AlertEvent): Promise<boolean> {
    try {
      const out = await this.update(event, 'cleared', undefined);
      return out.Attributes?.paged?.BOOL === true;
    } catch (err) {
      throw new EpisodeTableError(`cannot record the end of ${event.kind} episode ${event.episode} in ${this.table}`, { cause: err });
    }
  }

  private update(event: AlertEvent, flag: 'paged' | 'cleared', condition: string | undefined) {
    return this.dynamo.send(
      new UpdateItemCommand({
        TableName: this.table,
        Key: { id: { S: `episode#${event.episode}#${event.kind}` } },
        UpdateExpression: 'SET #flag = :true, #expiration = :expiration',
        ...(condition === undefined ? {} : { ConditionExpression: condition }),
        ExpressionAttributeNames: { '#flag': flag, '#expiration': 'expiration' },
        ExpressionAttributeValues: {
          ':true': { BOOL: true },
          ':expiration': { N: String(Math.floor(Date.now() / 1000) + REMEMBER_EVENTS_SECONDS) },
        },
        ReturnValues: 'ALL_OLD',
      }),
    );
  }
}
