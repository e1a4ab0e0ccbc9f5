import { join } from 'node:path';
import type { Logger } from 'pino';
import { InvalidArgumentError, JournalCorruptError, ReadOnlyError, RequestAbortedError } from '../../shared/errors.js';
import { VolumeCorruptError } from './errors.js';
import type { VolumeManifest } from '../../shared/volume-manifest.js';
import { Journal, type JournalEntry } from '../journal/journal.js';
import { RecordKind } from '../journal/record.js';
import type { SegmentFileOps } from '../journal/segment-file.js';
import type { AllocationExtent, NbdExport, RequestContext, ZeroOptions } from '../nbd/export.js';
import type { ObjectStore } from '../store/object-store.js';
import { DEFAULT_HANG_POLICY, type HangPolicy } from '../../shared/hang-policy.js';
import { LogEventSink, type EventSink } from '../events/event-sink.js';
import { HangMonitor } from '../hang/hang-monitor.js';
import { type CacheReservation, ExtentCache, type MaterializedExtent } from './extent-cache.js';
import { extentKey } from './layout.js';
import { PendingChanges } from './pending-changes.js';
import { Semaphore } from './semaphore.js';
import { type ExtentSnapshot, Uploader } from './uploader.js';

/** Extents being fetched and rebuilt at once, per volume (each holds one extent in memory). */
const MAX_CONCURRENT_LOADS = 16;

/** Extents whose cold misses are remembered (to spot sequential or repeated reads). */
const RECENT_MISSES = 4096;

/**
 * Read-ahead: once this many bytes were read back to back, the extents after the read are loaded
 * before they are asked for, up to READAHEAD_EXTENTS at once. One 4 MiB GET at a time cannot keep
 * the store busy; several can, which is what makes a cold sequential read run near the store's speed.
 */
const READAHEAD_AFTER_BYTES = 1024 * 1024;
const READAHEAD_EXTENTS = 8;

/** Largest single write the journal accepts, matching the NBD maximum payload. */
export const MAX_WRITE_BYTES = 32 * 1024 * 1024;

export interface VolumeOptions {
  readonly manifest: VolumeManifest;
  readonly store: ObjectStore;
  /** The volume's own journal directory (the gateway's journal dir + volume name). */
  readonly journalDir: string;
  readonly cacheBytes: number;
  readonly journalLimitBytes: number;
  readonly segmentBytes: number;
  readonly uploadConcurrency: number;
  readonly uploadDelayMs: number;
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
  readonly logger: Logger;
  readonly fileOps?: SegmentFileOps;
  /** Serve read-only even if the manifest allows writes. */
  readonly forceReadOnly?: boolean;
  /** Hold policy for this volume; default: DEFAULT_HANG_POLICY. */
  readonly hangPolicy?: HangPolicy;
  /** Where hang, timeout, outage and pressure events go; default: the log. */
  readonly events?: EventSink;
  /** Names this gateway instance in events. */
  readonly gatewayId?: string;
}

export interface VolumeStats {
  readonly name: string;
  readonly size: number;
  readonly extentSize: number;
  readonly readOnly: boolean;
  readonly clients: number;
  readonly journalBytes: number;
  readonly journalLimitBytes: number;
  readonly journalSegments: number;
  readonly pendingEntries: number;
  readonly dirtyExtents: number;
  readonly uploadsInFlight: number;
  readonly cacheBytes: number;
  readonly cacheHits: number;
  readonly cacheMisses: number;
  readonly puts: number;
  readonly deletes: number;
  readonly bytesUploaded: number;
  readonly uploadFailures: number;
}

/**
 * One served volume: the journal (durability), the pending changes (what the store still lacks),
 * the extent cache (what reads are served from) and the uploader. Writes wait only for the journal;
 * reads wait only for extents that are neither cached nor fully covered by the journal.
 */
export class Volume implements NbdExport {
  readonly name: string;
  readonly description: string;
  readonly size: number;
  readonly readOnly: boolean;
  readonly canMultiConn = true;
  readonly minimumBlockSize = 1;
  readonly preferredBlockSize = 4096;
  readonly extentSize: number;

