import type { Logger } from 'pino';

/** What the memory limit acts on: a served volume's extent cache. */
export interface SqueezableCache {
  /** The cache's configured bound (`--cache-size`). */
  readonly cacheMaxBytes: number;
  /** Lowers the bound by this much (the cache caps it at half); 0 restores it. */
  squeezeCache(bytes: number): void;
}

export interface MemoryLimitOptions {
  /** The resident set the gateway stays under; asked on every tick (volumes come and go). */
  readonly limitBytes: () => number;
  readonly caches: () => Iterable<SqueezableCache>;
  readonly logger: Logger;
  /** The process's resident set (tests give their own). */
  readonly rss?: () => number;
}

const MiB = 2 ** 20;
/**
 * The resident set is held this far under the limit: between two looks it may grow by a burst (a
 * batch of loads, a GC's worth of garbage), and the limit is what the task must never pass.
 */
export const MARGIN_BYTES = 32 * MiB;
/** The squeeze grows by at most this per look: freed memory takes a GC or jemalloc's decay to leave the RSS. */
const STEP_UP_BYTES = 16 * MiB;
/** And gives back this much per look once the RSS is well under the target, so that it does not swing. */
const STEP_DOWN_BYTES = 4 * MiB;
/** The RSS must be this far under the target before any room goes back to the caches. */
const SLACK_BYTES = 32 * MiB;
const INTERVAL_MS = 100;

/**
 * Keeps the gateway's resident memory under `--memory-limit` by taking room from the extent caches
 * while anything else grows: the V8 heap (request objects, the delta index), buffers not yet
 * collected, the allocator's free pages. The caches are what the gateway can give up without losing
 * anything (evicting is always safe); what they give up is not kept on the free list (its room is
 * the lowered bound's) but freed at once (extent-buffers.ts). The squeeze is shared by the
 * volumes in proportion to their caches; each gives at most half of its own. Nothing is squeezed while the RSS is under the limit
 * less MARGIN_BYTES.
 */
export class MemoryLimit {
  private squeezed = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly rss: () => number;
  /** Looks that found the RSS over the target. */
  squeezes = 0;

  constructor(private readonly opts: MemoryLimitOptions) {
    this.rss = opts.rss ?? (() => process.memoryUsage.rss());
  }

  start(): void {
    this.timer ??= setInterval(() => {
      this.tick();
    }, INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Bytes taken off the caches' bounds now, all volumes together. */
  get squeezedBytes(): number {
    return this.squeezed;
  }

  /** One look: squeeze more when over the target, give back a little when well under it. */
  tick(): void {
    const rss = this.rss();
    const target = this.opts.limitBytes() - MARGIN_BYTES;
    const caches = [...this.opts.caches()];
    const total = caches.reduce((sum, c) => sum + c.cacheMaxBytes, 0);
    const before = this.squeezed;
    if (rss > target) {
      this.squeezes++;
      this.squeezed = Math.min(Math.floor(total / 2), this.squeezed + Math.min(rss - target, STEP_UP_BYTES));
    } else if (rss < target - SLACK_BYTES) {
      this.squeezed = Math.max(0, this.squeezed - STEP_DOWN_BYTES);
    }
    if (this.squeezed === before) return;
    if (before === 0) this.opts.logger.info({ rss, limit: this.opts.limitBytes() }, 'memory limit: taking room from the extent caches');
    for (const c of caches) c.squeezeCache(total === 0 ? 0 : Math.floor((this.squeezed * c.cacheMaxBytes) / total));
  }
}
