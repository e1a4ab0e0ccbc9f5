import { join } from 'node:path';
import type { Logger } from 'pino';
import { elementAt } from '../../shared/checked.js';
import { syncDirectory } from '../util/sync-directory.js';
import type { JournalRoom } from './room.js';
import type { SegmentFileOps } from './segment-file.js';
import { SEGMENT_HEADER_SIZE, Segment, encodeSegmentHeader, sealName, segmentName } from './segment-format.js';

export interface LiveSegmentsOptions {
  readonly dir: string;
  readonly epoch: number;
  /** A segment is sealed once it grows past this; only whole segments are retired. */
  readonly segmentBytes: number;
  readonly fileOps: SegmentFileOps;
  readonly room: JournalRoom;
  readonly logger: Logger;
  /** Pause before a failed retirement is tried again. */
  readonly retryMs: number;
  readonly closed: () => boolean;
  /** Nothing queued or being written: an empty current segment may be sealed and retired. */
  readonly idle: () => boolean;
}

/**
 * The journal's segment files, oldest first: the one records are appended to, the sealed ones whose
 * records are not all uploaded yet, and retiring them from the front once they are.
 */
export class LiveSegments {
  private readonly segments: Segment[];
  private current: Segment | undefined;
  private nextNo: number;
  private retirement: Promise<void> = Promise.resolve();

  /** `replayed` are the segments found on open, all sealed; new ones are numbered after `lastNo`. */
  constructor(
    private readonly opts: LiveSegmentsOptions,
    replayed: readonly Segment[],
    lastNo: number,
  ) {
    this.segments = [...replayed];
    for (const s of replayed) opts.room.segmentBytes += s.size;
    this.nextNo = lastNo + 1;
  }

  get count(): number {
    return this.segments.length;
  }

  /** The segment a batch of `bytes` goes to: the current one while it has room, else a new one. */
  async forBatch(bytes: number): Promise<Segment> {
    const cur = this.current;
    if (cur !== undefined && (cur.size + bytes <= this.opts.segmentBytes || cur.size === SEGMENT_HEADER_SIZE)) return cur;
    if (cur !== undefined) this.sealCurrent();
    const no = this.nextNo++;
    const path = join(this.opts.dir, segmentName(this.opts.epoch, no));
    const file = await this.opts.fileOps.open(path, 'create');
    const segment = new Segment(this.opts.epoch, no, path, file, SEGMENT_HEADER_SIZE);
    this.segments.push(segment);
    this.opts.room.segmentBytes += SEGMENT_HEADER_SIZE;
    this.current = segment;
    try {
      await file.writev([encodeSegmentHeader(no)], 0);
      await syncDirectory(this.opts.dir);
    } catch (err) {
      this.sealCurrent();
      throw err;
    }
    return segment;
  }

  /** Nothing more is appended to the current segment; it retires once its records are uploaded. */
  sealCurrent(): void {
    if (this.current === undefined) return;
    this.current.sealed = true;
    this.current = undefined;
    this.scheduleRetirement();
  }

  /** A write or sync to `segment` failed: it may have lost pages the kernel said were written. */
  abandon(segment: Segment): void {
    if (segment === this.current) this.sealCurrent();
  }

  scheduleRetirement(): void {
    this.retirement = this.retirement
      .then(() => this.retire())
      .catch((err: unknown) => {
        this.opts.logger.error({ err }, 'could not delete a retired journal segment; will retry');
        // An idle volume would never come back to it, and the journal's room waits for it.
        setTimeout(() => {
          if (!this.opts.closed()) this.scheduleRetirement();
        }, this.opts.retryMs).unref();
      });
  }

  /**
   * Deletes fully uploaded segments, oldest first and only from the front: an old record must never
   * be replayed without the newer records that may overwrite the same bytes.
   */
  async retire(): Promise<void> {
    const cur = this.current;
    if (cur !== undefined && cur.live === 0 && this.opts.idle() && cur.size > SEGMENT_HEADER_SIZE) {
      cur.sealed = true;
      this.current = undefined;
    }
    let removed = false;
    try {
      while (this.segments.length > 0) {
        const oldest = elementAt(this.segments, 0);
        if (!oldest.sealed || oldest.live > 0) break;
        await oldest.file.close().catch(() => undefined);
        // Unlinked before it leaves the list: when that fails (a failing disk) it stays first, to be
        // retried, and no newer segment is deleted while it is still there to be replayed.
        await this.opts.fileOps.remove(oldest.path);
        this.segments.shift();
        oldest.retired = true;
        this.opts.room.segmentBytes -= oldest.size;
        removed = true;
        // An older epoch's seal goes with its last segment.
        if (oldest.epoch !== this.opts.epoch && !this.segments.some((s) => s.epoch === oldest.epoch)) {
          await this.opts.fileOps.remove(join(this.opts.dir, sealName(oldest.epoch))).catch(() => undefined);
        }
      }
    } finally {
      if (removed) this.opts.room.wake();
    }
    if (removed) await syncDirectory(this.opts.dir);
  }

  /**
   * Resolves once every retirement pass scheduled so far — and any scheduled while waiting — has run.
   * A pass that failed has logged and scheduled its retry after `retryMs`; that retry is not waited for.
   */
  async settled(): Promise<void> {
    let pass: Promise<void>;
    do {
      pass = this.retirement;
      await pass;
    } while (pass !== this.retirement);
  }

  /** Waits for retirement under way, then closes every segment file. */
  async close(): Promise<void> {
    await this.retirement;
    for (const s of this.segments) await s.file.close().catch(() => undefined);
  }
}
