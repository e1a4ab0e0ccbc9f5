// gateway/journal owns the write-ahead journal of a served volume: durable group commits before a
// write is acknowledged, replay on open, and retiring segments once uploaded. This file is the
// Journal; segment-format.ts and record.ts are the on-disk format, segment-file.ts the file I/O.
import { defined, elementAt } from '../../shared/checked.js';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { JournalCorruptError, JournalIoError, RequestAbortedError } from '../../shared/errors.js';
import { RECORD_HEADER_SIZE, RecordKind } from './record.js';
import { backoffMs } from '../util/backoff.js';
import { fsSegmentFileOps, type SegmentFileOps } from './segment-file.js';
import { syncDirectory } from '../util/sync-directory.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import {
  SEAL_NAME,
  SEGMENT_HEADER_SIZE,
  SEGMENT_MAGIC,
  SEGMENT_NAME,
  SEGMENT_VERSION,
  Segment,
  encodeBatch,
  readSeal,
  scanSegment,
  sealName,
  type JournalEntry,
} from './segment-format.js';

export type { JournalEntry } from './segment-format.js';

/**
 * What one record costs in memory until it is uploaded (its entry and its place in the pending
 * lists), charged against the journal limit with its bytes on disk: a flood of tiny records (TRIMs)
 * is bounded by the limit like a flood of writes.
 */
export const ENTRY_MEMORY_COST = 192;
/** Bounds one group commit so that a burst of large writes does not build one huge writev. */
const MAX_BATCH_BYTES = 16 * 1024 * 1024;
const MAX_BATCH_RECORDS = 4096;

export interface JournalOptions {
  readonly dir: string;
  /** A segment is sealed once it grows past this; only whole segments are retired. */
  readonly segmentBytes: number;
  /** Appends wait (in arrival order) while live segments plus queued records exceed this. */
  readonly limitBytes: number;
  /** Largest payload a record may carry; anything larger on replay is corruption. */
  readonly maxPayload: number;
  readonly logger: Logger;
  readonly fileOps?: SegmentFileOps;
  /**
   * The writer epoch new segments are named by. Segments of older epochs are adopted: each gets a seal
   * (the highest sequence adopted from it) before anything is appended, so records a deposed writer
   * appends later are never replayed. Default 0 (a journal nobody else writes).
   */
  readonly epoch?: number;
  /** Records up to this sequence are in the object store already: replay skips them. */
  readonly committedSeq?: number;
  /**
   * Unsealed segments of epochs from this one on are adopted; older unsealed ones were never adopted
   * by anyone (the previous owner did not use this directory) and are sealed at `committedSeq`, so
   * nothing in them is replayed. Default 0: adopt everything.
   */
  readonly adoptFromEpoch?: number;
  /** Back-off between rewrite attempts after a failed write or sync. */
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  /** Told of every failed write/sync attempt and of the first success after failures. */
  readonly onIoError?: (err: JournalIoError) => void;
  readonly onIoRecovered?: () => void;
}

interface DurableWaiter {
  readonly seq: number;
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

interface SpaceWaiter {
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: (() => void) | undefined;
}

/**
 * The write-ahead journal of one volume: every acknowledged change not yet in the object store.
 * Appends are grouped: all records queued while a write+fdatasync is under way go out together in
 * the next one. A failed write or sync is never simply retried — after a failed fsync the kernel may
 * have dropped the dirty pages, so the segment is abandoned and the records are written again to a
 * fresh segment (they keep their sequence numbers; replay keeps the newest copy).
 */
export class Journal {
  private readonly segments: Segment[] = [];
  private current: Segment | undefined;
  private nextSeq: number;
  private nextSegmentNo: number;
  private queue: JournalEntry[] = [];
  private queuedBytes = 0;
  private segmentBytesTotal = 0;
  /** ENTRY_MEMORY_COST for every durable record not yet released. */
  private liveEntryBytes = 0;
  private writing = false;
  private closed = false;
  private durableSeq: number;
  private readonly durableWaiters: DurableWaiter[] = [];
  private uploadWaiters: { readonly seq: number; readonly resolve: () => void }[] = [];
  private readonly spaceWaiters: SpaceWaiter[] = [];
  private idleWaiters: (() => void)[] = [];
  private retirement: Promise<void> = Promise.resolve();
  private failedAttempts = 0;
  private readonly fileOps: SegmentFileOps;

