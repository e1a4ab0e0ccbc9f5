/**
 * Lets one log line per key through per interval and counts the ones it holds back, so that a storm
 * of identical failures (every request failing after a hang timeout, every retry of a dead
 * endpoint) costs one line per interval, with the count of the rest, instead of flooding the log
 * and the memory of its asynchronous buffer.
 */
export class LogRateLimiter {
  private readonly keys = new Map<string, { lastAt: number; suppressed: number }>();

  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Undefined: stay silent this time. A number: log now, mentioning this many lines left out since the last one. */
  admit(key = ''): number | undefined {
    const now = this.now();
    const entry = this.keys.get(key);
    if (entry === undefined) {
      this.keys.set(key, { lastAt: now, suppressed: 0 });
      return 0;
    }
    if (now - entry.lastAt < this.intervalMs) {
      entry.suppressed++;
      return undefined;
    }
    const suppressed = entry.suppressed;
    entry.lastAt = now;
    entry.suppressed = 0;
    return suppressed;
  }
}
