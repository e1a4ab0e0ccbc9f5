import type { Logger } from 'pino';
import { elementAt } from '../../shared/checked.js';
import { VolumeDeposedError, errorMessage } from '../../shared/errors.js';
import type { Failpoints } from '../failpoints.js';
import type { StoreReports } from '../hang/index.js';
import { buildBaseExtent, isAllZero } from '../image/base-extent.js';
import type { BaseRef } from '../image/index-page.js';
import { baseExtentKey } from '../image/layout.js';
import type { VolumeImage } from '../image/volume-image.js';
import type { ObjectStore } from '../store/object-store.js';
import { backoffMs } from '../util/backoff.js';
import type { Clock } from '../util/clock.js';
import { type Sleep, sleep } from '../util/sleep.js';
import { type CompactionBudget, HARD_LIMIT, compactionDuty, deltaPressure, indexPressure, pauseAfter } from './compaction-pace.js';
import type { ExtentBuffers } from './extent-buffers.js';
import type { CacheReservation } from './extent-cache.js';
import type { HeadCommits } from './head-commits.js';

/** Base extents written per head commit, and read at once. */
const BATCH = 16;
/**
 * A delta's runs for the extents of a batch are read with one range GET across gaps up to this: with
 * scattered writes, the runs of the other extents in between are a few KiB, a request is not.
 */
const GAP_BYTES = 256 * 1024;
/** Extents that turn out to be all zeros need no object: this many may go in one head commit. */
const ZERO_BATCH = 1024;
/**
 * Range GETs in flight while compaction is paced (just above a budget): fewer responses arrive
 * together, so the event loop keeps answering the guest between them. Flat out, pieces.ts's default.
 */
const PACED_READS_IN_FLIGHT = 4;
/** Extents taken from one scan of the run map when the index is too big (the scan is linear in extents). */
const CANDIDATES = 4096;

export interface CompactorOptions {
  readonly name: string;
  readonly epoch: number;
  readonly store: ObjectStore;
  readonly image: VolumeImage;
  readonly commits: HeadCommits;
  readonly budget: CompactionBudget;
  readonly reserve: (bytes: number) => CacheReservation;
  /**
   * Where the extents read and the bases built go (the read path's pool): 4 MiB buffers used again
   * instead of two new ones per extent left to the collector.
   */
  readonly buffers?: ExtentBuffers;
  readonly failpoints: Failpoints;
  readonly logger: Logger;
  /** Told of each failed compaction (storage-unavailable). */
  readonly health: StoreReports;
  /** Back-off before compacting again after a failure. */
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
  /** Each batch committed: the deltas may be back under the hard limit, so uploads may go on. */
  readonly onProgress?: () => void;
  /** Whose timers the pauses between paced batches are; the system clock by default. */
  readonly clock?: Clock;
}

export interface CompactorStats {
  runs: number;
  extents: number;
  bytesWritten: number;
  failures: number;
}

type Reason = 'index-memory' | 'delta-count' | 'delta-bytes';

/**
 * Folds deltas into new base extents when a budget is passed (docs/volume-format-2.md, "Compaction"),
 * choosing the extents whose folding saves the most: the ones with the most runs when the index is
 * too big, the ones the oldest delta still shows in when there are too many delta bytes or deltas.
 * It works from the store alone and commits like an upload.
 */
export class Compactor {
  private running: Promise<void> | undefined;
  private stopped = false;
  /** The busiest extents of the last scan, still to be compacted while the index is too big. */
  private candidates: number[] = [];
  /** The pause between paced batches, while one lasts. */
  private pause: Sleep | undefined;
  /** runNow() is waiting: no more pauses. */
  private hurry = false;
  private failuresInRow = 0;
  private retryAt = 0;
  /** The last run found nothing to fold while a budget was still passed (see admitsUploads). */
  private stalled = false;
  readonly stats: CompactorStats = { runs: 0, extents: 0, bytesWritten: 0, failures: 0 };

  constructor(private readonly opts: CompactorOptions) {}

  get active(): boolean {
    return this.running !== undefined;
  }

  /** Starts compacting if a budget is passed, nothing is under way and no failure's back-off lasts. */
  maybeRun(): void {
    if (this.running !== undefined || this.stopped || performance.now() < this.retryAt || this.reason(false) === undefined) return;
    this.running = this.run().finally(() => {
      this.running = undefined;
    });
  }

