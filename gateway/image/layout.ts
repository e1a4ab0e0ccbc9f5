/**
 * Where a format 2 volume's objects live in the store (see docs/volume-format-2.md). Data objects get
 * keys no one else will ever use — they carry the writer's epoch and a sequence number, deltas a random
 * suffix too — so no key is ever written twice, and a deposed writer cannot collide with its successor.
 * Numbers are fixed-width hex so that a listing comes back in order.
 */
import { elementAt } from '../../shared/checked.js';
import { randomBytes } from 'node:crypto';

export const VOLUMES_PREFIX = 'volumes/';

export function volumePrefix(name: string): string {
  return `${VOLUMES_PREFIX}${name}/`;
}

export function headKey(name: string): string {
  return `${volumePrefix(name)}head`;
}

export function snapshotsPrefix(name: string): string {
  return `${volumePrefix(name)}snapshots/`;
}

export function snapshotKey(name: string, snapshot: string): string {
  return `${snapshotsPrefix(name)}${snapshot}`;
}

export function trashPrefix(name: string): string {
  return `${volumePrefix(name)}trash/`;
}

/** A deleted head or snapshot, kept for the GC grace period: `trash/<ms since epoch>-<what>`. */
export function trashKey(name: string, what: string, at: Date): string {
  return `${trashPrefix(name)}${hex(at.getTime(), 12)}-${what}`;
}

export function trashTime(key: string): Date | undefined {
  const m = /\/trash\/([0-9a-f]{12})-[^/]+$/.exec(key);
  return m === null ? undefined : new Date(parseInt(elementAt(m, 1), 16));
}

/** Format 1's manifest: present without a head, the volume still needs `holdfast volume upgrade`. */
export function legacyManifestKey(name: string): string {
  return `${volumePrefix(name)}manifest.json`;
}

export function legacyLeaseKey(name: string): string {
  return `${volumePrefix(name)}lease.json`;
}

/** Format 1 extent objects: `extents/<12 hex digits>`, one whole extent each. */
export function legacyExtentIndex(name: string, key: string): number | undefined {
  const prefix = `${volumePrefix(name)}extents/`;
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  return /^[0-9a-f]{12}$/.test(rest) ? parseInt(rest, 16) : undefined;
}

export function legacyExtentKey(name: string, index: number): string {
  return `${volumePrefix(name)}extents/${hex(index, 12)}`;
}

/**
 * A base extent. `tag` defaults to random; the upgrade from format 1 uses a fixed one so that an
 * interrupted upgrade finds the objects it already wrote.
 */
export function baseExtentKey(name: string, index: number, epoch: number, seq: number, tag = randomBytes(4).toString('hex')): string {
  return `${volumePrefix(name)}extents/${hex(index, 12)}-${hex(epoch, 8)}-${hex(seq, 16)}-${tag}`;
}

export function deltaKey(name: string, epoch: number, seqTo: number): string {
  return `${volumePrefix(name)}deltas/${hex(epoch, 8)}-${hex(seqTo, 16)}-${randomBytes(4).toString('hex')}`;
}

export function indexPageKey(name: string, page: number, epoch: number, version: number): string {
  return `${volumePrefix(name)}index/${hex(page, 6)}-${hex(epoch, 8)}-${hex(version, 16)}-${randomBytes(4).toString('hex')}`;
}

/** Data objects GC may delete: every key under these folders of any volume. */
export const DATA_FOLDERS = ['extents/', 'deltas/', 'index/'] as const;

/** True for a format 2 data object key (format 1 extents are the upgrade's business, never GC's). */
export function isDataObjectKey(key: string): boolean {
  return /^volumes\/[^/]+\/(extents\/[0-9a-f]{12}-[0-9a-f]{8}-[0-9a-f]{16}-[0-9a-f]{8}|deltas\/[0-9a-f]{8}-[0-9a-f]{16}-[0-9a-f]{8}|index\/[0-9a-f]{6}-[0-9a-f]{8}-[0-9a-f]{16}-[0-9a-f]{8})$/.test(
    key,
  );
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}
