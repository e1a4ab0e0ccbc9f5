import { defined, elementAt } from '../../shared/checked.js';
import type { Logger } from 'pino';
import { RequestAbortedError, VolumeDeposedError, errorMessage } from '../../shared/errors.js';
import type { Failpoints } from '../failpoints.js';
import type { StoreReports } from '../hang/index.js';
import { backoffMs } from '../util/backoff.js';
import { Semaphore } from '../util/semaphore.js';
import { deltaKey } from '../image/layout.js';
import type { VolumeImage } from '../image/volume-image.js';
import type { Journal, JournalEntry } from '../journal/journal.js';
import { RecordKind } from '../journal/record.js';
import type { ObjectStore } from '../store/object-store.js';
import { type DeltaBody, DeltaBodies } from './delta-bodies.js';
import { type BuiltDelta, buildDelta } from './delta-builder.js';
import type { CacheReservation } from './extent-cache.js';
import type { HeadCommits } from './head-commits.js';
import type { PendingChanges } from './pending-changes.js';

/** A delta is shipped once this much payload waits (sooner after the upload delay, or when urgent). */
const DELTA_TARGET_BYTES = 8 * 2 ** 20;
/** And holds at most this much payload (a single larger write still goes alone). */
const DELTA_MAX_BYTES = 16 * 2 ** 20;
const DELTA_MAX_ENTRIES = 65_536;
/** Deltas of this much payload or more are built in a buffer used again (delta-bodies.ts). */
const POOLED_DELTA_BYTES = 2 ** 20;
/** Room for DELTA_MAX_BYTES of data and its tables (a 4 KiB-write delta's 4,096 runs take 96 KiB). */
const DELTA_BODY_BYTES = DELTA_MAX_BYTES + 256 * 1024;
/** Nothing a built delta holds after its PUT needs its bytes: the body a pooled one leaves behind. */
const SHIPPED_BODY = Buffer.alloc(0);
/**
 * Bodies the disk cache may still be writing when they come back (it keeps at most 32 MiB of writes
 * pending): kept on the free list with the builds' own, or each would be freed as it came back while
 * the next build allocated (and faulted in) a new one.
 */
const BODIES_AT_DISK_CACHE = 2;
/**
 * Deltas built beyond the PUTs in flight, so a slot that frees starts its next PUT at once. Without
 * it the PUTs, started together, ended together and all waited for a build (50-200 ms each for 16 MiB
 * beside a busy S3 server) before the next went: a quarter of the drain of a backlog had fewer PUTs
 * in flight than the concurrency.
 */
const BUILT_AHEAD = 1;
/**
 * Deltas in the store waiting for their head commit, beyond the PUTs: a head write queues behind the
 * data the S3 server is writing (on RGW 300-800 ms while four 16 MiB PUTs were under way), and a bound
 * of a few stopped new PUTs until it ended. Each waiting delta holds only its tables (~100 KiB for
 * 4,096 runs); a first delta whose PUT keeps failing holds back the later ones' commits no further.
 */
const AWAITING_COMMIT = 16;

/** The deltas an uploader has at once, committed or not: being built, PUT, or waiting for a head write. */
export function uncommittedDeltasMax(concurrency: number): number {
  return concurrency + BUILT_AHEAD + AWAITING_COMMIT;
}
/** While new deltas must wait (admit), the uploader asks again this often even if nothing else happens. */
const ADMIT_RECHECK_MS = 1000;

export interface UploaderOptions {
  readonly name: string;
  readonly epoch: number;
  readonly store: ObjectStore;
  readonly journal: Journal;
  readonly pending: PendingChanges;
  readonly image: VolumeImage;
  readonly commits: HeadCommits;
  /** Memory for a delta being built counts against the volume's cache bound. */
  readonly reserve: (bytes: number) => CacheReservation;
  /** Delta PUTs in flight at once (one more delta is built ahead of them). */
  readonly concurrency: number;
  /** How long a change may wait so that later ones share its delta. */
  readonly delayMs: number;
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
  readonly failpoints: Failpoints;
  readonly logger: Logger;
  /** Told of each failed PUT or commit and of the first success after failures (storage-unavailable). */
  readonly health: StoreReports;
  /** Every delta committed (after its entries left the pending set). */
  readonly onCommitted?: () => void;
  /** False while no new delta may be shipped (the deltas are at their hard limit; see compaction-pace.ts). */
  readonly admit?: () => boolean;
}

