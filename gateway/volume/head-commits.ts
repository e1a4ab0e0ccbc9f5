import type { Logger } from 'pino';
import { VolumeDeposedError } from '../../shared/errors.js';
import type { Failpoints } from '../failpoints.js';
import type { StoreReports } from '../hang/index.js';
import type { Head, PageRef, Released } from '../image/head.js';
import type { HeadWriter } from '../image/head-writer.js';
import { encodePage } from '../image/index-page.js';
import { indexPageKey } from '../image/layout.js';
import type { VolumeImage } from '../image/volume-image.js';
import type { ObjectStore } from '../store/object-store.js';
import { backoffMs } from '../util/backoff.js';
import type { BuiltDelta } from './delta-builder.js';

export interface HeadCommitsOptions {
  readonly name: string;
  readonly store: ObjectStore;
  readonly writer: HeadWriter;
  readonly image: VolumeImage;
  readonly failpoints: Failpoints;
  /** Objects a head stops naming stay listed as released this long (GC spares them meanwhile). */
  readonly gcGraceMs: number;
  /** The highest sequence acknowledged so far (the head records it for a taker without our journal). */
  readonly ackedSeq: () => number;
  readonly logger: Logger;
  /** Told of renewal failures and of the first success after them. */
  readonly health: StoreReports;
}

/**
 * Every write of a served volume's head goes through here: uploads commit their deltas, compaction its
 * base extents, the lease is renewed when nothing else wrote the head for a third of the lease, and a
 * clean stop releases it. Each write names what the image holds now, after the index pages that
 * changed are written under new keys.
 */
export class HeadCommits {
  private released: Released[];
  private renewTimer: NodeJS.Timeout | undefined;
  private renewFailures = 0;
  private renewing = false;
  private retry = { initialMs: 50, maxMs: 1000 };
  private stopped = false;
  /** Bytes of index pages PUT. */
  pageBytes = 0;

  constructor(private readonly opts: HeadCommitsOptions) {
    this.released = [...opts.writer.head.released];
  }

  /** Bytes of heads and index pages sent to the store. */
  get metadataBytes(): number {
    return this.opts.writer.bytesSent + this.pageBytes;
  }

  get head(): Head {
    return this.opts.writer.head;
  }

  /** Every acknowledged write up to this is in the store. */
  get committedSeq(): number {
    return this.opts.writer.head.seq;
  }

  /** An object the next head no longer names. */
  release(key: string): void {
    this.released.push({ key, at: new Date().toISOString() });
    this.opts.image.reader.copies?.forget(key);
  }

  /**
   * Commits `deltas` (already in the store) as the changes through `seqTo`, with whatever compaction
   * changed meanwhile. `applied` runs the moment the head is written, before any other head write.
   */
  commit(deltas: readonly BuiltDelta[], seqTo: number, applied: () => void): Promise<Head> {
    return this.opts.writer.write(
      async (cur) => {
        this.opts.failpoints.hit('commit.before-head');
        return this.compose(cur, deltas, Math.max(cur.seq, seqTo));
      },
      () => {
        this.opts.failpoints.hit('commit.after-head');
        applied();
      },
    );
  }

  /** Writes the head with what the image holds now (compaction's changes, a renewal). */
  flush(): Promise<Head> {
    return this.opts.writer.write((cur) => this.compose(cur, [], cur.seq));
  }

  /**
   * Records a new size. A grow is written first and applied after (nothing may be acknowledged past the
   * size the store knows); a shrink is applied first — the caller drained the volume and zeroed the cut
   * part — so the head that records it no longer names the cut extents' bases.
   */
  resize(size: number): Promise<Head> {
    const image = this.opts.image;
    const release = (keys: readonly string[]): void => {
      for (const key of keys) this.release(key);
    };
    if (size < image.shape.size) {
      return this.opts.writer.write(async (cur) => {
        if (image.shape.size !== size) release(image.resize(size));
        return { ...(await this.compose(cur, [], cur.seq)), size };
      });
    }
    return this.opts.writer.write(
      async (cur) => ({ ...(await this.compose(cur, [], cur.seq)), size }),
      () => {
        release(image.resize(size));
      },
    );
  }

  /** Hands the volume back: no owner, so the next gateway on any journal takes it at once. */
  async releaseOwnership(): Promise<void> {
    await this.opts.writer.write(async (cur) => ({ ...(await this.compose(cur, [], cur.seq)), owner: null }));
  }

  private async compose(cur: Head, deltas: readonly BuiltDelta[], seq: number): Promise<Head> {
    const image = this.opts.image;
    for (const key of image.takeObsoleteBases()) this.release(key);
    for (const page of [...image.dirtyPages]) {
      const old = image.pages.get(page);
      const encoded = encodePage(page, image.bases);
      if (encoded === undefined) image.pages.delete(page);
      else {
        const key = indexPageKey(this.opts.name, page, cur.epoch, cur.version + 1);
        await this.opts.store.put(key, encoded.body);
        this.pageBytes += encoded.body.length;
        image.pages.set(page, { page, key, size: encoded.body.length, crc: encoded.crc });
      }
      if (old !== undefined) this.release(old.key);
      image.dirtyPages.delete(page);
    }
    const cutoff = Date.now() - this.opts.gcGraceMs;
    this.released = this.released.filter((r) => Date.parse(r.at) >= cutoff);
    const pages: PageRef[] = [...image.pages.values()].sort((a, b) => a.page - b.page);
    return {
      ...cur,
      size: image.shape.size,
      seq,
      ackedSeq: Math.max(seq, this.opts.ackedSeq()),
      pages,
      deltas: [...image.deltaRefs(), ...deltas.map((d) => d.ref)],
      released: [...this.released],
    };
  }

  /**
   * Keeps the lease: a head write whenever none happened for a third of it, retried with back-off
   * (at most `retryMaxMs` apart) while it fails, so that writes waiting for the lease after a long
   * outage are answered within about a second of the store's return.
   */
  startRenewals(retryInitialMs: number, retryMaxMs: number): void {
    this.retry = { initialMs: retryInitialMs, maxMs: retryMaxMs };
    this.schedule(this.opts.writer.head.leaseMs / 6);
  }

  /** A write is waiting for the lease: renew now rather than at the next tick. */
  renewSoon(): void {
    if (this.renewing) return;
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped || this.opts.writer.deposed !== undefined) return;
    if (this.renewTimer !== undefined) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.tick(), ms);
    this.renewTimer.unref();
  }

  private async tick(): Promise<void> {
    this.renewTimer = undefined;
    const leaseMs = this.opts.writer.head.leaseMs;
    let delay = leaseMs / 6;
    if (this.opts.writer.sinceLastWrite() >= leaseMs / 3 || !this.opts.writer.leaseValid()) {
      this.renewing = true;
      try {
        await this.flush();
        if (this.renewFailures > 0) this.opts.health.storeAnswered();
        this.renewFailures = 0;
      } catch (err) {
        if (err instanceof VolumeDeposedError) return;
        this.renewFailures++;
        this.opts.logger.warn({ err: (err as Error).message, attempt: this.renewFailures }, 'could not renew the volume lease; retrying');
        this.opts.health.storeFailed(err);
        delay = Math.min(delay, backoffMs(this.renewFailures - 1, this.retry.initialMs, this.retry.maxMs));
      } finally {
        this.renewing = false;
      }
    }
    this.schedule(delay);
  }

  stop(): void {
    this.stopped = true;
    if (this.renewTimer !== undefined) clearTimeout(this.renewTimer);
    this.renewTimer = undefined;
  }
}