  /** The store answers again: the back-off after a failed compaction is over. */
  retryNow(): void {
    this.retryAt = 0;
    this.maybeRun();
  }

  /**
   * False while the deltas are at twice their budget or more, or the index at `--index-memory`: the
   * uploader then ships no new delta until compaction has brought them down (it asks again, and each
   * batch committed tells it).
   * A stopped compactor, or one that found nothing to fold, cannot bring them down: it never holds
   * uploads up then.
   */
  admitsUploads(): boolean {
    if (this.stopped || this.stalled || this.pressure() < HARD_LIMIT) return true;
    this.maybeRun();
    return false;
  }

  /** Compacts until every budget is met, without pauses (tests and `holdfast volume compact` call this). */
  async runNow(): Promise<void> {
    this.hurry = true;
    this.pause?.wake();
    try {
      await this.running;
      this.running = this.run(true).finally(() => {
        this.running = undefined;
      });
      await this.running;
    } finally {
      this.hurry = false;
    }
  }

  /** Which budget is passed: compaction starts above it and, once started, goes on down to 3/4 of it. */
  private reason(stopping: boolean): Reason | undefined {
    const b = this.opts.budget;
    const image = this.opts.image;
    const f = stopping ? 0.75 : 1;
    if (indexPressure(image.indexBytes, b) > f) return 'index-memory';
    if (image.deltas.size > b.deltaCount * f) return 'delta-count';
    if (image.deltaBytes > b.deltaBytes * f) return 'delta-bytes';
    return undefined;
  }

  private async run(everything = false): Promise<void> {
    this.stats.runs++;
    let reason = everything ? (this.reason(false) ?? 'delta-count') : this.reason(false);
    while (reason !== undefined && !this.stopped) {
      const extents = this.choose(reason, everything);
      if (extents.length === 0) {
        this.noteStalled(reason);
        break;
      }
      const started = performance.now();
      try {
        const done = await this.compact(extents, this.paced(everything) ? PACED_READS_IN_FLIGHT : undefined);
        if (reason === 'index-memory' && !everything) this.candidates.unshift(...extents.slice(done));
      } catch (err) {
        if (err instanceof VolumeDeposedError) return;
        this.stats.failures++;
        this.failuresInRow++;
        const waitMs = backoffMs(this.failuresInRow - 1, this.opts.retryInitialMs, this.opts.retryMaxMs);
        this.retryAt = performance.now() + waitMs;
        this.opts.logger.warn({ err: errorMessage(err), retryInMs: Math.round(waitMs) }, 'compaction failed; will try again');
        this.opts.health.storeFailed(err);
        return;
      }
      this.failuresInRow = 0;
      this.stalled = false;
      this.opts.onProgress?.();
      if (this.paced(everything)) await this.paceAfter(performance.now() - started);
      reason = everything ? (this.opts.image.deltas.size > 0 ? 'delta-count' : undefined) : this.reason(true);
    }
  }

  /** Compaction in the background, short of the hard limit: gently, and with pauses. */
  private paced(everything: boolean): boolean {
    if (everything || this.hurry) return false;
    return compactionDuty(this.pressure()) < 1;
  }

  /** How full the deltas and the index are against their budgets, the fuller of them (compaction-pace.ts). */
  private pressure(): number {
    const image = this.opts.image;
    const b = this.opts.budget;
    return Math.max(deltaPressure(image.deltaBytes, image.deltas.size, b), indexPressure(image.indexBytes, b));
  }

  /** Pauses after a batch, so that writes keep most of the machine (see compaction-pace.ts). */
  private async paceAfter(busyMs: number): Promise<void> {
    const ms = pauseAfter(busyMs, compactionDuty(this.pressure()));
    if (ms <= 0 || this.hurry || this.stopped) return;
    this.pause = sleep(ms, this.opts.clock);
    await this.pause.done;
    this.pause = undefined;
  }

  private noteStalled(reason: Reason): void {
    if (this.stalled) return;
    this.stalled = true;
    const image = this.opts.image;
    this.opts.logger.warn(
      { reason, deltas: image.deltas.size, deltaBytes: image.deltaBytes, indexBytes: image.indexBytes },
      'compaction found nothing to fold while over a budget; uploads are not held for it',
    );
  }

