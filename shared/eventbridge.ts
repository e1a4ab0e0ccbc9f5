import { z } from 'zod';
import { HoldfastEventSchema, type HoldfastEvent, type HoldfastEventKind } from './events.js';

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

/** The kinds a person is alerted about (journal pressure is a metric, not a page). */
export const ALERT_KINDS = ['io-hang', 'io-hang-timeout', 'storage-unavailable'] as const satisfies readonly HoldfastEventKind[];

/** Event bus names as EventBridge accepts them in PutEvents: a name or a bus ARN. */
export const EVENT_BUS_NAME = /^(?:[/.\-_A-Za-z0-9]{1,256}|arn:aws[\w-]*:events:[\w-]+:\d{12}:event-bus\/[/.\-_A-Za-z0-9]{1,256})$/;

/**
 * EventBridge's envelope around a Holdfast event, as a Lambda target receives it. The detail must
 * be a valid event and its DetailType the one its kind is published under, so that an event routed
 * by the wrong rule or forged with a mismatched type is rejected rather than mis-reported.
 */
export const HoldfastEnvelopeSchema = z
  .object({
    version: z.string(),
    id: z.string().min(1),
    'detail-type': z.string(),
    source: z.literal(EVENT_SOURCE),
    account: z.string(),
    time: z.string(),
    region: z.string(),
    resources: z.array(z.string()),
    detail: HoldfastEventSchema,
  })
  .refine((e) => e['detail-type'] === DETAIL_TYPES[e.detail.kind], {
    message: 'detail-type does not match the kind of the event in detail',
    path: ['detail-type'],
  });

export type HoldfastEnvelope = z.infer<typeof HoldfastEnvelopeSchema>;

export function detailTypeOf(event: HoldfastEvent): DetailType {
  return DETAIL_TYPES[event.kind];
}
