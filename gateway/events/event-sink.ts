// gateway/events owns where the gateway's events go (the log, an EventBridge bus with its spill
// file) and which sinks a configuration opens; the event schema itself is shared/events.ts.
import type { Logger } from 'pino';
import type { HoldfastEvent } from '../../shared/events.js';

/**
 * Where events go. `publish` must return at once and never throw: an event is a report about I/O,
 * and reporting must never block or fail the I/O itself.
 */
export interface EventSink {
  publish(event: HoldfastEvent): void;
  close(): Promise<void>;
  /** Delivery counters, for sinks that deliver somewhere that can fail. */
  counters?(): EventDeliveryCounters;
}

/** Why an event never reached a sink's destination. */
export type DropReason = 'queue-full' | 'rejected' | 'shutdown';

export interface EventDeliveryCounters {
  readonly sink: string;
  readonly delivered: number;
  /** Events sent again after a failed call or a refused entry. */
  readonly retried: number;
  readonly failedCalls: number;
  /** Waiting for delivery now. */
  readonly queued: number;
  readonly dropped: Readonly<Record<DropReason, number>>;
}

/** The embedded default: one JSON object per line in the log, under the key `event`. */
export class LogEventSink implements EventSink {
  constructor(private readonly logger: Logger) {}

  publish(event: HoldfastEvent): void {
    const detail = 'set' in event ? ` set=${event.set}` : 'level' in event ? ` level=${event.level}` : '';
    this.logger.info({ event }, `event ${event.kind}${detail} volume=${event.volume}`);
  }

  async close(): Promise<void> {}
}

/** Fans events out to every sink and keeps the most recent ones for the admin API. */
export class EventBus implements EventSink {
  private readonly recent: HoldfastEvent[] = [];
  private readonly listeners = new Set<(e: HoldfastEvent) => void>();

  constructor(
    private readonly sinks: readonly EventSink[],
    private readonly logger: Logger,
    private readonly keep = 256,
  ) {}

  publish(event: HoldfastEvent): void {
    this.recent.push(event);
    if (this.recent.length > this.keep) this.recent.shift();
    for (const sink of this.sinks) {
      try {
        sink.publish(event);
      } catch (err) {
        this.logger.error({ err, kind: event.kind }, 'event sink failed; event dropped for that sink');
      }
    }
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (err) {
        this.logger.error({ err }, 'event listener failed');
      }
    }
  }

  /** Events seen so far (newest last), optionally for one volume. */
  history(volume?: string): readonly HoldfastEvent[] {
    return volume === undefined ? [...this.recent] : this.recent.filter((e) => e.volume === volume);
  }

  /** The delivery counters of every sink that keeps them. */
  deliveryCounters(): EventDeliveryCounters[] {
    return this.sinks.flatMap((s) => (s.counters === undefined ? [] : [s.counters()]));
  }

  subscribe(listener: (e: HoldfastEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    await Promise.all(this.sinks.map((s) => s.close()));
  }
}
