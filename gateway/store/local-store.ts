import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';

import { InvalidArgumentError } from '../../shared/errors.js';
import { type ObjectStore, StoreError } from './object-store.js';
import { syncDirectory } from '../fs/sync-directory.js';

/**
 * Marks the name of a file that `put` is still writing. Keys may not contain it, so a temp file
 * left behind by a crash can never be mistaken for an object.
 */
export const TEMP_FILE_MARKER = '.holdfast-tmp.';

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

  async get(key: string): Promise<Buffer | undefined> {
    const file = this.pathOf(key);
    try {
      return await readFile(file);
    } catch (err) {
      if (isNoSuchObject(err)) return undefined;
      throw new StoreError('get', key, { cause: err });
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer | undefined> {
    const file = this.pathOf(key);
    let handle;
    try {
      handle = await open(file, 'r');
    } catch (err) {
      if (isNoSuchObject(err)) return undefined;
      throw new StoreError('get-range', key, { cause: err });
    }
    try {
      const out = Buffer.allocUnsafe(length);
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

  async put(key: string, body: Buffer): Promise<void> {
    const file = this.pathOf(key);
    const dir = path.dirname(file);
    const temp = `${file}${TEMP_FILE_MARKER}${randomBytes(6).toString('hex')}`;
    try {
      await makeDirectoryDurably(dir);
      const handle = await open(temp, 'wx');
      try {
        await handle.writeFile(body);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      await rename(temp, file);
      await syncDirectory(dir);
    } catch (err) {
      await unlink(temp).catch(() => {
        // The temp file may never have been created; anything left is skipped by list().
      });
      throw new StoreError('put', key, { cause: err });
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.pathOf(key);
    try {
      await unlink(file);
      await syncDirectory(path.dirname(file));
    } catch (err) {
      if (isNoSuchObject(err)) return;
      throw new StoreError('delete', key, { cause: err });
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
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

  async probe(): Promise<void> {
    try {
      await stat(this.root);
    } catch (err) {
      throw new StoreError('probe', '', { cause: err });
    }
  }

  async close(): Promise<void> {
    // Nothing is held open between calls.
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
}

/**
 * Keys become paths, so anything that would escape the root or let two keys name the same file
 * (`a//b` and `a/b`, `a/./b` and `a/b`) is refused.
 */
function validateKey(key: string): void {
  if (key.startsWith('/')) {
    throw new InvalidArgumentError(`object key ${JSON.stringify(key)} must not start with '/'`);
  }
  if (key.includes('\0') || key.includes(TEMP_FILE_MARKER)) {
    throw new InvalidArgumentError(`object key ${JSON.stringify(key)} contains a reserved sequence`);
  }
  for (const segment of key.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new InvalidArgumentError(
        `object key ${JSON.stringify(key)} has an empty, '.' or '..' path segment`,
      );
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

/**
 * A new directory only survives power loss once its parent has been fsynced, so every
 * directory that mkdir created is synced through its parent.
 */
async function makeDirectoryDurably(dir: string): Promise<void> {
  const firstCreated = await mkdir(dir, { recursive: true });
  if (firstCreated === undefined) return;
  for (let created = dir; ; created = path.dirname(created)) {
    await syncDirectory(path.dirname(created));
    if (created === firstCreated || created === path.dirname(created)) break;
  }
}

