import type { Clock } from '../util/clock.js';
import { sleep } from '../util/sleep.js';

const DEFAULT_PROBE_INTERVAL_MS = 200;
/** A probe not answered in this long counts as a failed one. */
const PROBE_TIMEOUT_MS = 1000;
/** Probes unanswered at once at most: a store that takes connections and never answers costs no more. */
const MAX_PROBES_IN_FLIGHT = 5;

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

/**
 * While the store fails, asks it every probe interval whether it answers; an answer wakes every retry
 * at once. A probe still unanswered does not hold back the next one: a store coming back may take
 * connections before it answers them (RGW does while it starts), and waiting out the time-out of a
 * probe stuck on one delayed noticing the return by up to a second (the benchmark's recovery row:
 * the last held read done 1.37 s and 2.37 s after the server was back). Once the loop ends, probes
 * still out are given up and what they say is ignored, as is the failure of a probe sent before one
 * that answered: neither is news about the store.
 */
export async function probeWhileFailing(o: ProbeLoopOptions): Promise<void> {
  const interval = o.intervalMs ?? DEFAULT_PROBE_INTERVAL_MS;
  const loop = new AbortController();
  let sent = 0;
  let lastAnswered = 0;
  const inFlight = new Set<Promise<void>>();
  const send = (): void => {
    const id = ++sent;
    const probe = o.probe(AbortSignal.any([loop.signal, AbortSignal.timeout(PROBE_TIMEOUT_MS)])).then(
      () => {
        if (loop.signal.aborted) return;
        lastAnswered = Math.max(lastAnswered, id);
        o.answered();
      },
      (err: unknown) => {
        if (!loop.signal.aborted && id > lastAnswered) o.failed(err);
      },
    );
    const tracked = probe.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  };
  try {
    while (o.wanted()) {
      await sleep(interval, o.clock).done;
      if (!o.wanted()) break;
      if (inFlight.size < MAX_PROBES_IN_FLIGHT) send();
      else await Promise.race(inFlight);
    }
  } finally {
    loop.abort();
    await Promise.all(inFlight);
  }
}
