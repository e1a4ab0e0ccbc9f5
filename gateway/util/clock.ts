/** Wall-clock time and timers behind one interface, so that timed logic can be tested without waiting. */
export interface Clock {
  /** Milliseconds since the epoch: what events, status and deadlines are stated in. */
  now(): number;
  /**
   * Calls `fn` once `ms` have passed. Any finite duration works: Node's own timers fire at once for
   * 2^31 ms or more, so longer waits are taken in steps.
   */
  setTimer(fn: () => void, ms: number, opts?: { readonly unref?: boolean }): Timer;
}

export interface Timer {
  cancel(): void;
}

/** The longest delay a Node timer keeps (about 24.8 days); longer ones overflow and fire after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Real timers that wait out any duration in steps of at most `maxStepMs` (a parameter so that the
 * stepping can be tested in milliseconds). Steps are measured on the monotonic clock, so a wall-clock
 * jump neither shortens nor stretches a wait.
 */
export function steppedTimers(maxStepMs: number): Clock {
  return {
    now: () => Date.now(),
    setTimer(fn, ms, opts) {
      const due = performance.now() + ms;
      let handle: NodeJS.Timeout | undefined;
      const arm = (left: number): void => {
        handle = setTimeout(
          () => {
            const rest = due - performance.now();
            if (rest > 0) arm(rest);
            else fn();
          },
          Math.min(Math.max(0, left), maxStepMs),
        );
        if (opts?.unref === true) handle.unref();
      };
      arm(ms);
      return {
        cancel: () => {
          clearTimeout(handle);
        },
      };
    },
  };
}

export const systemClock: Clock = steppedTimers(MAX_TIMER_MS);
