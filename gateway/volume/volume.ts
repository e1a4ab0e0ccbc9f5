// gateway/volume owns a served volume: this Volume (reads, writes, flush, status), opening and
// wiring its parts (open-volume.ts, wiring.ts), the extent cache and read path, pending changes,
// delta building and upload, head commits, compaction, the catalog and format 1 upgrade.
import { join } from 'node:path';
import {
  InvalidArgumentError,
  ReadOnlyError,
  RequestAbortedError,
  RequestDroppedError,
  VolumeBusyError,
  VolumeDeposedError,
} from '../../shared/errors.js';
import type { HangControl, HangMonitor } from '../hang/index.js';
import type { Head } from '../image/head.js';
import type { HeadWriter } from '../image/head-writer.js';
import type { VolumeImage } from '../image/volume-image.js';
import type { BaseRef } from '../image/index-page.js';
import type { Journal } from '../journal/journal.js';
import { RecordKind } from '../journal/record.js';
import type { AllocationExtent, NbdExport, RequestContext, ZeroOptions } from '../nbd/export.js';
import type { ObjectStore } from '../store/object-store.js';
import { overlayAllocation } from './allocation.js';
import type { Compactor } from './compactor.js';
import type { ExtentCache } from './extent-cache.js';
import type { HeadCommits } from './head-commits.js';
import type { PendingChanges } from './pending-changes.js';
import type { ReadPath } from './read-path.js';
import type { Uploader } from './uploader.js';
import { volumeStats, type VolumeSnapshot, type VolumeStats } from './volume-stats.js';
import { wireVolume } from './wiring.js';
import type { VolumeOptions, VolumeParts } from './options.js';

/** Extents one base:allocation answer covers at most. */
const ALLOCATION_EXTENTS = 256;

/** Largest single write the journal accepts, matching the NBD maximum payload. */
export const MAX_WRITE_BYTES = 32 * 1024 * 1024;

export type { VolumeOptions, VolumeParts } from './options.js';
export type { VolumeSnapshot, VolumeStats } from './volume-stats.js';

/**
 * One served volume: the journal (durability), the pending changes (what the store still lacks), the
 * cache and store image (what reads are served from), the uploader that ships the journal as deltas,
 * the compactor, and the head writer that holds the volume's lease. Writes wait only for the journal
 * and the lease; reads wait only for bytes that are neither cached nor in the journal.
 */
export class Volume implements NbdExport {
  readonly name: string;
  readonly description: string;
  readonly readOnly: boolean;
  readonly canMultiConn = true;
  readonly minimumBlockSize = 1;
  readonly preferredBlockSize = 4096;
  readonly extentSize: number;

  /** The volume's hang engine: outside it, read through status() and changed through hangControl() only. */
  private readonly hang: HangMonitor;
  private readonly control: HangControl;
  private readonly pending: PendingChanges;
  private readonly extentCache: ExtentCache;
  private readonly reads: ReadPath;
  private readonly commits: HeadCommits;
  private readonly uploader: Uploader;
  private readonly compactor: Compactor;
  private readonly writer: HeadWriter;
  private readonly image: VolumeImage;
  private readonly journal: Journal;
  private clients = 0;
  private closed = false;
  private acked = 0;
  private leaseWaiting = { requests: 0, bytes: 0 };
  private deposedError: VolumeDeposedError | undefined;