  private constructor(
    private readonly opts: JournalOptions,
    lastSeq: number,
    lastSegmentNo: number,
  ) {
    this.fileOps = opts.fileOps ?? fsSegmentFileOps;
    this.nextSeq = lastSeq + 1;
    this.durableSeq = lastSeq;
    this.nextSegmentNo = lastSegmentNo + 1;
  }

  /**
   * Opens the journal in `dir`, replaying every segment. Returns the journal and the entries still
   * owed to the store, in sequence order.
   */
  static async open(opts: JournalOptions): Promise<{ journal: Journal; entries: JournalEntry[] }> {
    await mkdir(opts.dir, { recursive: true });
    const epoch = opts.epoch ?? 0;
    const committed = opts.committedSeq ?? 0;
    const dirNames = await readdir(opts.dir);
    const seals = new Map<number, number>();
    for (const m of dirNames.map((n) => SEAL_NAME.exec(n))) {
      if (m !== null) seals.set(parseInt(elementAt(m, 1), 16), await readSeal(join(opts.dir, m[0])));
    }
    const names = dirNames
      .map((n) => SEGMENT_NAME.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ name: m[0], epoch: m[1] === undefined ? 0 : parseInt(m[1], 16), no: Number(m[2]) }))
      .sort((a, b) => a.epoch - b.epoch || a.no - b.no);
    const fileOps = opts.fileOps ?? fsSegmentFileOps;
    const bySeq = new Map<number, JournalEntry>();
    const segments: Segment[] = [];
    const adopted = new Map<number, number>();
    const adoptFrom = opts.adoptFromEpoch ?? 0;
    for (const { name, epoch: segmentEpoch, no } of names) {
      const path = join(opts.dir, name);
      const file = await fileOps.open(path, 'read-write');
      const segment = new Segment(segmentEpoch, no, path, file, 0);
      segment.sealed = true;
      const seal = seals.get(segmentEpoch) ?? (segmentEpoch < adoptFrom && segmentEpoch < epoch ? committed : Infinity);
      for (const entry of await scanSegment(segment, opts.maxPayload)) {
        if (entry.seq > seal) continue;
        adopted.set(segmentEpoch, Math.max(adopted.get(segmentEpoch) ?? 0, entry.seq));
        if (entry.seq > committed) bySeq.set(entry.seq, entry);
      }
      segments.push(segment);
    }
    // Sealed before anything new is appended: from now on a record of an older epoch above its seal
    // can only come from a deposed writer that went on appending, and it was never acknowledged.
    let sealed = false;
    for (const s of segments) {
      if (s.epoch >= epoch || seals.has(s.epoch)) continue;
      seals.set(s.epoch, s.epoch < adoptFrom ? committed : Math.max(adopted.get(s.epoch) ?? 0, committed));
      await writeFileAtomic(join(opts.dir, sealName(s.epoch)), `${JSON.stringify({ maxSeq: seals.get(s.epoch) })}\n`);
      sealed = true;
    }
    if (sealed) await syncDirectory(opts.dir);
    const entries = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    for (const e of entries) defined(e.segment, 'replayed entry segment').live++;
    const lastSeq = Math.max(committed, entries.length > 0 ? elementAt(entries, entries.length - 1).seq : 0, ...adopted.values());
    const lastNo = names.reduce((n, s) => Math.max(n, s.no), 0);
    const journal = new Journal(opts, lastSeq, lastNo);
    journal.liveEntryBytes = entries.length * ENTRY_MEMORY_COST;
    for (const s of segments) {
      journal.segments.push(s);
      journal.segmentBytesTotal += s.size;
    }
    await journal.retireSegments();
    return { journal, entries };
  }

  /** Bytes held by live segments and records waiting for the next commit, plus the records' memory. */
  get usedBytes(): number {
    return this.segmentBytesTotal + this.queuedBytes + this.liveEntryBytes;
  }

  get limitBytes(): number {
    return this.opts.limitBytes;
  }

  get segmentCount(): number {
    return this.segments.length;
  }

  /** True from a failed write or sync attempt until the next one succeeds (disk full or failing). */
  get failing(): boolean {
    return this.failedAttempts > 0;
  }

  /**
   * For the uploader: resolves once every record up to `seq` is durable, or as soon as the journal
   * is failing. A full journal disk is freed only by uploads, so they must not wait for records
   * that cannot be written until they have freed it.
   */
  waitDurableOrFailing(seq: number): Promise<void> | undefined {
    if (seq <= this.durableSeq || this.failing) return undefined;
    return new Promise((resolve) => this.uploadWaiters.push({ seq, resolve }));
  }

  /** The sequence number of the last record appended. */
  get lastSequence(): number {
    return this.nextSeq - 1;
  }

  /** Highest sequence number that is on disk and synced. */
  get durableSequence(): number {
    return this.durableSeq;
  }

  /** True when a record of `payloadLength` bytes would be accepted without waiting. */
  hasRoom(payloadLength: number): boolean {
    return this.spaceWaiters.length === 0 && this.fits(chargeOf(payloadLength));
  }

  /**
   * Reserves room for a record of `payloadLength` bytes. Returns undefined when there is room now
   * (the common case, so no promise is made), else a promise that resolves in arrival order, or
   * rejects when `signal` aborts (the client went away: nothing of its write is appended) or when
   * the hang engine fails waiting writes.
   */
  reserve(payloadLength: number, signal?: AbortSignal): Promise<void> | undefined {
    const bytes = chargeOf(payloadLength);
    if (this.spaceWaiters.length === 0 && this.fits(bytes)) {
      this.queuedBytes += bytes;
      return undefined;
    }
    return new Promise((resolve, reject) => {
      const onAbort =
        signal === undefined
          ? undefined
          : () => {
              const i = this.spaceWaiters.indexOf(waiter);
              if (i >= 0) this.spaceWaiters.splice(i, 1);
              reject(new RequestAbortedError('client disconnected while its write waited for journal room'));
              this.wakeSpaceWaiters();
            };
      const waiter: SpaceWaiter = { bytes, resolve, reject, signal, onAbort };
      if (signal !== undefined && onAbort !== undefined) signal.addEventListener('abort', onAbort, { once: true });
      this.spaceWaiters.push(waiter);
    });
  }

  /** Writes waiting for room, and writes waiting for a sync while the journal disk is failing. */
  waiting(): { requests: number; bytes: number } {
    let requests = this.spaceWaiters.length;
    let bytes = 0;
    for (const w of this.spaceWaiters) bytes += w.bytes;
    if (this.failedAttempts > 0) {
      requests += this.durableWaiters.length;
      for (const w of this.durableWaiters) bytes += w.bytes;
    }
    return { requests, bytes };
  }

  /**
   * Answers waiting writes with `err`: all that wait for room, and — only while the journal disk is
   * failing — those that wait for a sync. Their records, if queued, are still written.
   */
  failWaiters(err: Error): void {
    const space = this.spaceWaiters.splice(0);
    for (const w of space) {
      if (w.onAbort !== undefined) w.signal?.removeEventListener('abort', w.onAbort);
      w.reject(err);
    }
    if (this.failedAttempts > 0) for (const w of this.durableWaiters.splice(0)) w.reject(err);
  }

  /** Gives back room reserved for a record that will not be appended after all. */
  cancelReservation(payloadLength: number): void {
    this.queuedBytes -= chargeOf(payloadLength);
    this.wakeSpaceWaiters();
  }

  private fits(bytes: number): boolean {
    // An empty journal always accepts one record, so a record larger than the limit cannot deadlock.
    return this.usedBytes + bytes <= this.opts.limitBytes || this.usedBytes === 0;
  }

  /**
   * Queues a record whose room was reserved with `reserve`. Synchronous, so that the caller can index
   * the entry before anything else runs: sequence order is arrival order.
   */
  append(kind: RecordKind, offset: number, length: number, data: Buffer | undefined): JournalEntry {
    if (this.closed) throw new JournalIoError('journal is closed');
    const entry: JournalEntry = {
      seq: this.nextSeq++,
      kind,
      offset,
      length,
      data,
      segment: undefined,
      payloadPosition: 0,
      durable: false,
      arrivedAt: performance.now(),
    };
    this.queue.push(entry);
    if (!this.writing) {
      this.writing = true;
      // A microtask, so that every request parsed from the same socket read joins this commit.
      queueMicrotask(() => void this.writeLoop());
    }
    return entry;
  }

  /** Resolves once every record up to `seq` is durable; undefined when it already is. */
  waitDurable(seq: number, bytes = 0): Promise<void> | undefined {
    if (seq <= this.durableSeq) return undefined;
    return new Promise((resolve, reject) => this.durableWaiters.push({ seq, bytes, resolve, reject }));
  }

  /** Resolves once every record appended so far is durable. */
  async sync(): Promise<void> {
    const w = this.waitDurable(this.nextSeq - 1);
    if (w) await w;
  }

  /** Copies `length` payload bytes of a write entry, starting `from` bytes into its payload. */
  async readPayload(entry: JournalEntry, from: number, length: number, into: Buffer, intoOffset: number): Promise<void> {
    if (entry.data !== undefined) {
      entry.data.copy(into, intoOffset, from, from + length);
      return;
    }
    const segment = entry.segment;
    if (segment === undefined || segment.retired) throw new JournalIoError(`journal record ${entry.seq} is no longer readable`);
    const n = await segment.file.read(into, intoOffset, length, entry.payloadPosition + from);
    if (n !== length) throw new JournalCorruptError(`journal record ${entry.seq} in ${segment.path} is truncated`);
  }

  /** The entry is in the object store; its segment may be retired once all its records are. */
  release(entry: JournalEntry): void {
    const segment = entry.segment;
    if (segment === undefined) throw new JournalIoError(`journal record ${entry.seq} released before it was durable`);
    segment.live--;
    this.liveEntryBytes -= ENTRY_MEMORY_COST;
    if (segment.live === 0) this.scheduleRetirement();
    this.wakeSpaceWaiters();
  }

  private scheduleRetirement(): void {
    this.retirement = this.retirement
      .then(() => this.retireSegments())
      .catch((err: unknown) => {
        this.opts.logger.error({ err }, 'could not delete a retired journal segment; will retry');
        // An idle volume would never come back to it, and the journal's room waits for it.
        setTimeout(() => {
          if (!this.closed) this.scheduleRetirement();
        }, this.opts.retryMaxMs ?? 1000).unref();
      });
  }

  /**
   * Deletes fully uploaded segments, oldest first and only from the front: an old record must never
   * be replayed without the newer records that may overwrite the same bytes.
   */
  private async retireSegments(): Promise<void> {
    const cur = this.current;
    if (cur !== undefined && cur.live === 0 && !this.writing && this.queue.length === 0 && cur.size > SEGMENT_HEADER_SIZE) {
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
        await this.fileOps.remove(oldest.path);
        this.segments.shift();
        oldest.retired = true;
        this.segmentBytesTotal -= oldest.size;
        removed = true;
        // An older epoch's seal goes with its last segment.
        if (oldest.epoch !== (this.opts.epoch ?? 0) && !this.segments.some((s) => s.epoch === oldest.epoch)) {
          await this.fileOps.remove(join(this.opts.dir, sealName(oldest.epoch))).catch(() => undefined);
        }
      }
    } finally {
      if (removed) this.wakeSpaceWaiters();
    }
    if (removed) await syncDirectory(this.opts.dir);
  }

  private wakeSpaceWaiters(): void {
    while (this.spaceWaiters.length > 0) {
      const w = elementAt(this.spaceWaiters, 0);
      if (!this.fits(w.bytes)) break;
      this.spaceWaiters.shift();
      this.queuedBytes += w.bytes;
      if (w.onAbort !== undefined) w.signal?.removeEventListener('abort', w.onAbort);
      w.resolve();
    }
  }

  private async writeLoop(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.takeBatch();
      await this.commitBatch(batch);
    }
    this.writing = false;
    const idle = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of idle) resolve();
  }

  private takeBatch(): JournalEntry[] {
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < MAX_BATCH_RECORDS) {
      const size = RECORD_HEADER_SIZE + (elementAt(this.queue, n).data?.length ?? 0);
      if (n > 0 && bytes + size > MAX_BATCH_BYTES) break;
      bytes += size;
      n++;
    }
    const batch = this.queue.slice(0, n);
    this.queue = n === this.queue.length ? [] : this.queue.slice(n);
    return batch;
  }

  /** Writes and syncs one batch, rewriting it to a fresh segment until that succeeds. */
  private async commitBatch(batch: JournalEntry[]): Promise<void> {
    let { iov, bytes: batchBytes } = encodeBatch(batch);
    for (;;) {
      let segment: Segment | undefined;
      try {
        segment = await this.segmentFor(batchBytes);
        const start = segment.size;
        // Counted before the write: if it fails the file may still hold these bytes.
        segment.size += batchBytes;
        this.segmentBytesTotal += batchBytes;
        this.queuedBytes -= batchBytes;
        await segment.file.writev(iov, start);
        await segment.file.datasync();
        this.queuedBytes -= batch.length * ENTRY_MEMORY_COST;
        this.liveEntryBytes += batch.length * ENTRY_MEMORY_COST;
        let pos = start;
        for (const e of batch) {
          pos += RECORD_HEADER_SIZE;
          e.segment = segment;
          e.payloadPosition = pos;
          e.durable = true;
          pos += e.data?.length ?? 0;
          e.data = undefined;
          segment.live++;
        }
        if (segment.size >= this.opts.segmentBytes) this.sealCurrent();
        if (this.failedAttempts > 0) {
          this.failedAttempts = 0;
          this.opts.onIoRecovered?.();
        }
        this.markDurable(elementAt(batch, batch.length - 1).seq);
        return;
      } catch (cause) {
        if (segment !== undefined) this.queuedBytes += batchBytes;
        if (this.closed) {
          // Shutting down on a failing disk: these records were never acknowledged, stop rewriting them.
          const err = new JournalIoError('journal closed while its disk was failing; unwritten records dropped', { cause });
          for (const w of this.durableWaiters.splice(0)) w.reject(err);
          this.queue = [];
          return;
        }
        this.failedAttempts++;
        const err = new JournalIoError(`journal write failed (attempt ${this.failedAttempts}); rewriting to a new segment`, { cause });
        this.opts.logger.error({ err, dir: this.opts.dir }, err.message);
        this.opts.onIoError?.(err);
        this.wakeUploadWaiters(Infinity);
        // The failed segment may have lost pages the kernel said were written: never append to it again.
        if (segment !== undefined && segment === this.current) this.sealCurrent();
        // A batch larger than the free space (ENOSPC) would fail forever: the next attempt writes its
        // first half, and the rest goes back to the front of the queue to follow it in order.
        if (batch.length > 1) {
          this.queue.unshift(...batch.splice(Math.ceil(batch.length / 2)));
          ({ iov, bytes: batchBytes } = encodeBatch(batch));
        }
        await sleep(backoffMs(this.failedAttempts - 1, this.opts.retryInitialMs ?? 50, this.opts.retryMaxMs ?? 1000));
        this.scheduleRetirement();
      }
    }
  }

  private sealCurrent(): void {
    if (this.current === undefined) return;
    this.current.sealed = true;
    this.current = undefined;
    this.scheduleRetirement();
  }

  private async segmentFor(bytes: number): Promise<Segment> {
    const cur = this.current;
    if (cur !== undefined && (cur.size + bytes <= this.opts.segmentBytes || cur.size === SEGMENT_HEADER_SIZE)) return cur;
    if (cur !== undefined) this.sealCurrent();
    const no = this.nextSegmentNo++;
    const epoch = this.opts.epoch ?? 0;
    const path = join(this.opts.dir, `${epoch.toString(16).padStart(8, '0')}-${String(no).padStart(16, '0')}.seg`);
    const file = await this.fileOps.open(path, 'create');
    const header = Buffer.alloc(SEGMENT_HEADER_SIZE);
    header.writeUInt32LE(SEGMENT_MAGIC, 0);
    header.writeUInt32LE(SEGMENT_VERSION, 4);
    header.writeUInt32LE(Math.floor(no / 0x1_0000_0000), 8);
    header.writeUInt32LE(no % 0x1_0000_0000, 12);
    const segment = new Segment(epoch, no, path, file, SEGMENT_HEADER_SIZE);
    this.segments.push(segment);
    this.segmentBytesTotal += SEGMENT_HEADER_SIZE;
    this.current = segment;
    try {
      await file.writev([header], 0);
      await syncDirectory(this.opts.dir);
    } catch (err) {
      this.sealCurrent();
      throw err;
    }
    return segment;
  }

  private markDurable(seq: number): void {
    this.durableSeq = seq;
    this.wakeUploadWaiters(seq);
    let n = 0;
    while (n < this.durableWaiters.length && elementAt(this.durableWaiters, n).seq <= seq) {
      elementAt(this.durableWaiters, n).resolve();
      n++;
    }
    if (n > 0) this.durableWaiters.splice(0, n);
  }

  private wakeUploadWaiters(throughSeq: number): void {
    const ready = this.uploadWaiters.filter((w) => w.seq <= throughSeq);
    if (ready.length === 0) return;
    this.uploadWaiters = this.uploadWaiters.filter((w) => w.seq > throughSeq);
    for (const w of ready) w.resolve();
  }

  /** Waits for queued records to be durable, then closes every segment file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.writing) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    await this.retirement;
    for (const s of this.segments) await s.file.close().catch(() => undefined);
  }
}

function chargeOf(payloadLength: number): number {
  return RECORD_HEADER_SIZE + payloadLength + ENTRY_MEMORY_COST;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