  private readonly pending = new PendingChanges();
  private readonly cache: ExtentCache;
  private readonly materializing = new Map<number, Promise<MaterializedExtent>>();
  private readonly loads = new Semaphore(MAX_CONCURRENT_LOADS);
  private readonly coldMisses = new Map<number, { count: number; nextOffset: number }>();
  /** Where a read continuing the current sequential stream would start, and how far it has run. */
  private sequentialNext = -1;
  private sequentialRun = 0;
  private readonly uploader: Uploader;
  private clients = 0;
  private closed = false;
  readonly hang: HangMonitor;

  private constructor(
    private readonly opts: VolumeOptions,
    private readonly journal: Journal,
  ) {
    const m = opts.manifest;
    this.name = m.name;
    this.size = m.size;
    this.extentSize = m.extentSize;
    this.readOnly = m.readOnly || opts.forceReadOnly === true;
    this.description = `Holdfast volume ${m.name} (${opts.store.location})`;
    this.cache = new ExtentCache(opts.cacheBytes);
    this.uploader = new Uploader({
      volume: m.name,
      store: opts.store,
      journal,
      pending: this.pending,
      snapshot: (extent) => this.snapshot(extent),
      keyFor: (extent) => extentKey(m.name, extent),
      concurrency: opts.uploadConcurrency,
      delayMs: opts.uploadDelayMs,
      retryInitialMs: opts.retryInitialMs,
      retryMaxMs: opts.retryMaxMs,
      logger: opts.logger,
      onStoreError: (err) => this.hang.storeFailed(err),
      onStoreRecovered: () => this.hang.storeAnswered(),
    });
    this.hang = new HangMonitor({
      volume: m.name,
      gateway: opts.gatewayId ?? 'holdfast',
      policy: opts.hangPolicy ?? { ...DEFAULT_HANG_POLICY, retryMaxMs: opts.retryMaxMs },
      probe: () => opts.store.probe(),
      journal: {
        held: () => journal.waiting(),
        failWaiters: (err) => journal.failWaiters(err),
        usage: () => ({ bytes: journal.usedBytes, limit: journal.limitBytes }),
      },
      events: opts.events ?? new LogEventSink(opts.logger),
      logger: opts.logger,
      retryInitialMs: opts.retryInitialMs,
      onStoreRecovered: () => this.uploader.retryNow(),
    });
  }

  /** Replays the journal and starts uploading what it still owes the store. Needs no store access. */
  static async open(opts: VolumeOptions): Promise<Volume> {
    // The journal reports disk failures to the hang engine, which exists only once the volume does.
    let volume: Volume | undefined;
    const { journal, entries } = await Journal.open({
      dir: opts.journalDir,
      segmentBytes: opts.segmentBytes,
      limitBytes: opts.journalLimitBytes,
      maxPayload: MAX_WRITE_BYTES,
      logger: opts.logger,
      ...(opts.fileOps !== undefined ? { fileOps: opts.fileOps } : {}),
      retryInitialMs: opts.retryInitialMs,
      retryMaxMs: opts.retryMaxMs,
      onIoError: (err) => volume?.hang.journalFailed(err),
      onIoRecovered: () => {
        volume?.hang.journalRecovered();
        // Extents skipped while their records could not be written can be uploaded again.
        volume?.uploader.notify();
      },
    });
    volume = new Volume(opts, journal);
    for (const entry of entries) {
      if (entry.offset + entry.length > volume.size) {
        await journal.close();
        throw new JournalCorruptError(`journal ${opts.journalDir} has a record past the end of volume ${volume.name}`);
      }
      volume.track(entry);
    }
    if (entries.length > 0) {
      opts.logger.info({ volume: volume.name, records: entries.length, bytes: journal.usedBytes }, 'journal replayed; uploading its backlog');
      volume.uploader.kick();
    }
    return volume;
  }

  static journalDirFor(journalRoot: string, name: string): string {
    return join(journalRoot, name);
  }

  attach(): void {
    this.clients++;
  }

  detach(): void {
    this.clients--;
  }

