import type { Logger } from 'pino';
import type { ErrorClass, RequestedBy } from '../../shared/events.js';
import type { HangPolicy } from '../../shared/hang-policy.js';
import type { EventSink } from '../events/event-sink.js';
import type { Clock } from '../util/clock.js';

/** What the hang engine needs from the volume around it, and what it offers the admin API and metrics. */

/** Requests some component holds on the volume's behalf (writes waiting for journal room, for a lease...). */
export interface HeldSource {
  /** What it holds now. Counted as held while storage fails or an episode runs; otherwise it is back-pressure. */
  held(): { requests: number; bytes: number };
  /** Answers every request it holds with `err` now. */
  fail(err: Error): void;
  /** A journal failure that the policy does not hold fails only the sources that wait on the journal. */
  readonly waitsOn: 'store' | 'journal';
}

/** What the journal tells the engine: the writes waiting on it, and how full it is. */
export interface JournalWaiters {
  /** Writes waiting for journal room or for a sync that keeps failing. */
  held(): { requests: number; bytes: number };
  /** Answers every waiting write with `err`; the records already queued are still written. */
  failWaiters(err: Error): void;
  usage(): { bytes: number; limit: number };
}

/** What the admin API may do to a volume's hang handling; `by` says who asked, for the log and the events. */
export interface HangControl {
  readonly policy: HangPolicy;
  setPolicy(policy: HangPolicy, by: RequestedBy): void;
  /** Fails the held requests and stops holding until resume; answers how many were failed. */
  pause(by: RequestedBy): number;
  resume(by: RequestedBy): void;
  /** Fails the requests held now, once; answers how many. */
  release(by: RequestedBy): number;
}

export interface HangMonitorOptions {
  readonly volume: string;
  readonly gateway: string;
  readonly policy: HangPolicy;
  /** A cheap store request; its answer wakes held retries at once. `signal` gives up on it. */
  readonly probe: (signal: AbortSignal) => Promise<void>;
  readonly journal: JournalWaiters;
  readonly events: EventSink;
  readonly logger: Logger;
  readonly probeIntervalMs?: number;
  readonly retryInitialMs?: number;
  /** Retries should be tried now (the probe answered, or the store recovered): the uploader's cue. */
  readonly onStoreRecovered?: () => void;
  readonly clock?: Clock;
  /** Prefix of episode and event ids; default a random UUID (tests fix it). */
  readonly idPrefix?: string;
}

export interface HangCounters {
  episodes: number;
  hangSeconds: number;
  timeouts: number;
  retries: number;
  failedFast: number;
  storageErrors: Record<ErrorClass, number>;
}
