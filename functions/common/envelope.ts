import { EventBridgeSchema } from '@aws-lambda-powertools/parser/schemas/eventbridge';
import { z } from 'zod';
import { DETAIL_TYPES, EVENT_SOURCE } from '../../shared/eventbridge.js';
import { HoldfastEventSchema } from '../../shared/events.js';

/**
 * EventBridge's envelope around a Holdfast event, as a rule target receives it: Powertools'
 * EventBridge schema with our source and our event (the gateway's own schema) as detail. The
 * DetailType must be the one the event's kind is published under, so that an event routed by the
 * wrong rule or forged with a mismatched type is rejected rather than mis-reported.
 */
export const HoldfastEnvelopeSchema = EventBridgeSchema.extend({
  source: z.literal(EVENT_SOURCE),
  detail: HoldfastEventSchema,
}).refine((e) => e['detail-type'] === DETAIL_TYPES[e.detail.kind], {
  error: 'detail-type does not match the kind of the event in detail',
  path: ['detail-type'],
});

export type HoldfastEnvelope = z.infer<typeof HoldfastEnvelopeSchema>;