export interface UploaderStats {
  deltas: number;
  commits: number;
  bytesUploaded: number;
  failures: number;
  /** Times new deltas began waiting for compaction (the deltas at their hard limit). */
  compactionWaits: number;
}

interface Job {
  readonly entries: JournalEntry[];
  readonly seqTo: number;
  built: BuiltDelta | undefined;
  /** The pooled buffer `built` is in, until its PUT succeeded. */
  body: DeltaBody | undefined;
  /** Payload bytes. */
  readonly bytes: number;
  /** In the store, waiting for its head commit. */
  put: boolean;
  reservation: CacheReservation;
}

/**
 * Ships the journal to the store as deltas (docs/volume-format-2.md, "ship the log"): prefixes of the
 * pending changes, in sequence order, each built into one object and PUT, then committed by a head
 * write strictly in order — several at once when they are ready together. Only after a head names a
 * delta do its entries leave the pending set, and the journal may retire them.
 */
export class Uploader {
  private readonly jobs: Job[] = [];
  /** Jobs not yet in the store: being built, waiting for a PUT slot, or being PUT. */
  private unput = 0;
  /**
   * Jobs in the store wait for their head commit without holding a PUT slot, so the next PUT goes
   * while a commit (one at a time, tens to hundreds of ms on RGW) is under way.
   */
  private readonly putSlots: Semaphore;
  private readonly maxJobs: number;
  /** Pending entries (from the oldest) already in a job. */
  private shipped = 0;
  /** The pending entries after the shipped ones that the next delta will hold, so far. */
  private gathering: JournalEntry[] = [];
  private gatheredBytes = 0;
  /** The next delta can take no more entries. */
  private gatheringFull = false;
  private urgent = false;
  private stopped = false;
  private failures = 0;
  /** New deltas are waiting for compaction (admit said no). */
  private waitingForCompaction = false;
  private timer: NodeJS.Timeout | undefined;
  /** Ends the back-off of each upload or commit waiting one out: several can be at once. */
  private readonly wakers = new Set<() => void>();
  private waiters: Array<{ seq: number; resolve: () => void; reject: (err: Error) => void }> = [];
  /** The commit loop while it runs (one at a time): stop() waits for it, as it may still write the head. */
  private commitLoop: Promise<void> | undefined;
  readonly stats: UploaderStats = { deltas: 0, commits: 0, bytesUploaded: 0, failures: 0, compactionWaits: 0 };

  private readonly bodies: DeltaBodies;

  constructor(private readonly opts: UploaderOptions) {
    this.bodies = new DeltaBodies(DELTA_BODY_BYTES, opts.reserve, opts.concurrency + BUILT_AHEAD + BODIES_AT_DISK_CACHE);
    this.putSlots = new Semaphore(opts.concurrency);
    this.maxJobs = uncommittedDeltasMax(opts.concurrency);
  }

  /** New changes are durable: ship them once a delta's worth waits or the delay passed. */
  notify(): void {
    this.pump();
  }

  /** Ship everything now, without waiting for a full delta, until nothing is pending. */
  kick(): void {
    this.urgent = true;
    this.pump();
  }

  /** The store answers again: retry at once instead of at the end of the back-off. */
  retryNow(): void {
    this.wakeAll();
    this.pump();
  }

