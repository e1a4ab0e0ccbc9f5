/**
 * How hard compaction works, and when uploads must wait for it (docs/volume-format-2.md, "Pacing").
 * Both budgets are soft: just above one compaction runs a fifth of the time, closer to its limit it
 * speeds up to flat out, and at the limit the uploader stops shipping new deltas, so that writes slow
 * down (the journal fills, then holds them) instead of the store or the index growing without bound.
 * The deltas' limit is twice their budget; the index's is `--index-memory` itself, its soft budget three
 * quarters of it: folding an extent costs about the same however many runs it holds, so the fuller the
 * index when compaction starts, the more memory each fold frees.
 */

/** What a volume's deltas may cost before compaction folds them (--index-memory, --delta-budget). */
export interface CompactionBudget {
  /** Run map plus delta CRC tables: compaction starts, paced, at 3/4 of it; uploads wait at all of it. */
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

/** Share of `--index-memory` at which compaction for it starts, paced. */
export const INDEX_SOFT = 0.75;

/**
 * How full the index is, on the deltas' scale: 1 at INDEX_SOFT of `--index-memory` (where compaction
 * starts), HARD_LIMIT at all of it (where uploads wait, so that the memory bound holds), linear between.
 */
export function indexPressure(indexBytes: number, budget: CompactionBudget): number {
  return 1 + ((indexBytes / budget.indexMemoryBytes - INDEX_SOFT) / (1 - INDEX_SOFT)) * (HARD_LIMIT - 1);
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
