/**
 * How hard compaction works for the delta budgets, and when uploads must wait for it
 * (docs/volume-format-2.md, "Pacing"). The budget is soft: above it compaction runs a fifth of the time,
 * from 1.5× it speeds up to flat out at 2×, and at 2× the uploader stops shipping new deltas, so that
 * writes slow down (the journal fills, then holds them) instead of the store growing without bound.
 */

/** What a volume's deltas may cost before compaction folds them (--index-memory, --delta-budget). */
export interface CompactionBudget {
  /** Run map plus delta CRC tables; compaction starts at 3/4 of it and stops at 1/2. */
  readonly indexMemoryBytes: number;
  /** Bytes of delta objects the head may name before the oldest are folded. */
  readonly deltaBytes: number;
  /** Deltas the head may name (it is rewritten at every commit, so it is kept small). */
  readonly deltaCount: number;
}

/** Share of the time compaction may be busy just above the budget. */
export const SOFT_DUTY = 0.2;
/** Pressure from which compaction speeds up, and the one at which uploads wait. */
export const SPEED_UP_AT = 1.5;
export const HARD_LIMIT = 2;

/** How full the deltas are against their budgets: the larger of bytes and count, 1 = at the budget. */
export function deltaPressure(deltaBytes: number, deltaCount: number, budget: CompactionBudget): number {
  return Math.max(deltaBytes / budget.deltaBytes, deltaCount / budget.deltaCount);
}

/** Share of the time compaction may be busy at this pressure: SOFT_DUTY up to 1.5×, rising to 1 at 2×. */
export function compactionDuty(pressure: number): number {
  if (pressure <= SPEED_UP_AT) return SOFT_DUTY;
  if (pressure >= HARD_LIMIT) return 1;
  return SOFT_DUTY + ((1 - SOFT_DUTY) * (pressure - SPEED_UP_AT)) / (HARD_LIMIT - SPEED_UP_AT);
}

/** The pause after a batch that took `busyMs`, so that compaction is busy `duty` of the time. */
export function pauseAfter(busyMs: number, duty: number): number {
  return duty >= 1 ? 0 : (busyMs * (1 - duty)) / duty;
}
