// gateway/disk-cache owns the optional on-disk cache of store objects between RAM and the store:
// its directory and index, entries, statistics, and reads that stay on the event loop while the page cache answers.
/**
 * The disk cache tier (`--cache-dir`, `--disk-cache-size`): byte ranges of store objects kept on local
 * disk, below each volume's RAM cache of extents and above the store. It caches what cannot go stale:
 * data objects are immutable, a key with its meta CRC names one content forever, and a gateway that
 * takes a volume over writes new keys, so a key this cache holds is never read for bytes it does not
 * hold. Every byte read from it is still checked against the object's CRCs by the reader
 * (image/object-reader.ts): a flipped byte or a truncated file is dropped and fetched again, never served.
 *
 * Layout: `objects/XX/NAME`, one sparse file per object holding its bytes at their own offsets
 * (NAME: a hash of key, meta CRC and size), and `index`, which blocks each file holds (see
 * cache-index.ts), rewritten every INDEX_EVERY_MS when something changed and at close.
 *
 * Bounded by `--disk-cache-size` and by its filesystem's free space (it leaves max(1 GiB, 5 %) free,
 * for the journal or anything else sharing the disk). Eviction is GreedyDual-Size: an entry's
 * priority is the clock plus what refetching it would cost per byte it takes (one store request is
 * worth REQUEST_COST_BYTES of transfer), the lowest goes first and the clock rises to it. Entries not
 * used lately fall below the rising clock (recency); of two as old, the one filled by many small
 * range GETs outlives the one filled by a single large GET (cost). A full disk is not an error: the
 * write is skipped, counted, and the bound shrinks to what fits.
 */