  constructor(
    private readonly opts: VolumeOptions,
    parts: VolumeParts,
  ) {
    ({ writer: this.writer, image: this.image, journal: this.journal } = parts);
    const shape = this.image.shape;
    this.name = shape.name;
    this.extentSize = shape.extentSize;
    this.readOnly = shape.readOnly || opts.forceReadOnly === true;
    this.description = `Holdfast volume ${shape.name}`;
    ({
      pending: this.pending,
      extentCache: this.extentCache,
      hang: this.hang,
      hangControl: this.control,
      reads: this.reads,
      commits: this.commits,
      uploader: this.uploader,
      compactor: this.compactor,
    } = wireVolume(opts, parts, { ackedSeq: () => this.acked, leaseWaiting: () => this.leaseWaiting }));
    for (const entry of parts.replayed) this.pending.add(entry);
    this.acked = parts.replayed.reduce((max, e) => Math.max(max, e.seq), this.writer.head.seq);
    this.commits.startRenewals(opts.retryInitialMs, opts.retryMaxMs);
    if (parts.replayed.length > 0) {
      opts.logger.info({ records: parts.replayed.length, bytes: this.journal.usedBytes }, 'journal replayed; uploading its backlog');
      this.uploader.kick();
    }
    this.compactor.maybeRun();
  }

  static journalDirFor(journalRoot: string, name: string): string {
    return join(journalRoot, name);
  }

  /** The store the volume lives in (snapshots are written there). */
  get storeOf(): ObjectStore {
    return this.opts.store;
  }

  /** The head as last written by this gateway. */
  get head(): Head {
    return this.writer.head;
  }

  get deposed(): VolumeDeposedError | undefined {
    return this.deposedError;
  }

  /** The size the committed head records; a resize changes it for connections made after. */
  get size(): number {
    return this.image.shape.size;
  }

  /** NBD connections attached to the volume now. */
  get clientCount(): number {
    return this.clients;
  }

