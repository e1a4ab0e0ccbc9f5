// gateway/journal owns the write-ahead journal of a served volume: durable group commits before a
// write is acknowledged, replay on open, and retiring segments once uploaded. This file is the
// Journal and its commit loop; replay.ts reads a directory on open, room.ts is the limit writes wait
// on, live-segments.ts the segment files in use, payload-reader.ts reads many records' payloads in a
// few large reads (for the uploader); segment-format.ts and record.ts are the on-disk format,
// segment-file.ts the file I/O.
import { elementAt } from '../../shared/checked.js';
import type { Logger } from 'pino';
import { JournalCorruptError, JournalIoError } from '../../shared/errors.js';
import { RECORD_HEADER_SIZE, RecordKind } from './record.js';
import { backoffMs } from '../util/backoff.js';
import { LoopReads } from '../util/loop-reads.js';
import { sleep } from '../util/sleep.js';
import { fsSegmentFileOps } from './segment-file.js';
import { LiveSegments } from './live-segments.js';
import { replayJournal, type ReplayOptions } from './replay.js';
import { ENTRY_MEMORY_COST, JournalRoom } from './room.js';
import { encodeBatch, type JournalEntry, type Segment } from './segment-format.js';

export type { JournalEntry } from './segment-format.js';

/** Bounds one group commit so that a burst of large writes does not build one huge writev. */
const MAX_BATCH_BYTES = 16 * 1024 * 1024;
const MAX_BATCH_RECORDS = 4096;

export interface JournalOptions extends ReplayOptions {
  /** A segment is sealed once it grows past this; only whole segments are retired. */
  readonly segmentBytes: number;
  /** Appends wait (in arrival order) while live segments plus queued records exceed this. */
  readonly limitBytes: number;
  readonly logger: Logger;
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

/**
 * The write-ahead journal of one volume: every acknowledged change not yet in the object store.
 * Appends are grouped: all records queued while a write+fdatasync is under way go out together in
 * the next one. A failed write or sync is never simply retried — after a failed fsync the kernel may
 * have dropped the dirty pages, so the segment is abandoned and the records are written again to a
 * fresh segment (they keep their sequence numbers; replay keeps the newest copy).
 */
export class Journal {
  private readonly room: JournalRoom;
  private readonly segments: LiveSegments;
  private nextSeq: number;
  private queue: JournalEntry[] = [];
  private writing = false;
  private closed = false;
  private durableSeq: number;
  private readonly durableWaiters: DurableWaiter[] = [];
  private readonly loopReads = new LoopReads();
  private uploadWaiters: { readonly seq: number; readonly resolve: () => void }[] = [];
  private idleWaiters: (() => void)[] = [];
  private failedAttempts = 0;

  private constructor(
    private readonly opts: JournalOptions,
    lastSeq: number,
    replayed: readonly Segment[],
    lastSegmentNo: number,
  ) {
    this.nextSeq = lastSeq + 1;
    this.durableSeq = lastSeq;
    this.room = new JournalRoom(opts.limitBytes);
    this.segments = new LiveSegments(
      {
        dir: opts.dir,
        epoch: opts.epoch ?? 0,
        segmentBytes: opts.segmentBytes,
        fileOps: opts.fileOps ?? fsSegmentFileOps,
        room: this.room,
        logger: opts.logger,
        retryMs: opts.retryMaxMs ?? 1000,
        closed: () => this.closed,
        idle: () => !this.writing && this.queue.length === 0,
      },
      replayed,
      lastSegmentNo,
    );
  }

  /**
   * Opens the journal in `dir`, replaying every segment. Returns the journal and the entries still
   * owed to the store, in sequence order.
   */
  static async open(opts: JournalOptions): Promise<{ journal: Journal; entries: JournalEntry[] }> {
    const { segments, entries, lastSeq, lastSegmentNo } = await replayJournal(opts);
    const journal = new Journal(opts, lastSeq, segments, lastSegmentNo);
    journal.room.liveEntryBytes = entries.length * ENTRY_MEMORY_COST;
    try {
      await journal.segments.retire();
    } catch (err) {
      await journal.close();
      throw err;
    }
    return { journal, entries };
  }

