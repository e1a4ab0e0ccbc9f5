import type { HoldfastEvent, HoldfastEventKind } from './events.js';

/**
 * How Holdfast events travel through EventBridge: the gateway's sink puts them with this Source and
 * DetailType and the event itself as Detail; the CDK rules match on the same constants and the
 * Lambda functions validate what they receive with the same schema.
 */
export const EVENT_SOURCE = 'holdfast.gateway';

export const DETAIL_TYPES = {
  'io-hang': 'Volume IO Hang',
  'io-hang-timeout': 'Volume IO Hang Timeout',
  'storage-unavailable': 'Volume Storage Unavailable',
  'journal-pressure': 'Volume Journal Pressure',
  'volume-deposed': 'Volume Deposed',
  'volume-paused': 'Volume Paused',
  'volume-resumed': 'Volume Resumed',
  'held-released': 'Volume Held Requests Released',
  'data-corrupt': 'Volume Data Corrupt',
} as const satisfies Record<HoldfastEventKind, string>;

export type DetailType = (typeof DETAIL_TYPES)[HoldfastEventKind];

/**
 * What the alerting does with each kind of event: `page` alerts at once; `page-unless-brief` alerts
 * only when the episode outlasts the debounce (a hang or outage shorter than it pages nobody, and
 * its all-clear is not sent either); `metric` is counted, never alerted. The CDK rules route by it.
 */
export type AlertRoute = 'page' | 'page-unless-brief' | 'metric';

export const ALERT_ROUTES = {
  'io-hang': 'page-unless-brief',
  'storage-unavailable': 'page-unless-brief',
  // Guest I/O is failing: no reason to wait.
  'io-hang-timeout': 'page',
  'journal-pressure': 'metric',
  // One-off incidents with no clear edge: another gateway took the volume; stored data failed its CRC.
  'volume-deposed': 'page',
  'data-corrupt': 'page',
  // Operator actions: counted; who asked is in the event and the log.
  'volume-paused': 'metric',
  'volume-resumed': 'metric',
  'held-released': 'metric',
} as const satisfies Record<HoldfastEventKind, AlertRoute>;

/** The kinds the alert function receives. */
export const ALERT_KINDS = (Object.keys(ALERT_ROUTES) as HoldfastEventKind[]).filter((k) => ALERT_ROUTES[k] !== 'metric');

/** How long a hang or an outage must last before anyone is paged (CDK context alertDebounce). */
export const DEFAULT_ALERT_DEBOUNCE_MS = 2000;
/** Waiting longer would take most of the alert function's 30 s. */
export const MAX_ALERT_DEBOUNCE_MS = 10_000;

/** Event bus names as EventBridge accepts them in PutEvents: a name or a bus ARN. */
export const EVENT_BUS_NAME = /^(?:[/.\-_A-Za-z0-9]{1,256}|arn:aws[\w-]*:events:[\w-]+:\d{12}:event-bus\/[/.\-_A-Za-z0-9]{1,256})$/;

export function detailTypeOf(event: HoldfastEvent): DetailType {
  return DETAIL_TYPES[event.kind];
}