  /**
   * Changes the volume's size. A grow is recorded in the head before anything past the old end can be
   * written; attached clients keep the size they negotiated until they reconnect. A shrink cuts data
   * off, so it is refused while clients are attached: the cut part of the new last extent is zeroed
   * (a later grow reads zeros there), everything is uploaded, then the head records the new size and
   * releases the extents past it.
   */
  async resize(size: number): Promise<void> {
    this.checkWritable();
    const old = this.size;
    if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0)
      throw new InvalidArgumentError(`volume size must be a positive multiple of 512 bytes, not ${size}`);
    if (size === old) return;
    const lastExtent = (bytes: number): number => Math.ceil(bytes / this.extentSize) - 1;
    if (size < old) {
      if (this.clients > 0)
        throw new VolumeBusyError(`volume ${this.name} has ${this.clients} client(s) attached: disconnect them before shrinking it`);
      const cutEnd = Math.min(old, (lastExtent(size) + 1) * this.extentSize);
      if (cutEnd > size) await this.commit(RecordKind.Zero, size, cutEnd - size, undefined);
      await this.drain();
    }
    await this.commits.resize(size);
    // Cached extents past the new end, and a last extent whose length changed, are read afresh.
    for (let i = Math.min(lastExtent(old), lastExtent(size)); i <= Math.max(lastExtent(old), lastExtent(size)); i++)
      this.extentCache.delete(i);
    this.opts.logger.info({ volume: this.name, from: old, to: size }, 'volume resized');
  }

  attach(): void {
    this.clients++;
  }

  detach(): void {
    this.clients--;
  }

  async read(offset: number, length: number, ctx?: RequestContext): Promise<Buffer> {
    this.checkServed();
    this.checkRange(offset, length);
    return this.reads.read(offset, length, ctx);
  }

  /** The NBD reply carrying what `read` returned has left: a lent cache view may be reused. */
  readDone(data: Buffer): void {
    this.reads.readDone(data);
  }

  async write(offset: number, data: Buffer, _fua: boolean, ctx?: RequestContext): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, data.length);
    if (data.length > MAX_WRITE_BYTES) throw new InvalidArgumentError(`write of ${data.length} bytes exceeds ${MAX_WRITE_BYTES}`);
    await this.commit(RecordKind.Write, offset, data.length, data, ctx);
  }

  async trim(offset: number, length: number, _fua: boolean, ctx?: RequestContext): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    await this.commit(RecordKind.Zero, offset, length, undefined, ctx);
  }

  /** A zeroed range is stored as a zero run (a hole); NO_HOLE is honoured by reading as zeros just the same. */
  async writeZeroes(offset: number, length: number, _options: ZeroOptions, ctx?: RequestContext): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    await this.commit(RecordKind.Zero, offset, length, undefined, ctx);
  }

  /** Every write is durable before it is acknowledged, so a flush waits only for writes still in flight. */
  async flush(): Promise<void> {
    this.checkServed();
    await this.journal.sync();
  }

  /** Lowers the cache's bound by `bytes` (at most half) for the gateway's memory limit; 0 restores it. */
  squeezeCache(bytes: number): void {
    this.extentCache.squeeze(bytes);
  }

  get cacheMaxBytes(): number {
    return this.extentCache.maxBytes;
  }

  /** NBD_CMD_CACHE: loads the range's extents into the cache, as many as a quarter of the cache holds. */
  async prefetch(offset: number, length: number, ctx?: RequestContext): Promise<void> {
    this.checkServed();
    this.checkRange(offset, length);
    const first = Math.floor(offset / this.extentSize);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / this.extentSize);
    for (let i = first; i <= last && i - first < Math.max(1, Math.floor(this.extentCache.boundBytes / this.extentSize)); i++)
      await this.reads.prefetch(i, ctx);
  }

  /**
   * base:allocation: holes are ranges no stored object and no pending write has data for; they read
   * as zeros. At most ALLOCATION_EXTENTS extents are answered at once (a base extent's tables may have
   * to be fetched): the client asks again for the rest.
   */
  async allocation(offset: number, length: number, ctx?: RequestContext): Promise<readonly AllocationExtent[]> {
    this.checkServed();
    this.checkRange(offset, length);
    const end = Math.min(offset + length, (Math.floor(offset / this.extentSize) + ALLOCATION_EXTENTS) * this.extentSize);
    const stored = await this.hang.run((attempt) => this.image.allocation(offset, end - offset, attempt), 0, ctx?.signal);
    return overlayAllocation(stored, offset, this.pending, this.extentSize).map((s) => ({ length: s.length, hole: s.hole, zero: s.hole }));
  }

  private async commit(kind: RecordKind, offset: number, length: number, data: Buffer | undefined, ctx?: RequestContext): Promise<void> {
    if (length === 0) return;
    this.checkServed();
    const payload = data?.length ?? 0;
    const refusal = this.hang.writeRefusal(!this.journal.hasRoom(payload));
    if (refusal !== undefined) throw refusal;
    const room = this.journal.reserve(payload, ctx?.signal);
    if (room) {
      this.uploader.kick();
      await room;
      if (ctx?.signal.aborted || this.closed) {
        this.journal.cancelReservation(payload);
        throw new RequestAbortedError('client disconnected while waiting for journal space');
      }
    }
    const entry = this.journal.append(kind, offset, length, data);
    this.pending.add(entry);
    this.reads.applyToCache(entry);
    const durable = this.journal.waitDurable(entry.seq, payload);
    if (durable) await durable;
    this.uploader.notify();
    // Acknowledged only while the lease is ours: a gateway that may have lost the volume answers nothing.
    const lease = this.writer.waitForLease();
    if (lease) await this.waitLease(lease, payload);
    if (entry.seq > this.acked) this.acked = entry.seq;
  }

  private async waitLease(lease: Promise<void>, bytes: number): Promise<void> {
    this.leaseWaiting.requests++;
    this.leaseWaiting.bytes += bytes;
    this.hang.refresh();
    this.commits.renewSoon();
    try {
      await lease;
    } catch (err) {
      if (err instanceof VolumeDeposedError) throw new RequestDroppedError(err.message, { cause: err });
      throw err;
    } finally {
      this.leaseWaiting.requests--;
      this.leaseWaiting.bytes -= bytes;
    }
  }

  private checkServed(): void {
    if (this.deposedError !== undefined) throw new RequestDroppedError(this.deposedError.message, { cause: this.deposedError });
  }

  private checkWritable(): void {
    this.checkServed();
    if (this.readOnly) throw new ReadOnlyError(`volume ${this.name} is read-only`);
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new InvalidArgumentError(`range ${offset}+${length} is outside volume ${this.name} (${this.size} bytes)`);
    }
  }

  /** Resolves when every acknowledged change is named by a committed head. */
  drain(): Promise<void> {
    return this.uploader.flushThrough(this.journal.lastSequence);
  }

  /**
   * Replaces the volume's whole contents with these base extents (already in the store): what an
   * import does. Everything acknowledged before is uploaded first; every extent without a base reads
   * as zeros afterwards.
   */
  async replaceContents(bases: ReadonlyMap<number, BaseRef>): Promise<void> {
    this.checkWritable();
    await this.drain();
    for (const key of this.image.replaceAll(bases)) this.commits.release(key);
    this.extentCache.clear();
    await this.commits.flush();
  }

  /** The epoch this gateway holds the volume at, and the sequence its store contents are complete to. */
  get committedSeq(): number {
    return this.commits.committedSeq;
  }

  /** Folds every delta into base extents now (tests; `holdfast volume compact`). */
  compact(): Promise<void> {
    return this.compactor.runNow();
  }

  /**
   * Makes everything acknowledged so far part of the committed head and returns that head: the
   * contents of a snapshot taken now (the caller stores it; see image/snapshots.ts).
   */
  async committedHead(): Promise<Head> {
    this.checkServed();
    await this.uploader.flushThrough(this.acked);
    return this.writer.head;
  }

  /** Another gateway took the volume: stop everything, answer nothing more, never write it again. */
  depose(err: VolumeDeposedError): void {
    if (this.deposedError !== undefined) return;
    this.deposedError = err;
    this.commits.stop();
    void this.uploader.stop();
    void this.compactor.stop();
    this.hang.close();
    this.writer.failLeaseWaiters(err);
    this.opts.onDeposed?.(err);
  }

  stats(): VolumeStats {
    return volumeStats({
      name: this.name,
      size: this.size,
      extentSize: this.extentSize,
      readOnly: this.readOnly,
      clients: this.clients,
      journal: this.journal,
      pending: this.pending,
      cache: this.extentCache,
      uploader: this.uploader,
      compactor: this.compactor,
      image: this.image,
      head: this.writer.head,
      ackedSeq: this.acked,
      leaseRemainingMs: this.writer.leaseRemaining(),
      deposed: this.deposedError !== undefined,
      corruptReads: this.hang.counters.storageErrors.corrupt,
      diskCache: this.opts.diskCache === undefined ? undefined : this.image.reader.counters,
      metadataBytes: this.commits.metadataBytes,
    });
  }

  /** What the admin API and metrics show of the volume: its numbers and its hang engine's state and counters. */
  status(): VolumeSnapshot {
    const c = this.hang.counters;
    return {
      stats: this.stats(),
      hang: this.hang.snapshot(),
      hangCounters: { ...c, storageErrors: { ...c.storageErrors } },
    };
  }

  /** What the admin API may change of the volume's hang handling: its policy, pause, resume, release. */
  hangControl(): HangControl {
    return this.control;
  }

  /** Gateway shutdown begins: held requests are dropped unanswered and no more are held; close() follows. */
  stopHolding(): void {
    this.hang.close();
  }

  /**
   * Stops uploads and compaction (what is under way finishes) and closes the journal once what was
   * queued is durable. With `release`, a volume whose every change is in the store is handed back
   * (no owner), so any gateway can take it at once; otherwise its journal keeps the rest.
   */
  async close(opts: { release?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hang.close();
    this.commits.stop();
    await this.compactor.stop();
    await this.uploader.stop();
    await this.journal.close();
    if (opts.release === true && this.deposedError === undefined && this.pending.count === 0) {
      await this.commits.releaseOwnership().catch((err: unknown) => {
        this.opts.logger.warn({ err }, 'could not hand the volume back; its lease runs out by itself');
      });
    }
  }
}