  /** Bytes held by live segments and records waiting for the next commit, plus the records' memory. */
  get usedBytes(): number {
    return this.room.usedBytes;
  }

  get limitBytes(): number {
    return this.opts.limitBytes;
  }

  get segmentCount(): number {
    return this.segments.count;
  }

  /**
   * Resolves once the segment retirement that releases have scheduled so far has run: segments whose
   * records are all released are deleted by then, unless deleting failed (it is retried later).
   */
  retirementSettled(): Promise<void> {
    return this.segments.settled();
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
    return this.room.hasRoom(payloadLength);
  }

  /**
   * Reserves room for a record of `payloadLength` bytes. Returns undefined when there is room now
   * (the common case, so no promise is made), else a promise that resolves in arrival order, or
   * rejects when `signal` aborts (the client went away: nothing of its write is appended) or when
   * the hang engine fails waiting writes.
   */
  reserve(payloadLength: number, signal?: AbortSignal): Promise<void> | undefined {
    return this.room.reserve(payloadLength, signal);
  }

  /** Writes waiting for room, and writes waiting for a sync while the journal disk is failing. */
  waiting(): { requests: number; bytes: number } {
    let { requests, bytes } = this.room.waiting();
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
    this.room.failWaiters(err);
    if (this.failedAttempts > 0) for (const w of this.durableWaiters.splice(0)) w.reject(err);
  }

  /** Gives back room reserved for a record that will not be appended after all. */
  cancelReservation(payloadLength: number): void {
    this.room.cancel(payloadLength);
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
      payloadCrc: -1,
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
    const { file } = segment;
    const position = entry.payloadPosition + from;
    // Reads of pending writes are of recent records, nearly always in the page cache.
    let n = file.fd === undefined ? -1 : this.loopReads.read(file.fd, into, intoOffset, length, position);
    if (n < 0) n = await file.read(into, intoOffset, length, position);
    if (n !== length) throw new JournalCorruptError(`journal record ${entry.seq} in ${segment.path} is truncated`);
  }

  /** The entry is in the object store; its segment may be retired once all its records are. */
  release(entry: JournalEntry): void {
    const segment = entry.segment;
    if (segment === undefined) throw new JournalIoError(`journal record ${entry.seq} released before it was durable`);
    segment.live--;
    this.room.liveEntryBytes -= ENTRY_MEMORY_COST;
    if (segment.live === 0) this.segments.scheduleRetirement();
    this.room.wake();
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
        segment = await this.segments.forBatch(batchBytes);
        const start = segment.size;
        // Counted before the write: if it fails the file may still hold these bytes.
        segment.size += batchBytes;
        this.room.segmentBytes += batchBytes;
        this.room.queuedBytes -= batchBytes;
        await segment.file.writev(iov, start);
        await segment.file.datasync();
        this.room.queuedBytes -= batch.length * ENTRY_MEMORY_COST;
        this.room.liveEntryBytes += batch.length * ENTRY_MEMORY_COST;
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
        if (segment.size >= this.opts.segmentBytes) this.segments.sealCurrent();
        if (this.failedAttempts > 0) {
          this.failedAttempts = 0;
          this.opts.onIoRecovered?.();
        }
        this.markDurable(elementAt(batch, batch.length - 1).seq);
        return;
      } catch (cause) {
        if (segment !== undefined) this.room.queuedBytes += batchBytes;
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
        if (segment !== undefined) this.segments.abandon(segment);
        // A batch larger than the free space (ENOSPC) would fail forever: the next attempt writes its
        // first half, and the rest goes back to the front of the queue to follow it in order.
        if (batch.length > 1) {
          this.queue.unshift(...batch.splice(Math.ceil(batch.length / 2)));
          ({ iov, bytes: batchBytes } = encodeBatch(batch));
        }
        await sleep(backoffMs(this.failedAttempts - 1, this.opts.retryInitialMs ?? 50, this.opts.retryMaxMs ?? 1000)).done;
        this.segments.scheduleRetirement();
      }
    }
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
    await this.segments.close();
  }
}