  /** Resolves once every change up to `seq` is named by a committed head. */
  flushThrough(seq: number): Promise<void> {
    if (this.opts.commits.committedSeq >= seq) return Promise.resolve();
    if (this.stopped) return Promise.reject(this.closedError());
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ seq, resolve, reject }));
    this.kick();
    return p;
  }

  get uploading(): number {
    return this.jobs.length;
  }

  private pump(): void {
    if (this.stopped) return;
    while (this.unput < this.opts.concurrency + BUILT_AHEAD && this.jobs.length < this.maxJobs) {
      this.gather();
      const entries = this.gathering;
      if (entries.length === 0) break;
      const bytes = this.gatheredBytes;
      const pressure = this.urgent || this.opts.journal.usedBytes > this.opts.journal.limitBytes / 2;
      const waited = performance.now() - elementAt(entries, 0).arrivedAt;
      if (!pressure && bytes < DELTA_TARGET_BYTES && waited < this.opts.delayMs) {
        this.schedule(this.opts.delayMs - waited);
        break;
      }
      if (this.opts.admit?.() === false) {
        if (!this.waitingForCompaction) this.stats.compactionWaits++;
        this.waitingForCompaction = true;
        this.schedule(ADMIT_RECHECK_MS);
        break;
      }
      this.waitingForCompaction = false;
      this.shipped += entries.length;
      this.gathering = [];
      this.gatheredBytes = 0;
      this.gatheringFull = false;
      const job: Job = {
        entries,
        seqTo: elementAt(entries, entries.length - 1).seq,
        built: undefined,
        body: undefined,
        bytes,
        put: false,
        reservation: this.opts.reserve(bytes),
      };
      this.jobs.push(job);
      this.unput++;
      void this.ship(job);
    }
    if (this.opts.pending.count === 0) this.urgent = false;
  }

  /**
   * Extends the next delta with the pending entries that became durable since the last look. pump()
   * runs after every journal sync; rescanning the whole unshipped backlog each time cost a scan of
   * thousands of entries per 4 KiB write.
   */
  private gather(): void {
    const durable = this.opts.journal.durableSequence;
    const pending = this.opts.pending;
    while (!this.gatheringFull) {
      const e = pending.at(this.shipped + this.gathering.length);
      if (e === undefined || e.seq > durable) return;
      const size = e.kind === RecordKind.Write ? e.length : 0;
      if (this.gathering.length >= DELTA_MAX_ENTRIES || (this.gathering.length > 0 && this.gatheredBytes + size > DELTA_MAX_BYTES)) {
        this.gatheringFull = true;
        return;
      }
      this.gathering.push(e);
      this.gatheredBytes += size;
    }
  }

  private schedule(ms: number): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.pump();
      },
      Math.max(0, ms),
    );
  }

  /** Builds and PUTs one delta, retrying until it is in the store (or the uploader stops). */
  private async ship(job: Job): Promise<void> {
    const o = this.opts;
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        job.built ??= await this.build(job);
        const key = attempt === 0 ? job.built.ref.key : deltaKey(o.name, o.epoch, job.seqTo);
        job.built = { ...job.built, ref: { ...job.built.ref, key } };
        await this.putSlots.acquire();
        try {
          // Stopped while waiting for the slot (TypeScript keeps the loop condition's narrowing across the await).
          if (this.stopped as boolean) return;
          o.failpoints.hit('upload.before-put');
          await o.store.put(key, job.built.body, { crc32c: job.built.bodyCrc });
          o.failpoints.hit('upload.after-put');
        } finally {
          this.putSlots.release();
        }
        job.put = true;
        this.unput--;
        this.stats.deltas++;
        this.stats.bytesUploaded += job.built.body.length;
        this.handOver(job);
        this.succeeded();
        this.commitReady();
        this.pump();
        return;
      } catch (err) {
        if (!(await this.failed(err, 'delta upload failed; will retry'))) return;
      }
    }
  }

  /**
   * What was just written is what is likely read next: the disk cache gets the delta without a GET,
   * and without a copy. A pooled body comes back to be built in again once the cache has written it.
   */
  private handOver(job: Job): void {
    const built = defined(job.built, 'built delta');
    const body = job.body;
    const giveBack = (): void => {
      if (body === undefined) return;
      this.bodies.give(body);
      // Given back after the uploader went idle, it is freed now rather than at the next idle.
      this.settle();
    };
    const copies = this.opts.image.reader.copies;
    if (copies !== undefined) copies.keep(built.ref, 0, built.body, giveBack);
    else giveBack();
    if (body !== undefined) {
      job.body = undefined;
      job.built = { ...built, body: SHIPPED_BODY };
    }
  }

  /**
   * A large delta is built in a pooled buffer, whose reservation then stands for the job's own.
   */
  private async build(job: Job): Promise<BuiltDelta> {
    const o = this.opts;
    if (job.bytes >= POOLED_DELTA_BYTES && job.body === undefined) {
      job.body = this.bodies.take();
      job.reservation.release();
    }
    const built = await buildDelta(job.entries, deltaKey(o.name, o.epoch, job.seqTo), o.epoch, job.body?.buf);
    if (job.body !== undefined && built.body.buffer !== job.body.buf.buffer) {
      // Too many runs for the pooled buffer: built in one of its own, which the job's reservation counts again.
      this.bodies.give(job.body);
      job.body = undefined;
      job.reservation = o.reserve(job.bytes);
    }
    return built;
  }

  /** Commits the oldest deltas that are in the store, in order, in one head write. */
  private commitReady(): void {
    if (this.commitLoop !== undefined || this.stopped) return;
    let n = 0;
    while (n < this.jobs.length && elementAt(this.jobs, n).put) n++;
    if (n === 0) return;
    const batch = this.jobs.slice(0, n);
    const seqTo = elementAt(batch, n - 1).seqTo;
    this.commitLoop = (async () => {
      for (let attempt = 0; !this.stopped; attempt++) {
        try {
          await this.opts.commits.commit(
            batch.map((j) => defined(j.built, 'built delta')),
            seqTo,
            () => {
              this.applyCommitted(batch, seqTo);
            },
          );
          this.stats.commits++;
          this.succeeded();
          break;
        } catch (err) {
          if (!(await this.failed(err, 'head commit failed; will retry'))) break;
        }
      }
      this.commitLoop = undefined;
      this.commitReady();
      this.pump();
      this.settle();
    })();
  }

  /** Runs the moment the head naming the batch is written: the deltas' runs go into the image first. */
  private applyCommitted(batch: readonly Job[], seqTo: number): void {
    const o = this.opts;
    for (const job of batch) {
      const built = defined(job.built, 'built delta');
      o.image.addDelta(built.ref, built.meta);
    }
    const done = o.pending.removeThrough(seqTo);
    for (const e of done) o.journal.release(e);
    this.shipped -= done.length;
    this.jobs.splice(0, batch.length);
    for (const job of batch) job.reservation.release();
    for (const dead of o.image.takeDeadDeltas()) o.commits.release(dead.ref.key);
    const ready = this.waiters.filter((w) => w.seq <= seqTo);
    this.waiters = this.waiters.filter((w) => w.seq > seqTo);
    for (const w of ready) w.resolve();
    o.onCommitted?.();
  }

  private succeeded(): void {
    if (this.failures === 0) return;
    this.failures = 0;
    this.opts.logger.info('object store answers again; uploads resumed');
    this.opts.health.storeAnswered();
  }

  /** Reports a failure and waits out the back-off; false when the uploader must give up (deposed, stopped). */
  private async failed(err: unknown, message: string): Promise<boolean> {
    if (err instanceof VolumeDeposedError) {
      // Not awaited: stop() waits for the commit loop to go idle, and this may be that loop.
      void this.stop();
      for (const w of this.waiters.splice(0)) w.reject(err);
      return false;
    }
    this.failures++;
    this.stats.failures++;
    this.opts.logger.warn({ err: errorMessage(err), attempt: this.failures }, message);
    this.opts.health.storeFailed(err);
    await new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(t);
        this.wakers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, backoffMs(this.failures - 1, this.opts.retryInitialMs, this.opts.retryMaxMs));
      this.wakers.add(wake);
    });
    return !this.stopped;
  }

  private settle(): void {
    if (this.jobs.length > 0 || this.commitLoop !== undefined) return;
    if (this.opts.pending.count === 0) this.bodies.drain();
  }

  private wakeAll(): void {
    for (const wake of [...this.wakers]) wake();
  }

  /** Stops starting work and waits for the head commit under way to end. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.wakeAll();
    for (const job of this.jobs) {
      job.reservation.release();
      job.body?.reservation.release();
    }
    // Not an idle wait: a stopped uploader keeps its unfinished jobs, so it may never be idle again.
    await this.commitLoop;
    for (const w of this.waiters.splice(0)) w.reject(this.closedError());
  }

  private closedError(): RequestAbortedError {
    return new RequestAbortedError('the volume was closed before these changes were in a committed head; its journal still holds them');
  }
}