import { constants as fsConstants } from 'node:fs';
import { type FileHandle, mkdir, open, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { errorMessage } from '../../shared/errors.js';
import type { ObjectCopies, ObjectRef } from '../image/object-reader.js';
import { BufferPool } from '../util/buffer-pool.js';
import { LogRateLimiter } from '../util/rate-limited-log.js';
import { BLOCK, CacheEntry } from './cache-entry.js';
import { entryName, entryPath, releaseLock, restoreEntries, SUBDIRS, subdirPath, takeLock, writeIndex } from './cache-directory.js';
import { type IndexedEntry, storeFingerprint } from './cache-index.js';
import type { DiskCacheCounters, DiskCacheStats } from './cache-stats.js';
import { LoopReads } from '../util/loop-reads.js';
import { openFilesBudget, openFilesLimit } from '../util/open-files-limit.js';

/** A store request's latency, in bytes of transfer it is worth (about 20 ms at 50 MiB/s). */
const REQUEST_COST_BYTES = 1024 * 1024;
/** Bytes handed to writes and not yet on disk; past it, what the store returns is not kept (memory bound). */
const MAX_PENDING_WRITE_BYTES = 32 * 1024 * 1024;
/** Bytes to write are copied in slices of this, into buffers used again (see keep). */
const STAGE_BYTES = 1024 * 1024;
/**
 * Files held open at once, by default: half the open-files limit, within 256..32,768 (1,024 where it is
 * unknown). Random reads of a 16 GiB volume visit 4,096 files; with 1,024 held, an open and a close (two
 * trips to the thread pool) were an eighth of the gateway's CPU on them.
 */
const openFilesDefault = (): number => openFilesBudget(0.5, 256, 32_768, 1024, openFilesLimit());
/** Eviction frees this much more than it must, so that it runs once per many writes. */
const EVICTION_SLACK_BYTES = 64 * 1024 * 1024;
const INDEX_EVERY_MS = 30_000;
/** Free space left on the cache's filesystem: at least this, or FREE_FRACTION of it. */
const MIN_FREE_BYTES = 1024 * 1024 * 1024;
const FREE_FRACTION = 0.05;
const WARN_EVERY_MS = 10_000;

export interface DiskCacheOptions {
  readonly dir: string;
  readonly limitBytes: number;
  /** The store the objects come from (a cache directory holds one store's objects). */
  readonly storeLocation: string;
  readonly logger: Logger;
  /** Free space to leave on the cache's filesystem; default the larger of 1 GiB and 5 % of it. */
  readonly keepFreeBytes?: number;
  /** Files held open at once (default: openFilesDefault). */
  readonly maxOpenFiles?: number;
}

/** The disk cache tier all of a gateway's volumes share, as `--cache-dir` and `--disk-cache-size` set it; none when they are off. */
export function openDiskCache(
  settings: { readonly dir: string; readonly limitBytes: number } | undefined,
  storeLocation: string,
  logger: Logger,
): Promise<DiskCache | undefined> {
  return settings === undefined
    ? Promise.resolve(undefined)
    : DiskCache.open({ ...settings, storeLocation, logger: logger.child({ component: 'disk-cache' }) });
}

export class DiskCache implements ObjectCopies {
  private readonly entries = new Map<string, CacheEntry>();
  /** Entries with an open file, least recently used first. */
  private readonly handles = new Set<CacheEntry>();
  /** Files being unlinked: a new entry of the same name waits for it before creating its file. */
  private readonly unlinking = new Map<string, Promise<void>>();
  private readonly writing = new Set<Promise<void>>();
  /**
   * The copies of bytes waiting to be written (at most MAX_PENDING_WRITE_BYTES at once); a quarter of
   * that waits free between bursts: free buffers are RSS whatever the load.
   */
  private readonly staging = new BufferPool(MAX_PENDING_WRITE_BYTES / 4);
  readonly counters: DiskCacheCounters = {
    hits: 0,
    misses: 0,
    corrupt: 0,
    evictions: 0,
    writes: 0,
    writtenBytes: 0,
    skipped: 0,
    full: 0,
    errors: 0,
  };
  private bytes = 0;
  /** Growth of writes in flight, counted against the bound until they land. */
  private reserved = 0;
  private pendingWriteBytes = 0;
  private clock = 0;
  /** Counts uses: of two entries with one priority, the one used longer ago goes first. */
  private uses = 0;
  private effectiveLimit: number;
  private dirty = false;
  private closed = false;
  private readonly loopReads = new LoopReads();
  private timer: NodeJS.Timeout | undefined;
  private indexWrite: Promise<void> | undefined;
  private readonly warnings = new LogRateLimiter(WARN_EVERY_MS);
  private readonly maxOpenFiles: number;

  private constructor(
    private readonly o: DiskCacheOptions,
    private readonly fingerprint: Buffer,
  ) {
    this.effectiveLimit = o.limitBytes;
    this.maxOpenFiles = o.maxOpenFiles ?? openFilesDefault();
  }

  /**
   * Opens the cache directory (creating it), takes its lock, and loads its index: files the index does
   * not know are deleted, entries whose file is gone are forgotten. A directory another live process
   * uses is refused.
   */
  static async open(o: DiskCacheOptions): Promise<DiskCache> {
    const cache = new DiskCache(o, storeFingerprint(o.storeLocation));
    await mkdir(join(o.dir, 'objects'), { recursive: true });
    await takeLock(o.dir);
    await Promise.all(SUBDIRS.map((prefix) => mkdir(subdirPath(o.dir, prefix), { recursive: true })));
    await cache.load();
    await cache.refreshRoom();
    cache.timer = setInterval(() => void cache.maintain(), INDEX_EVERY_MS);
    cache.timer.unref();
    o.logger.info(
      { dir: o.dir, limit: o.limitBytes, bytes: cache.bytes, objects: cache.entries.size, maxOpenFiles: cache.maxOpenFiles },
      'disk cache opened',
    );
    return cache;
  }

  async read(ref: ObjectRef, offset: number, length: number, out: Buffer, at: number): Promise<boolean> {
    const e = this.entries.get(ref.key);
    if (e === undefined || !e.matches(ref) || !e.holds(offset, length)) {
      this.counters.misses++;
      return false;
    }
    e.users++;
    try {
      let bytesRead = e.handle === undefined ? -1 : this.loopReads.read(e.handle.fd, out, at, length, offset);
      if (bytesRead < 0) bytesRead = (await (await this.handleOf(e)).read(out, at, length, offset)).bytesRead;
      if (bytesRead !== length) {
        this.discard(ref, `its file ends early (${bytesRead} of ${length} bytes at ${offset})`);
        return false;
      }
      this.counters.hits++;
      this.touch(e);
      return true;
    } catch (err) {
      this.failed(e, err, 'read');
      return false;
    } finally {
      this.release(e);
    }
  }

  keep(ref: ObjectRef, offset: number, bytes: Buffer, release?: () => void): void {
    const room = this.admit(ref, offset, bytes.length);
    if (room === undefined) {
      release?.();
      return;
    }
    if (release !== undefined) {
      this.startWrite(room, offset, [bytes], bytes.length, release);
      return;
    }
    // A copy, so that the caller's buffer (an extent, a reply) is its own again at once and may be
    // used again instead of waiting for the write; in slices, so that every size fits the pool.
    const staged: Buffer[] = [];
    for (let at = 0; at < bytes.length; at += STAGE_BYTES) {
      const slice = bytes.subarray(at, at + STAGE_BYTES);
      const copy = this.staging.take(slice.length);
      slice.copy(copy);
      staged.push(copy);
    }
    this.startWrite(room, offset, staged, bytes.length, () => {
      for (const copy of staged) this.staging.give(copy);
    });
  }

  /** The entry `length` more bytes at `offset` go to and the room they take; undefined when they are not to be written. */
  private admit(ref: ObjectRef, offset: number, length: number): { entry: CacheEntry; growth: number } | undefined {
    if (this.closed) return undefined;
    let e = this.entries.get(ref.key);
    if (e !== undefined && !e.matches(ref)) {
      // Cannot happen with format 2's keys; if a store ever reused one, the old bytes must go.
      this.drop(e);
      e = undefined;
    }
    const entry = e ?? new CacheEntry(ref, entryName(ref));
    const growth = entry.growth(offset, length);
    if (growth === 0) return undefined;
    if (this.pendingWriteBytes + length > MAX_PENDING_WRITE_BYTES || !this.makeRoom(growth, entry)) {
      this.counters.skipped++;
      return undefined;
    }
    if (e === undefined) this.entries.set(ref.key, entry);
    return { entry, growth };
  }

  private startWrite(
    room: { entry: CacheEntry; growth: number },
    offset: number,
    pieces: Buffer[],
    length: number,
    giveBack: () => void,
  ): void {
    const { entry, growth } = room;
    this.reserved += growth;
    this.pendingWriteBytes += length;
    entry.users++;
    entry.fetches++;
    const written: Promise<void> = this.write(entry, offset, pieces, length, growth, giveBack).finally(() => this.writing.delete(written));
    this.writing.add(written);
  }

  /** Resolves when every write handed to the cache so far has landed (or failed). */
  async settled(): Promise<void> {
    while (this.writing.size > 0) await Promise.all(this.writing);
  }

  discard(ref: ObjectRef, why: string): void {
    const e = this.entries.get(ref.key);
    if (e === undefined || !e.matches(ref)) return;
    this.counters.corrupt++;
    this.warn('corrupt', { key: ref.key, why }, 'disk cache: a cached object failed its check; dropped, fetched again from the store');
    this.drop(e);
  }

  /** The object will not be read again (its volume released it): its room goes to others. */
  forget(key: string): void {
    const e = this.entries.get(key);
    if (e !== undefined) this.drop(e);
  }

  stats(): DiskCacheStats {
    return {
      dir: this.o.dir,
      limitBytes: this.o.limitBytes,
      effectiveLimitBytes: this.effectiveLimit,
      bytes: this.bytes,
      objects: this.entries.size,
      ...this.counters,
    };
  }

  /** Writes the index and closes every file; what is in flight finishes first. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.settled();
    await this.indexWrite;
    await this.writeIndex();
    for (const e of [...this.handles]) await e.handle?.close().catch(() => undefined);
    this.handles.clear();
    await Promise.all(this.unlinking.values());
    await releaseLock(this.o.dir);
  }

  private async write(
    e: CacheEntry,
    offset: number,
    pieces: Buffer[],
    length: number,
    growth: number,
    giveBack: () => void,
  ): Promise<void> {
    try {
      const handle = await this.handleOf(e);
      const { bytesWritten } = await handle.writev(pieces, offset);
      if (bytesWritten !== length) throw Object.assign(new Error(`short write: ${bytesWritten} of ${length} bytes`), { code: 'ENOSPC' });
      this.counters.writes++;
      this.counters.writtenBytes += length;
      if (!e.dropped) {
        this.bytes += e.mark(offset, length);
        this.dirty = true;
        this.touch(e);
      }
    } catch (err) {
      this.failed(e, err, 'write');
    } finally {
      this.reserved -= growth;
      this.pendingWriteBytes -= length;
      giveBack();
      this.release(e);
      if (e.bytes === 0 && e.users === 0) this.drop(e);
    }
  }

  private failed(e: CacheEntry, err: unknown, what: 'read' | 'write'): void {
    const code = (err as { code?: unknown }).code;
    if (what === 'write' && (code === 'ENOSPC' || code === 'EDQUOT')) {
      this.counters.full++;
      this.counters.skipped++;
      // The disk has less room than the bound assumed: shrink it to what is held now, less a slack.
      this.effectiveLimit = Math.max(0, Math.min(this.effectiveLimit, this.bytes - EVICTION_SLACK_BYTES));
      this.evictTo(this.effectiveLimit);
      this.warn(
        'full',
        { err: errorMessage(err), bytes: this.bytes, limit: this.effectiveLimit },
        'disk cache: its disk is full; it holds less from now on (not an error: reads go to the store)',
      );
      return;
    }
    this.counters.errors++;
    this.warn(what, { err: errorMessage(err), key: e.ref.key }, `disk cache: ${what} failed; the object is dropped from the cache`);
    this.drop(e);
  }

  /** GreedyDual-Size: the clock plus the cost per byte of fetching the entry again. */
  private touch(e: CacheEntry): void {
    e.priority = this.clock + 1 + (e.fetches * REQUEST_COST_BYTES) / Math.max(e.bytes, BLOCK);
    e.used = ++this.uses;
  }

  private makeRoom(growth: number, keep: CacheEntry): boolean {
    const limit = this.effectiveLimit;
    if (this.bytes + this.reserved + growth <= limit) return true;
    if (growth > limit) return false;
    this.evictTo(Math.max(0, limit - growth - Math.min(EVICTION_SLACK_BYTES, limit / 16)), keep);
    return this.bytes + this.reserved + growth <= limit;
  }

  private evictTo(target: number, keep?: CacheEntry): void {
    if (this.bytes + this.reserved <= target) return;
    const victims = [...this.entries.values()]
      .filter((e) => e !== keep && e.bytes > 0)
      .sort((a, b) => a.priority - b.priority || a.used - b.used);
    for (const e of victims) {
      if (this.bytes + this.reserved <= target) break;
      this.clock = Math.max(this.clock, e.priority);
      this.counters.evictions++;
      this.drop(e);
    }
  }

  private drop(e: CacheEntry): void {
    if (e.dropped) return;
    e.dropped = true;
    if (this.entries.get(e.ref.key) === e) this.entries.delete(e.ref.key);
    this.bytes -= e.bytes;
    this.dirty = true;
    if (e.users === 0) this.closeFile(e);
    const path = this.pathOf(e.name);
    const removal = unlink(path)
      .catch((err: unknown) => {
        if ((err as { code?: unknown }).code !== 'ENOENT')
          this.warn('unlink', { err: errorMessage(err), path }, 'disk cache: could not delete a dropped file');
      })
      .finally(() => {
        if (this.unlinking.get(e.name) === removal) this.unlinking.delete(e.name);
      });
    this.unlinking.set(e.name, removal);
  }

  private release(e: CacheEntry): void {
    e.users--;
    if (e.dropped && e.users === 0) this.closeFile(e);
  }

  private handleOf(e: CacheEntry): Promise<FileHandle> {
    if (e.handle !== undefined) {
      this.handles.delete(e);
      this.handles.add(e);
      return Promise.resolve(e.handle);
    }
    e.opening ??= (async () => {
      await this.unlinking.get(e.name);
      const handle = await open(this.pathOf(e.name), fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
      e.handle = handle;
      this.handles.add(e);
      this.closeIdleFiles();
      return handle;
    })();
    return e.opening;
  }

  private closeIdleFiles(): void {
    for (const e of this.handles) {
      if (this.handles.size <= this.maxOpenFiles) return;
      if (e.users === 0) this.closeFile(e);
    }
  }

  private closeFile(e: CacheEntry): void {
    const handle = e.handle;
    e.handle = undefined;
    e.opening = undefined;
    this.handles.delete(e);
    if (handle !== undefined) void handle.close().catch(() => undefined);
  }

  private pathOf(name: string): string {
    return entryPath(this.o.dir, name);
  }

  private async load(): Promise<void> {
    for (const e of await restoreEntries(this.o.dir, this.fingerprint)) {
      this.entries.set(e.ref.key, e);
      this.bytes += e.bytes;
    }
    this.evictTo(this.o.limitBytes);
  }

  /** Every INDEX_EVERY_MS: the bound follows the disk's free space, and the index is written if it changed. */
  private async maintain(): Promise<void> {
    if (this.closed || this.indexWrite !== undefined) return;
    this.indexWrite = (async () => {
      await this.refreshRoom();
      if (this.dirty) await this.writeIndex();
    })()
      .catch((err: unknown) => {
        this.warn('index', { err: errorMessage(err) }, 'disk cache: writing its index failed; a restart finds it colder');
      })
      .finally(() => {
        this.indexWrite = undefined;
      });
    await this.indexWrite;
  }

  private async refreshRoom(): Promise<void> {
    const fs = await statfs(this.o.dir);
    const free = fs.bavail * fs.bsize;
    const keepFree = this.o.keepFreeBytes ?? Math.max(MIN_FREE_BYTES, FREE_FRACTION * fs.blocks * fs.bsize);
    this.effectiveLimit = Math.max(0, Math.min(this.o.limitBytes, this.bytes + this.reserved + free - keepFree));
    this.evictTo(this.effectiveLimit);
  }

  private async writeIndex(): Promise<void> {
    this.dirty = false;
    const entries: IndexedEntry[] = [];
    for (const e of this.entries.values()) {
      if (e.bytes > 0)
        entries.push({ ref: e.ref, present: e.present, tables: e.tables, fetches: e.fetches, priority: e.priority - this.clock });
    }
    await writeIndex(this.o.dir, this.fingerprint, entries);
  }

  private warn(kind: string, fields: Record<string, unknown>, message: string): void {
    const left = this.warnings.admit(kind);
    if (left !== undefined) this.o.logger.warn({ ...fields, ...(left > 0 ? { notLogged: left } : {}) }, message);
  }
}
