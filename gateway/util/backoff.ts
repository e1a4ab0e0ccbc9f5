/** Exponential back-off with "equal jitter": half fixed, half random, so retries do not align. */
export function backoffMs(attempt: number, initialMs: number, maxMs: number): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 20));
  return base / 2 + Math.random() * (base / 2);
}
