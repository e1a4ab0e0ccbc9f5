import { EventBridgeClient, type EventBridgeClientConfig, type PutEventsRequestEntry } from '@aws-sdk/client-eventbridge';
import { EVENT_SOURCE, detailTypeOf } from '../../shared/eventbridge.js';
import type { HoldfastEvent } from '../../shared/events.js';
import { failFastHttpHandler } from '../util/fail-fast-http.js';

/** PutEvents limits: entries per call, and bytes per call as EventBridge counts them. */
export const MAX_BATCH_ENTRIES = 10;
export const MAX_BATCH_BYTES = 256 * 1024;
/** Longer error texts are cut so that every event fits a call and the queue's memory stays predictable. */
export const MAX_LAST_ERROR_CHARS = 64 * 1024;

/**
 * Entry error codes that will fail the same way however often they are retried; every other code
 * (throttling, internal failures, codes we do not know) is retried, since dropping an alert is worse
 * than sending it late.
 */
export const PERMANENT_ENTRY_ERRORS: ReadonlySet<string> = new Set([
  'InvalidArgument',
  'MalformedDetail',
  'ValidationException',
  'InvalidEventPatternException',
]);

export interface EventBridgeClientOptions {
  /** An EventBridge-compatible endpoint (tests, LocalStack); unset means AWS. */
  readonly endpoint?: string | undefined;
  readonly region?: string | undefined;
  readonly credentials?: EventBridgeClientConfig['credentials'];
  readonly requestTimeoutMs?: number;
}

/**
 * A client whose calls fail fast: one attempt, short timeouts. The sink retries with its own
 * back-off, so SDK retries would only delay the moment it learns that EventBridge is down.
 */
export function createEventBridgeClient(options: EventBridgeClientOptions = {}): EventBridgeClient {
  return new EventBridgeClient({
    endpoint: options.endpoint,
    // SigV4 needs some region even when a local endpoint ignores it.
    region: options.region ?? (options.endpoint === undefined ? undefined : 'us-east-1'),
    credentials: options.credentials,
    maxAttempts: 1,
    requestHandler: failFastHttpHandler({ connectTimeoutMs: 2000, requestTimeoutMs: options.requestTimeoutMs ?? 5000, maxSockets: 4 }),
  });
}

/** The PutEvents entry for one event: what the CDK rules match and the functions validate. */
export function toPutEventsEntry(event: HoldfastEvent, busName: string): PutEventsRequestEntry {
  const detail =
    event.lastError !== null && event.lastError.length > MAX_LAST_ERROR_CHARS
      ? { ...event, lastError: `${event.lastError.slice(0, MAX_LAST_ERROR_CHARS)}… (cut)` }
      : event;
  return {
    Source: EVENT_SOURCE,
    DetailType: detailTypeOf(event),
    Detail: JSON.stringify(detail),
    EventBusName: busName,
    Time: new Date(event.time),
    Resources: [],
  };
}

/** An entry's size as EventBridge counts it against the 256 KiB limit of one PutEvents call. */
export function entrySize(entry: PutEventsRequestEntry): number {
  const bytes = (s: string | undefined) => (s === undefined ? 0 : Buffer.byteLength(s, 'utf8'));
  return (
    (entry.Time === undefined ? 0 : 14) +
    bytes(entry.Source) +
    bytes(entry.DetailType) +
    bytes(entry.Detail) +
    (entry.Resources ?? []).reduce((n, r) => n + bytes(r), 0)
  );
}
