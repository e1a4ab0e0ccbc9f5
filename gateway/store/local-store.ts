import { link, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import path from 'node:path';

import { crc32c } from '@node-rs/crc32';
import { InvalidArgumentError } from '../../shared/errors.js';
import {
  type ObjectInfo,
  type ObjectStore,
  PreconditionFailedError,
  type StoreCallOptions,
  StoreError,
  type StoreReadOptions,
  type VersionedObject,
} from './object-store.js';
import { makeDirectoryDurably, readInto, TEMP_FILE_MARKER, writeTemp } from './local-files.js';
import { viewOrNew } from '../util/buffer-pool.js';
import { syncDirectory } from '../util/sync-directory.js';

export { TEMP_FILE_MARKER };

/**
 * A conditionally written object is a directory of numbered versions, `KEY.hfcas/0000000000000007`:
 * a write creates version N+1 with link(2), which fails if the file exists, so of two writers that
 * read version N only one succeeds — the same guarantee S3 gives for If-Match. No lock is held, so
 * a writer frozen mid-write (SIGSTOP) cannot block or later clobber anyone.
 */
const CAS_SUFFIX = '.hfcas';
const VERSION_NAME = /^\d{16}$/;
/** Versions kept behind the newest; older ones are deleted after each write. */
const VERSIONS_KEPT = 8;

/**
 * An object store in a local directory: each key is a file under `root`, `/` in a key is a
 * directory separator. Writes are atomic (temp file + rename) and durable (data and directory
 * entries are fsynced before `put` or `delete` returns), so the journal can rely on a put that
 * returned just as it would on S3.
 */
export class LocalDirectoryStore implements ObjectStore {
  readonly location: string;
  private readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.location = `file://${this.root}/`;
  }

  async get(key: string, opts?: StoreReadOptions): Promise<Buffer | undefined> {
    const file = this.pathOf(key);
    try {
      checkAborted(opts);
      return opts?.into === undefined ? await readFile(file) : await readInto(file, opts.into);
    } catch (err) {
      if (isNoSuchObject(err)) return (await this.getVersioned(key, opts))?.body;
      throw new StoreError('get', key, { cause: err });
    }
  }

  async getRange(key: string, offset: number, length: number, opts?: StoreReadOptions): Promise<Buffer | undefined> {
    const file = this.pathOf(key);
    let handle;
    try {
      checkAborted(opts);
      handle = await open(file, 'r');
    } catch (err) {
      if (isNoSuchObject(err)) {
        const whole = await this.getVersioned(key, opts);
        return whole === undefined ? undefined : whole.body.subarray(offset, offset + length);
      }
      throw new StoreError('get-range', key, { cause: err });
    }
    try {
      const out = viewOrNew(opts?.into, length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(out, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done === length ? out : out.subarray(0, done);
    } catch (err) {
      throw new StoreError('get-range', key, { cause: err });
    } finally {
      await handle.close();
    }
  }

  async put(key: string, body: Buffer, opts?: StoreCallOptions): Promise<void> {
    const file = this.pathOf(key);
    const dir = path.dirname(file);
    let temp: string | undefined;
    try {
      checkAborted(opts);
      await makeDirectoryDurably(dir);
      temp = await writeTemp(file, body);
      await rename(temp, file);
      await syncDirectory(dir);
    } catch (err) {
      if (temp !== undefined) await unlink(temp).catch(() => undefined);
      throw new StoreError('put', key, { cause: err });
    }
  }

  async getVersioned(key: string, opts?: StoreCallOptions): Promise<VersionedObject | undefined> {
    const dir = this.casDirOf(key);
    try {
      checkAborted(opts);
      for (let attempt = 0; ; attempt++) {
        const newest = await newestVersion(dir);
        if (newest === 0) return undefined;
        try {
          const body = await readFile(path.join(dir, versionName(newest)));
          return { body, etag: etagOf(newest, body) };
        } catch (err) {
          // Deleted between the listing and the read (the whole object went away): list again.
          if (!isNoSuchObject(err) || attempt >= 3) throw err;
        }
      }
    } catch (err) {
      throw new StoreError('get', key, { cause: err });
    }
  }

  putIfAbsent(key: string, body: Buffer, opts?: StoreCallOptions): Promise<string> {
    return this.putVersion('put-if-absent', key, body, undefined, opts);
  }

  putIfMatch(key: string, body: Buffer, etag: string, opts?: StoreCallOptions): Promise<string> {
    return this.putVersion('put-if-match', key, body, etag, opts);
  }

  private async putVersion(
    operation: 'put-if-absent' | 'put-if-match',
    key: string,
    body: Buffer,
    expected: string | undefined,
    opts: StoreCallOptions | undefined,
  ): Promise<string> {
    const dir = this.casDirOf(key);
    let temp: string | undefined;
    try {
      checkAborted(opts);
      let base = 0;
      if (expected !== undefined) {
        base = parseEtag(expected);
        // The version named must still hold the bytes the etag was made from: a volume deleted and
        // created again restarts its numbering, and an old etag must not match the new object.
        const current = await readFile(path.join(dir, versionName(base))).catch((err: unknown) => {
          if (isNoSuchObject(err)) return undefined;
          throw err;
        });
        if (current === undefined || etagOf(base, current) !== expected) throw new PreconditionFailedError(key);
      } else if ((await newestVersion(dir)) !== 0) {
        throw new PreconditionFailedError(key);
      }
      await makeDirectoryDurably(dir);
      const next = base + 1;
      temp = await writeTemp(path.join(dir, versionName(next)), body);
      try {
        await link(temp, path.join(dir, versionName(next)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new PreconditionFailedError(key, { cause: err });
        throw err;
      }
      await syncDirectory(dir);
      // Versions far behind are deleted, so a writer holding a very old etag could re-create a
      // deleted number: it has won only if nothing newer exists.
      if ((await newestVersion(dir)) !== next) {
        await unlink(path.join(dir, versionName(next))).catch(() => undefined);
        throw new PreconditionFailedError(key);
      }
      await pruneVersions(dir, next);
      return etagOf(next, body);
    } catch (err) {
      if (err instanceof PreconditionFailedError) throw err;
      throw new StoreError(operation, key, { cause: err });
    } finally {
      if (temp !== undefined) await unlink(temp).catch(() => undefined);
    }
  }

  async delete(key: string, opts?: StoreCallOptions): Promise<void> {
    const file = this.pathOf(key);
    try {
      checkAborted(opts);
      await rm(this.casDirOf(key), { recursive: true, force: true });
      await unlink(file);
      await syncDirectory(path.dirname(file));
    } catch (err) {
      if (isNoSuchObject(err)) return;
      throw new StoreError('delete', key, { cause: err });
    }
  }

  async *listDetailed(prefix: string, opts?: StoreCallOptions): AsyncIterable<ObjectInfo> {
    for await (const key of this.list(prefix, opts)) {
      let info: ObjectInfo | undefined;
      try {
        const st = await stat(this.pathOf(key)).catch(async (err: unknown) => {
          if (!isNoSuchObject(err)) throw err;
          const dir = this.casDirOf(key);
          const newest = await newestVersion(dir);
          return newest === 0 ? undefined : stat(path.join(dir, versionName(newest)));
        });
        if (st !== undefined) info = { key, size: st.size, lastModified: st.mtime };
      } catch (err) {
        if (!isNoSuchObject(err)) throw new StoreError('list', prefix, { cause: err });
      }
      // Deleted since it was listed: it is simply not there any more.
      if (info !== undefined) yield info;
    }
  }

  async *list(prefix: string, opts?: StoreCallOptions): AsyncIterable<string> {
    checkAborted(opts);
    // Only the part of the prefix up to its last `/` names a directory; the rest is a partial
    // file or directory name that still has to be matched against each entry.
    const slash = prefix.lastIndexOf('/');
    const startKey = prefix.slice(0, slash + 1);
    if (startKey !== '') validateKey(startKey.slice(0, -1));
    let keys: string[];
    try {
      keys = await this.collectKeys(startKey, prefix);
    } catch (err) {
      throw new StoreError('list', prefix, { cause: err });
    }
    // Sorting at the end rather than walking in order: `/` sorts after `-` and `.`, so a
    // directory's keys do not come out contiguous with a plain per-directory sort.
    keys.sort();
    yield* keys;
  }

  async *listFolders(prefix: string, opts?: StoreCallOptions): AsyncIterable<string> {
    checkAborted(opts);
    if (prefix !== '') validateKey(prefix.replace(/\/$/, ''));
    let entries;
    try {
      entries = await readdir(path.join(this.root, prefix), { withFileTypes: true });
    } catch (err) {
      if (isNoSuchObject(err)) return;
      throw new StoreError('list', prefix, { cause: err });
    }
    const names = entries
      .filter((e) => e.isDirectory() && !e.name.endsWith(CAS_SUFFIX) && !e.name.includes(TEMP_FILE_MARKER))
      .map((e) => e.name);
    // A directory left empty by deletions has no objects under it: S3 would not list it.
    for (const name of names.sort()) {
      if (await this.hasObjects(`${prefix}${name}/`)) yield name;
    }
  }

  async probe(opts?: StoreCallOptions): Promise<void> {
    try {
      checkAborted(opts);
      await stat(this.root);
    } catch (err) {
      throw new StoreError('probe', '', { cause: err });
    }
  }

  async close(): Promise<void> {
    // Nothing is held open between calls.
  }

  private async hasObjects(dirKey: string): Promise<boolean> {
    let entries;
    try {
      entries = await readdir(path.join(this.root, dirKey), { withFileTypes: true });
    } catch (err) {
      if (isNoSuchObject(err)) return false;
      throw new StoreError('list', dirKey, { cause: err });
    }
    for (const entry of entries) {
      if (entry.name.includes(TEMP_FILE_MARKER)) continue;
      if (!entry.isDirectory()) return true;
      if (
        entry.name.endsWith(CAS_SUFFIX)
          ? (await newestVersion(path.join(this.root, dirKey, entry.name))) !== 0
          : await this.hasObjects(`${dirKey}${entry.name}/`)
      )
        return true;
    }
    return false;
  }

  private async collectKeys(dirKey: string, prefix: string): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(path.join(this.root, dirKey), { withFileTypes: true });
    } catch (err) {
      if (isNoSuchObject(err)) return [];
      throw err;
    }
    const keys: string[] = [];
    for (const entry of entries) {
      if (entry.name.includes(TEMP_FILE_MARKER)) continue;
      if (entry.isDirectory() && entry.name.endsWith(CAS_SUFFIX)) {
        const key = dirKey + entry.name.slice(0, -CAS_SUFFIX.length);
        if (key.startsWith(prefix) && (await newestVersion(path.join(this.root, dirKey, entry.name))) !== 0) keys.push(key);
        continue;
      }
      const key = dirKey + entry.name;
      if (entry.isDirectory()) {
        const childDirKey = `${key}/`;
        if (childDirKey.startsWith(prefix) || prefix.startsWith(childDirKey)) {
          keys.push(...(await this.collectKeys(childDirKey, prefix)));
        }
      } else if (key.startsWith(prefix)) {
        keys.push(key);
      }
    }
    return keys;
  }

  private pathOf(key: string): string {
    validateKey(key);
    return path.join(this.root, key);
  }

  private casDirOf(key: string): string {
    return `${this.pathOf(key)}${CAS_SUFFIX}`;
  }
}

function versionName(n: number): string {
  return String(n).padStart(16, '0');
}

function etagOf(version: number, body: Buffer): string {
  return `${version}-${crc32c(body).toString(16).padStart(8, '0')}`;
}

function parseEtag(etag: string): number {
  const m = /^(\d+)-[0-9a-f]{8}$/.exec(etag);
  const n = m === null ? NaN : Number(m[1]);
  return Number.isSafeInteger(n) && n > 0 ? n : -1;
}

/** The highest version number in a conditional object's directory; 0 when there is none. */
async function newestVersion(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isNoSuchObject(err)) return 0;
    throw err;
  }
  let newest = 0;
  for (const name of names) if (VERSION_NAME.test(name)) newest = Math.max(newest, Number(name));
  return newest;
}