  private choose(reason: Reason, everything: boolean): number[] {
    const image = this.opts.image;
    // When the deltas' CRC tables are most of the index, folding busy extents frees little: only a
    // delta that goes takes its table along, so the oldest delta's extents are folded instead.
    if (reason === 'index-memory' && !everything && image.deltaTableBytes <= image.runs.bytes) {
      this.candidates = this.candidates.filter((e) => image.runs.runsOf(e) > 0);
      if (this.candidates.length === 0) this.candidates = image.runs.busiestExtents(CANDIDATES);
      return this.candidates.splice(0, ZERO_BATCH);
    }
    // Deltas whose every byte newer ones overwrote go without any work.
    for (const dead of image.takeDeadDeltas()) this.opts.commits.release(dead.ref.key);
    const oldest = image.deltas.values().next().value;
    if (oldest === undefined) return [];
    const chosen: number[] = [];
    for (const extent of oldest.extents) {
      let shows = false;
      image.runs.resolve(extent, 0, image.extentLength(extent), (_s, _t, src) => {
        if (src === oldest.slot) shows = true;
      });
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set in the callback, which TypeScript does not follow
      if (shows) chosen.push(extent);
      if (chosen.length >= ZERO_BATCH) break;
    }
    return chosen;
  }

  /**
   * Folds the extents, in order, until BATCH bases were written (extents that read as zeros need none,
   * up to ZERO_BATCH of them), and commits; resolves with how many of `extents` it did.
   */
  private async compact(extents: readonly number[], readsInFlight: number | undefined): Promise<number> {
    const image = this.opts.image;
    // A delta committed meanwhile that zeroes one of these whole keeps runs, which the fold respects.
    for (const extent of extents) image.compacting.add(extent);
    try {
      return await this.fold(extents, readsInFlight);
    } finally {
      for (const extent of extents) image.compacting.delete(extent);
    }
  }

  private async fold(extents: readonly number[], readsInFlight: number | undefined): Promise<number> {
    const o = this.opts;
    const built: Array<[number, BaseRef]> = [];
    const zeros: Array<[number, number]> = [];
    let done = 0;
    while (done < extents.length && built.length < BATCH) {
      // Read together, so that each delta is asked once for all of them (VolumeImage.materializeMany).
      const chunk = extents.slice(done, done + BATCH - built.length);
      done += chunk.length;
      const reservations = chunk.map((extent) => o.reserve(o.image.extentLength(extent)));
      // One buffer more for the bases, built one after another.
      if (o.buffers !== undefined) reservations.push(o.reserve(o.buffers.size));
      let body: Buffer | undefined;
      let contents: Array<Buffer | null> = [];
      try {
        // The extents the reservations evicted are free only after this turn: taken at once, the buffers would be new ones.
        await o.buffers?.settled(chunk.length + 1);
        body = o.buffers?.take();
        // The state the contents are read from: every delta up to this sequence.
        const seq = o.commits.committedSeq;
        contents = await o.image.materializeMany(chunk, undefined, o.buffers, GAP_BYTES, readsInFlight);
        for (const [i, extent] of chunk.entries()) {
          const content = elementAt(contents, i);
          if (content === null || isAllZero(content)) {
            zeros.push([extent, seq]);
            continue;
          }
          const base = buildBaseExtent(
            content,
            extent * o.image.shape.extentSize,
            baseExtentKey(o.name, extent, o.epoch, seq),
            o.epoch,
            seq,
            body,
          );
          await o.store.put(base.ref.key, base.body, { crc32c: base.bodyCrc });
          o.failpoints.hit('compact.after-put');
          o.image.reader.copies?.keep(base.ref, 0, base.body);
          this.stats.bytesWritten += base.body.length;
          built.push([extent, base.ref]);
        }
      } finally {
        for (const content of contents) if (content !== null) o.buffers?.release(content);
        if (body !== undefined) o.buffers?.release(body);
        for (const r of reservations) r.release();
      }
    }
    for (const [extent, ref] of built) {
      const old = o.image.setBase(extent, ref);
      if (old !== undefined) o.commits.release(old.key);
    }
    for (const [extent, seq] of zeros) {
      const old = o.image.clearExtent(extent, seq);
      if (old !== undefined) o.commits.release(old.key);
    }
    this.stats.extents += built.length + zeros.length;
    for (const dead of o.image.takeDeadDeltas()) o.commits.release(dead.ref.key);
    o.failpoints.hit('compact.before-commit');
    await o.commits.flush();
    o.failpoints.hit('compact.after-commit');
    return done;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.pause?.wake();
    await this.running?.catch(() => undefined);
  }
}