  async read(offset: number, length: number, ctx?: RequestContext): Promise<Buffer> {
    this.checkRange(offset, length);
    this.noteSequential(offset, length);
    const view = this.cachedView(offset, length);
    if (view !== undefined) return view;
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const index = Math.floor(pos / this.extentSize);
      const inExtent = pos - index * this.extentSize;
      const n = Math.min(length - done, this.extentLength(index) - inExtent);
      const cached = this.cache.get(index);
      if (cached !== undefined) {
        copyExtent(cached, out, done, inExtent, n);
      } else if (!(await this.readFromJournal(index, pos, n, out, done))) {
        await this.readCold(index, pos, n, out, done, ctx);
      }
      if (ctx?.signal.aborted) throw new RequestAbortedError('client disconnected');
      done += n;
    }
    return out;
  }

  /** A read inside one cached extent is answered from the cache's own bytes, without a copy. */
  private cachedView(offset: number, length: number): Buffer | undefined {
    const index = Math.floor(offset / this.extentSize);
    const inExtent = offset - index * this.extentSize;
    if (length === 0 || inExtent + length > this.extentLength(index)) return undefined;
    // peek first: a miss is counted once, by the read itself.
    if (this.cache.peek(index) === undefined) return undefined;
    const cached = this.cache.get(index)!;
    return cached.data === null ? Buffer.alloc(length) : cached.data.subarray(inExtent, inExtent + length);
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

  /** NO_HOLE needs nothing: Holdfast does not report allocation, so a zeroed range is never visibly a hole. */
  async writeZeroes(offset: number, length: number, options: ZeroOptions, ctx?: RequestContext): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    await this.commit(RecordKind.Zero, offset, length, undefined, ctx);
  }

  /** Every write is durable before it is acknowledged, so a flush waits only for writes still in flight. */
  async flush(): Promise<void> {
    await this.journal.sync();
  }

  /** Format 1 does not know where its holes are: the whole range is reported as data, not known to be zero. */
  allocation(_offset: number, length: number): Promise<readonly AllocationExtent[]> {
    return Promise.resolve([{ length, hole: false, zero: false }]);
  }

  /** A read whose data is dropped: it leaves the range's extents in the cache. */
  async prefetch(offset: number, length: number, ctx?: RequestContext): Promise<void> {
    await this.read(offset, length, ctx);
  }

  private async commit(kind: RecordKind, offset: number, length: number, data: Buffer | undefined, ctx?: RequestContext): Promise<void> {
    if (length === 0) return;
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
    this.track(entry);
    this.applyToCache(entry);
    this.uploader.notify();
    const durable = this.journal.waitDurable(entry.seq, payload);
    if (durable) await durable;
  }

  /** Adds a journal entry to the pending set of every extent it touches. */
  private track(entry: JournalEntry): void {
    const first = Math.floor(entry.offset / this.extentSize);
    const last = Math.floor((entry.offset + entry.length - 1) / this.extentSize);
    const now = performance.now();
    for (let i = first; i <= last; i++) this.pending.add(i, entry, now);
  }

  /** Writes land in cached extents at once, so cache hits never need the journal. */
  private applyToCache(entry: JournalEntry): void {
    const first = Math.floor(entry.offset / this.extentSize);
    const last = Math.floor((entry.offset + entry.length - 1) / this.extentSize);
    for (let i = first; i <= last; i++) {
      const cached = this.cache.peek(i);
      if (cached === undefined) continue;
      const resized = this.applySync(cached, i, entry);
      cached.seq = entry.seq;
      if (resized) this.cache.set(i, cached);
    }
  }

  /** Applies an entry whose payload is still in memory; returns true when the buffer was allocated or dropped. */
  private applySync(target: MaterializedExtent, index: number, entry: JournalEntry): boolean {
    const { start, end, extentStart } = this.overlap(index, entry);
    if (entry.kind === RecordKind.Zero) {
      if (target.data === null) return false;
      if (start === extentStart && end === extentStart + this.extentLength(index)) {
        target.data = null;
        return true;
      }
      target.data.fill(0, start - extentStart, end - extentStart);
      return false;
    }
    let resized = false;
    if (target.data === null) {
      target.data = Buffer.alloc(this.extentLength(index));
      resized = true;
    }
    entry.data!.copy(target.data, start - extentStart, start - entry.offset, end - entry.offset);
    return resized;
  }

  private async applyAsync(target: MaterializedExtent, index: number, entry: JournalEntry): Promise<void> {
    if (entry.kind === RecordKind.Zero || entry.data !== undefined) {
      this.applySync(target, index, entry);
      return;
    }
    const { start, end, extentStart } = this.overlap(index, entry);
    if (target.data === null) target.data = Buffer.alloc(this.extentLength(index));
    await this.journal.readPayload(entry, start - entry.offset, end - start, target.data, start - extentStart);
  }

  private overlap(index: number, entry: JournalEntry): { start: number; end: number; extentStart: number } {
    const extentStart = index * this.extentSize;
    const start = Math.max(entry.offset, extentStart);
    const end = Math.min(entry.offset + entry.length, extentStart + this.extentLength(index));
    return { start, end, extentStart };
  }

  private extentLength(index: number): number {
    return Math.min(this.extentSize, this.size - index * this.extentSize);
  }

  /**
   * The extent's current contents: stored object plus pending changes. Concurrent callers share one
   * load. `keep`: put it in the cache — reads do; the uploader does not, so that uploading a volume
   * never evicts what its guest is reading.
   */
  private materialize(index: number, keep = true): Promise<MaterializedExtent> {
    let p = this.materializing.get(index);
    if (p === undefined) {
      p = this.load(index, keep).finally(() => this.materializing.delete(index));
      this.materializing.set(index, p);
    }
    return p;
  }

  /**
   * Loading an extent holds a whole extent in memory; the number loading at once is bounded so that
   * many cold reads (many clients, 128 requests each) cannot allocate without bound.
   */
  private async load(index: number, keep: boolean): Promise<MaterializedExtent> {
    const permit = this.loads.acquire();
    if (permit) await permit;
    // An upload's load is already counted by its snapshot; a read's counts until it is cached.
    const reservation = keep ? this.cache.reserve(this.extentLength(index)) : undefined;
    try {
      return await this.loadUnbounded(index, keep, reservation);
    } finally {
      reservation?.release();
      this.loads.release();
    }
  }

  private async loadUnbounded(index: number, keep: boolean, reservation: CacheReservation | undefined): Promise<MaterializedExtent> {
    for (;;) {
      const generation = this.pending.generation(index);
      // When pending writes cover the whole extent the stored object is overwritten entirely: a
      // sequentially written extent is uploaded without first downloading the one it replaces.
      const start = index * this.extentSize;
      const overwritten = covers(this.pending.entries(index), start, start + this.extentLength(index));
      const extent: MaterializedExtent = { data: overwritten ? Buffer.allocUnsafe(this.extentLength(index)) : await this.fetch(index), seq: 0 };
      while (this.pending.generation(index) === generation) {
        const newer = this.firstNewer(index, extent.seq);
        if (newer === undefined) {
          // Checked and cached with no await in between, so no write can slip in unseen.
          if (keep) {
            reservation?.release();
            this.cache.set(index, extent);
          }
          return extent;
        }
        try {
          await this.applyAsync(extent, index, newer);
          extent.seq = newer.seq;
        } catch (err) {
          // An upload finished meanwhile and its segment may be gone: start over from the new object.
          if (this.pending.generation(index) === generation) throw err;
        }
      }
    }
  }

  /**
   * Serves a read that pending changes cover completely without touching the store, so data the
   * guest wrote stays readable while the store is down. Returns false when the journal does not
   * cover the range (or an upload raced the read), and the caller goes to the store.
   */
  private async readFromJournal(index: number, pos: number, n: number, out: Buffer, outOffset: number): Promise<boolean> {
    const list = this.pending.entries(index);
    if (list.length === 0 || !covers(list, pos, pos + n)) return false;
    return this.overlayPending(index, pos, n, out, outOffset, this.pending.generation(index));
  }

  /**
   * A read of an extent neither cached nor covered by the journal. A small one fetches only its own
   * bytes (a range GET) and lays the pending changes over them, so a cold 4 KiB read costs 4 KiB of
   * store traffic, not a whole extent (see noteColdMiss for when the extent is cached anyway). A read
   * of most of an extent loads and caches the extent directly.
   */
  private async readCold(index: number, pos: number, n: number, out: Buffer, outOffset: number, ctx: RequestContext | undefined): Promise<void> {
    const inExtent = pos - index * this.extentSize;
    // A load already under way (read-ahead, another reader) brings these bytes sooner than a new GET.
    if (n * 2 >= this.extentLength(index) || this.cache.maxBytes === 0 || this.materializing.has(index)) {
      copyExtent(await this.hang.run(() => this.materialize(index), n, ctx?.signal), out, outOffset, inExtent, n);
      return;
    }
    this.noteColdMiss(index, pos, n);
    const key = extentKey(this.name, index);
    for (;;) {
      const generation = this.pending.generation(index);
      const base = await this.hang.run(() => this.opts.store.getRange(key, inExtent, n), n, ctx?.signal);
      if (base === undefined) out.fill(0, outOffset, outOffset + n);
      else if (base.length === n) base.copy(out, outOffset);
      else throw new VolumeCorruptError(`extent ${index} of volume ${this.name} is shorter than ${inExtent + n} bytes`);
      if (await this.overlayPending(index, pos, n, out, outOffset, generation)) return;
    }
  }

  /**
   * Decides whether a cold read's extent is worth loading into the cache, in the background: when it
   * is read sequentially (the next read is likely in it), or when it keeps being missed and the cache
   * still has room. Random reads over more than the cache holds are served by range reads alone;
   * loading whole extents for them would only evict each other.
   */
  private noteColdMiss(index: number, pos: number, n: number): void {
    let miss = this.coldMisses.get(index);
    if (miss === undefined) {
      // A plain bounded map: forgetting old misses only delays a load.
      if (this.coldMisses.size >= RECENT_MISSES) this.coldMisses.clear();
      miss = { count: 0, nextOffset: -1 };
      this.coldMisses.set(index, miss);
    }
    const sequential = miss.nextOffset === pos;
    miss.count++;
    miss.nextOffset = pos + n;
    const roomy = this.cache.bytes + this.cache.reserved + this.extentLength(index) <= this.cache.maxBytes;
    if (!sequential && !(miss.count >= 3 && roomy)) return;
    this.coldMisses.delete(index);
    if (this.materializing.has(index) || this.loads.free === 0) return;
    this.loadInBackground(index);
  }

  /** Loads an extent into the cache for reads to come; a failure only costs those reads a GET. */
  private loadInBackground(index: number): void {
    this.materialize(index).catch((err: unknown) => this.opts.logger.debug({ err, extent: index }, 'background extent load failed'));
  }

  /**
   * Tracks sequential reading (requests arrive here in the order the client sent them) and loads the
   * extents ahead of a stream into the cache. The window is kept to a quarter of the cache so that
   * read-ahead cannot evict what random readers use, and nothing is read ahead while the store is
   * failing: held reads come first, and read-ahead would only add requests the store cannot answer.
   */
  private noteSequential(offset: number, length: number): void {
    this.sequentialRun = offset === this.sequentialNext ? this.sequentialRun + length : 0;
    this.sequentialNext = offset + length;
    if (this.sequentialRun < READAHEAD_AFTER_BYTES || this.hang.state !== 'normal') return;
    const window = Math.min(READAHEAD_EXTENTS, Math.floor(this.cache.maxBytes / this.extentSize / 4));
    const first = Math.floor(this.sequentialNext / this.extentSize);
    const last = Math.min(first + window, Math.ceil(this.size / this.extentSize)) - 1;
    for (let index = first; index <= last; index++) {
      if (this.loads.free === 0) return;
      if (this.materializing.has(index) || this.cache.peek(index) !== undefined) continue;
      this.loadInBackground(index);
    }
  }

  /**
   * Lays the extent's pending changes (in sequence order) over `out`, which holds the stored bytes
   * of [pos, pos + n). False when an upload finished meanwhile: the caller starts over.
   */
  private async overlayPending(index: number, pos: number, n: number, out: Buffer, outOffset: number, generation: number): Promise<boolean> {
    const end = pos + n;
    for (const entry of this.pending.entries(index).slice()) {
      const start = Math.max(entry.offset, pos);
      const stop = Math.min(entry.offset + entry.length, end);
      if (start >= stop) continue;
      if (entry.kind === RecordKind.Zero) {
        out.fill(0, outOffset + start - pos, outOffset + stop - pos);
        continue;
      }
      try {
        await this.journal.readPayload(entry, start - entry.offset, stop - start, out, outOffset + start - pos);
      } catch (err) {
        if (this.pending.generation(index) === generation) throw err;
        return false;
      }
      if (this.pending.generation(index) !== generation) return false;
    }
    return this.pending.generation(index) === generation;
  }

  private firstNewer(index: number, seq: number): JournalEntry | undefined {
    const list = this.pending.entries(index);
    for (let i = 0; i < list.length; i++) if (list[i]!.seq > seq) return list[i];
    return undefined;
  }

  private async fetch(index: number): Promise<Buffer | null> {
    const body = await this.opts.store.get(extentKey(this.name, index));
    if (body === undefined) return null;
    const expected = this.extentLength(index);
    if (body.length !== expected) {
      throw new VolumeCorruptError(`extent ${index} of volume ${this.name} has ${body.length} bytes, expected ${expected}`);
    }
    return body;
  }

  /**
   * A private copy of the extent for upload; all-zero extents come back as null so they are deleted.
   * Its memory is reserved in the cache until the upload releases it.
   */
  private async snapshot(index: number): Promise<ExtentSnapshot> {
    const reservation = this.cache.reserve(this.extentLength(index));
    try {
      const extent = this.cache.peek(index) ?? (await this.materialize(index, false));
      if (extent.data === null || isAllZero(extent.data)) {
        reservation.release();
        return { data: null, seq: extent.seq, release: () => undefined };
      }
      // A cached extent changes under later writes, so it is copied; one loaded just for this upload
      // belongs to nobody else and is uploaded as it is (one extent less in memory per upload).
      const shared = this.cache.peek(index) === extent;
      return { data: shared ? Buffer.from(extent.data) : extent.data, seq: extent.seq, release: reservation.release };
    } catch (err) {
      reservation.release();
      throw err;
    }
  }

  private checkWritable(): void {
    if (this.readOnly) throw new ReadOnlyError(`volume ${this.name} is read-only`);
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new InvalidArgumentError(`range ${offset}+${length} is outside volume ${this.name} (${this.size} bytes)`);
    }
  }

  /** Resolves when every acknowledged change is in the object store. */
  drain(): Promise<void> {
    return this.uploader.drained();
  }

  stats(): VolumeStats {
    const u = this.uploader.stats;
    return {
      name: this.name,
      size: this.size,
      extentSize: this.extentSize,
      readOnly: this.readOnly,
      clients: this.clients,
      journalBytes: this.journal.usedBytes,
      journalLimitBytes: this.journal.limitBytes,
      journalSegments: this.journal.segmentCount,
      pendingEntries: this.pending.count,
      dirtyExtents: this.pending.dirtyExtentCount,
      uploadsInFlight: this.uploader.uploading,
      cacheBytes: this.cache.bytes,
      cacheHits: this.cache.hits,
      cacheMisses: this.cache.misses,
      puts: u.puts,
      deletes: u.deletes,
      bytesUploaded: u.bytesUploaded,
      uploadFailures: u.failures,
    };
  }

  /**
   * Stops uploads (those under way finish) and closes the journal once what was queued is durable.
   * Pending changes stay in the journal and are uploaded at the next open.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hang.close();
    await this.uploader.stop();
    await this.journal.close();
  }
}

function copyExtent(extent: MaterializedExtent, out: Buffer, outOffset: number, from: number, n: number): void {
  if (extent.data === null) out.fill(0, outOffset, outOffset + n);
  else extent.data.copy(out, outOffset, from, from + n);
}

/** True when the union of the entries' ranges covers [start, end). */
function covers(entries: readonly JournalEntry[], start: number, end: number): boolean {
  const spans: [number, number][] = [];
  for (const e of entries) {
    const s = Math.max(e.offset, start);
    const t = Math.min(e.offset + e.length, end);
    if (s < t) spans.push([s, t]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  let reached = start;
  for (const [s, t] of spans) {
    if (s > reached) return false;
    if (t > reached) reached = t;
    if (reached >= end) return true;
  }
  return reached >= end;
}

function isAllZero(buf: Buffer): boolean {
  const words = buf.length >>> 3;
  if (buf.byteOffset % 8 === 0) {
    const view = new BigUint64Array(buf.buffer, buf.byteOffset, words);
    for (let i = 0; i < words; i++) if (view[i] !== 0n) return false;
  } else {
    for (let i = 0; i < words * 8; i++) if (buf[i] !== 0) return false;
  }
  for (let i = words * 8; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}
