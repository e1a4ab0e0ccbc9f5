/**
 * The owner's side of a volume head: every write of it is a conditional PUT on the etag this gateway
 * last wrote, one at a time, and every success extends the lease — measured on the monotonic clock from
 * the moment the write was *sent* (docs/volume-format-2.md, "Fencing"). A write that loses means another
 * gateway took the volume: the writer is deposed for good.
 */
import { defined } from '../../shared/checked.js';
import type { Logger } from 'pino';
import { VolumeDeposedError, errorMessage } from '../../shared/errors.js';
import { type ObjectStore, PreconditionFailedError } from '../store/object-store.js';
import { encodeHead, type Head, parseHead } from './head.js';

export interface HeadWriterOptions {
  readonly store: ObjectStore;
  readonly key: string;
  readonly logger: Logger;
  /** Monotonic milliseconds. */
  readonly now?: () => number;
  /** Told once, when a write finds another epoch in the head. */
  readonly onDeposed?: (err: VolumeDeposedError) => void;
}

/** What a head write changes: the caller builds it from its state when the write starts. */
export type HeadChange = (current: Head) => Head | Promise<Head>;

export class HeadWriter {
  private headValue: Head;
  private etag: string;
  /** The outcome of the last write is unknown (a timeout, a 500): re-read before the next one. */
  private uncertain = false;
  private validUntil: number;
  private lastSent = -Infinity;
  private queue: Promise<void> = Promise.resolve();
  private deposedError: VolumeDeposedError | undefined;
  private readonly now: () => number;
  private leaseWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  /** Bytes of head bodies sent (what the head costs in PUTs). */
  bytesSent = 0;

  /** `sentAt`: when the write that produced `head` was sent (the lease runs from there). */
  constructor(
    private readonly opts: HeadWriterOptions,
    head: Head,
    etag: string,
    sentAt: number,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.headValue = head;
    this.etag = etag;
    this.validUntil = sentAt + head.leaseMs;
    this.lastSent = sentAt;
  }

  /** The head as last written (or adopted after an uncertain write). */
  get head(): Head {
    return this.headValue;
  }

  get deposed(): VolumeDeposedError | undefined {
    return this.deposedError;
  }

  /** True while this gateway may acknowledge writes. */
  leaseValid(): boolean {
    return this.deposedError === undefined && this.now() < this.validUntil;
  }

  /** Milliseconds of lease left (negative once it ran out). */
  leaseRemaining(): number {
    return this.validUntil - this.now();
  }

  /** Milliseconds since the last head write was sent. */
  sinceLastWrite(): number {
    return this.now() - this.lastSent;
  }

  /**
   * Resolves when the lease is valid again (a renewal succeeded), at once if it is; rejects when the
   * writer is deposed. Undefined on the fast path, so an acknowledgement allocates nothing.
   */
  waitForLease(): Promise<void> | undefined {
    if (this.leaseValid()) return undefined;
    if (this.deposedError !== undefined) return Promise.reject(this.deposedError);
    return new Promise((resolve, reject) => this.leaseWaiters.push({ resolve, reject }));
  }

  get waitingForLease(): number {
    return this.leaseWaiters.length;
  }

  /** Fails everything waiting for the lease (hang timeout, shutdown). */
  failLeaseWaiters(err: Error): void {
    const waiters = this.leaseWaiters;
    this.leaseWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  /**
   * Writes a new head built by `change` from the current one, after every write queued before it;
   * `applied` runs as soon as the write succeeded, before the next write is built. Rejects with
   * VolumeDeposedError when another gateway holds the volume, or with the store's error (the caller
   * retries; the write's outcome is then unknown and the next one re-reads first).
   */
  write(change: HeadChange, applied?: (head: Head) => void): Promise<Head> {
    const run = this.queue.then(() => this.writeNow(change, applied));
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async writeNow(change: HeadChange, applied: ((head: Head) => void) | undefined): Promise<Head> {
    if (this.deposedError !== undefined) throw this.deposedError;
    if (this.uncertain) await this.reconcile();
    const next = await change(this.headValue);
    const body = encodeHead({ ...next, version: this.headValue.version + 1, epoch: this.headValue.epoch, owner: next.owner });
    const sentAt = this.now();
    this.bytesSent += body.length;
    let etag: string;
    try {
      etag = await this.opts.store.putIfMatch(this.opts.key, body, this.etag);
    } catch (err) {
      if (err instanceof PreconditionFailedError) {
        await this.reconcile();
        // Our own earlier write landed after all (reconcile adopted it): build this one again on top.
        return this.writeNow(change, applied);
      }
      this.uncertain = true;
      throw err;
    }
    this.etag = etag;
    this.headValue = parseHead(body, this.opts.key);
    this.lastSent = sentAt;
    this.validUntil = Math.max(this.validUntil, sentAt + this.headValue.leaseMs);
    applied?.(this.headValue);
    if (this.leaseValid()) this.wakeLeaseWaiters();
    return this.headValue;
  }

  /**
   * Reads the head after a lost or uncertain write. Still our epoch and instance: a write of ours landed
   * though its answer was lost — adopt it. Anything else: deposed.
   */
  private async reconcile(): Promise<void> {
    const got = await this.opts.store.getVersioned(this.opts.key);
    const mine = this.headValue;
    if (got !== undefined) {
      const stored = parseHead(got.body, this.opts.key);
      if (stored.epoch === mine.epoch && stored.owner?.instance === mine.owner?.instance && stored.version >= mine.version) {
        this.headValue = stored;
        this.etag = got.etag;
        this.uncertain = false;
        return;
      }
      this.depose(
        new VolumeDeposedError(
          `volume ${mine.name} was taken by ${stored.owner === null ? 'nobody (its head was released)' : `gateway ${stored.owner.gateway} on ${stored.owner.host}`} (epoch ${stored.epoch}, ours ${mine.epoch})`,
        ),
      );
    } else {
      this.depose(new VolumeDeposedError(`volume ${mine.name} was deleted while this gateway served it`));
    }
    throw defined(this.deposedError, 'deposed error');
  }

  private depose(err: VolumeDeposedError): void {
    if (this.deposedError !== undefined) return;
    this.deposedError = err;
    this.opts.logger.error({ err: errorMessage(err) }, 'deposed: another gateway owns this volume now; it is no longer served here');
    this.failLeaseWaiters(err);
    this.opts.onDeposed?.(err);
  }

  private wakeLeaseWaiters(): void {
    const waiters = this.leaseWaiters;
    this.leaseWaiters = [];
    for (const w of waiters) w.resolve();
  }
}
