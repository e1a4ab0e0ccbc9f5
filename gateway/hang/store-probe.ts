import type { Clock } from '../util/clock.js';
import { sleep } from '../util/sleep.js';

const DEFAULT_PROBE_INTERVAL_MS = 200;
/** A probe not answered in this long counts as a failed one, and the next goes out. */
const PROBE_TIMEOUT_MS = 1000;

export interface ProbeLoopOptions {
  /** A cheap store request; `signal` gives up on it. */
  readonly probe: (signal: AbortSignal) => Promise<void>;
  readonly intervalMs: number | undefined;
  readonly clock: Clock;
  /** Whether the engine still wants probes (the store is failing and something is held or waits). */
  readonly wanted: () => boolean;
  readonly answered: () => void;
  readonly failed: (err: unknown) => void;
}

/** While the store fails, asks it every probe interval whether it answers; an answer wakes every retry at once. */
export async function probeWhileFailing(o: ProbeLoopOptions): Promise<void> {
  const interval = o.intervalMs ?? DEFAULT_PROBE_INTERVAL_MS;
  while (o.wanted()) {
    await sleep(interval, o.clock).done;
    if (!o.wanted()) break;
    try {
      // A store coming back may take connections before it answers them (RGW does while it starts):
      // a probe stuck on one would hold every retry until the S3 client's own time-out.
      await o.probe(AbortSignal.timeout(PROBE_TIMEOUT_MS));
      o.answered();
    } catch (err) {
      o.failed(err);
    }
  }
}
