import { randomUUID } from 'node:crypto';
import type { VolumeDeposedEvent } from '../../shared/events.js';

/** The page-worthy event of a gateway that lost a volume it served to another gateway. */
export function volumeDeposedEvent(volume: string, gateway: string, epoch: number, reason: string): VolumeDeposedEvent {
  return {
    kind: 'volume-deposed',
    id: randomUUID(),
    volume,
    gateway,
    episode: 'none',
    time: new Date().toISOString(),
    held: { requests: 0, bytes: 0 },
    errorClass: null,
    lastError: null,
    epoch,
    reason,
  };
}
