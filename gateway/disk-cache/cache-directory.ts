/**
 * The disk cache's directory: who may use it (a LOCK file), where an object's file lives
 * (`objects/XX/NAME`, NAME a hash of what makes its bytes valid), and what a restarted gateway finds
 * in it — the entries its index names whose files are still there; every other file is deleted.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../shared/errors.js';
import type { ObjectRef } from '../image/object-reader.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { BLOCK, CacheEntry } from './cache-entry.js';
import { decodeIndex, encodeIndex, type IndexedEntry, storeFingerprint } from './cache-index.js';

/** Subdirectories of `objects/`: the first two hex digits of a file's name. */
export const SUBDIRS = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export function subdirPath(dir: string, prefix: string): string {
  return join(dir, 'objects', prefix);
}

export function entryPath(dir: string, name: string): string {
  return join(subdirPath(dir, name.slice(0, 2)), name);
}

/** A file name no other object (or other content under the same key) can have. */
export function entryName(ref: ObjectRef): string {
  return createHash('sha256').update(`${ref.key}\0${ref.metaCrc}\0${ref.size}\0${ref.metaOffset}`).digest('hex').slice(0, 40);
}

function readIndex(dir: string, fingerprint: Buffer): Promise<IndexedEntry[] | undefined> {
  return readFile(join(dir, 'index')).then(
    (buf) => decodeIndex(buf, fingerprint, (metaOffset) => Math.ceil(Math.ceil(metaOffset / BLOCK) / 8)),
    () => undefined,
  );
}

export function writeIndex(dir: string, fingerprint: Buffer, entries: readonly IndexedEntry[]): Promise<void> {
  return writeFileAtomic(join(dir, 'index'), encodeIndex(fingerprint, entries));
}

/**
 * The entries the index names whose files are there, with their blocks and priorities. Files the
 * index does not name hold blocks nobody knows are there (written after the last index, or another
 * store's): they are deleted, as are files the index says hold nothing.
 */
export async function restoreEntries(dir: string, fingerprint: Buffer): Promise<CacheEntry[]> {
  const byName = new Map<string, IndexedEntry>();
  for (const ie of (await readIndex(dir, fingerprint)) ?? []) byName.set(entryName(ie.ref), ie);
  const restored: CacheEntry[] = [];
  for (const prefix of SUBDIRS) {
    const sub = subdirPath(dir, prefix);
    for (const name of await readdir(sub)) {
      const ie = byName.get(name);
      const e = ie === undefined ? undefined : new CacheEntry(ie.ref, name);
      if (ie !== undefined && e !== undefined) {
        e.restore(ie.present, ie.tables, ie.fetches);
        e.priority = ie.priority;
      }
      if (e === undefined || e.bytes === 0) await rm(join(sub, name), { force: true });
      else restored.push(e);
    }
  }
  return restored;
}

/**
 * What a cache directory's index says it holds, per object key: bytes on disk. For `volume inspect`,
 * without taking the directory (a gateway may be using it); as of the index's last write.
 */
export async function cachedBytes(dir: string, storeLocation: string): Promise<ReadonlyMap<string, number> | undefined> {
  const entries = await readIndex(dir, storeFingerprint(storeLocation));
  if (entries === undefined) return undefined;
  const bytes = new Map<string, number>();
  for (const ie of entries) {
    const e = new CacheEntry(ie.ref, '');
    e.restore(ie.present, ie.tables, ie.fetches);
    bytes.set(ie.ref.key, e.bytes);
  }
  return bytes;
}

/**
 * One process per cache directory: a second gateway pointed at it would delete the first one's files
 * as unknown. A lock left by a process that is gone (a crash, a container restart) is taken over.
 */
export async function takeLock(dir: string): Promise<void> {
  const path = join(dir, 'LOCK');
  const me = { host: hostname(), pid: process.pid };
  const held = await readFile(path, 'utf8').then(
    (text) => JSON.parse(text) as { host?: unknown; pid?: unknown },
    () => undefined,
  );
  if (held !== undefined && held.host === me.host && typeof held.pid === 'number' && held.pid !== me.pid && alive(held.pid)) {
    throw new ConfigError(`--cache-dir ${dir} is in use by process ${held.pid} on this host`, {
      hint: 'give each gateway its own cache directory',
    });
  }
  await writeFileAtomic(path, JSON.stringify(me));
}

export async function releaseLock(dir: string): Promise<void> {
  await rm(join(dir, 'LOCK'), { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: unknown }).code === 'EPERM';
  }
}
