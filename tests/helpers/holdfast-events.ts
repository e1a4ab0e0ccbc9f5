import { randomUUID } from 'node:crypto';
import { HoldfastEventSchema, type HoldfastEvent } from '../../shared/events.js';

/**
 * A valid event of the given kind, as the gateway raises them; `seq` goes into lastError so that
 * tests can tell the events of one volume apart and check their order.
 */
export function sampleEvent(volume: string, seq: number, overrides: Partial<Record<string, unknown>> = {}): HoldfastEvent {
  return HoldfastEventSchema.parse({
    kind: 'io-hang',
    set: true,
    id: randomUUID(),
    volume,
    gateway: 'gw-test',
    episode: randomUUID(),
    time: new Date().toISOString(),
    held: { requests: 3, bytes: 12288 },
    errorClass: 'transient',
    lastError: `seq ${seq}`,
    ...overrides,
  });
}