async function pruneVersions(dir: string, newest: number): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    if (VERSION_NAME.test(name) && Number(name) <= newest - VERSIONS_KEPT) await unlink(path.join(dir, name)).catch(() => undefined);
  }
}

function checkAborted(opts: StoreCallOptions | undefined): void {
  opts?.signal?.throwIfAborted();
}

/**
 * Keys become paths, so anything that would escape the root or let two keys name the same file
 * (`a//b` and `a/b`, `a/./b` and `a/b`) is refused.
 */
function validateKey(key: string): void {
  if (key.startsWith('/')) {
    throw new InvalidArgumentError(`object key ${JSON.stringify(key)} must not start with '/'`);
  }
  if (key.includes('\0') || key.includes(TEMP_FILE_MARKER) || key.split('/').some((segment) => segment.endsWith(CAS_SUFFIX))) {
    throw new InvalidArgumentError(`object key ${JSON.stringify(key)} contains a reserved sequence`);
  }
  for (const segment of key.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new InvalidArgumentError(`object key ${JSON.stringify(key)} has an empty, '.' or '..' path segment`);
    }
  }
}

/**
 * ENOTDIR and EISDIR mean a path component is a file where a directory would be (or the
 * reverse), which also means no object has this key.
 */
function isNoSuchObject(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}
