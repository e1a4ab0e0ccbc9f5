/**
 * Snapshots and clones (docs/volume-format-2.md, "Snapshots, clones, garbage"). A snapshot is a
 * committed head kept under `snapshots/NAME`, created with If-None-Match so it is never overwritten;
 * a clone is a new volume whose first head names a snapshot's objects. Neither copies any data.
 */
import { InvalidArgumentError, VolumeExistsError, VolumeNotFoundError } from '../../shared/errors.js';
import { SNAPSHOT_NAME } from '../../shared/volume-manifest.js';
import { type ObjectStore, PreconditionFailedError } from '../store/object-store.js';
import { encodeHead, type Head, parseHead } from './head.js';
import { headKey, snapshotKey, snapshotsPrefix, trashKey } from './layout.js';

export interface SnapshotInfo {
  readonly volume: string;
  readonly name: string;
  readonly createdAt: string;
  /** Every write acknowledged up to this sequence is in it. */
  readonly seq: number;
  readonly size: number;
  readonly deltas: number;
}

export function checkSnapshotName(name: string): void {
  if (!SNAPSHOT_NAME.test(name))
    throw new InvalidArgumentError(`"${name}" is not a valid snapshot name (letters, digits, . _ -; at most 63)`);
}

/** Stores `head` (a committed head of the volume) as snapshot `name`. */
export async function storeSnapshot(store: ObjectStore, head: Head, name: string, now = new Date()): Promise<SnapshotInfo> {
  checkSnapshotName(name);
  const snapshot: Head = { ...head, owner: null, snapshot: { name, createdAt: now.toISOString() } };
  try {
    await store.putIfAbsent(snapshotKey(head.name, name), encodeHead(snapshot));
  } catch (err) {
    if (err instanceof PreconditionFailedError)
      throw new VolumeExistsError(`volume ${head.name} already has a snapshot ${name}`, { cause: err });
    throw err;
  }
  return infoOf(snapshot);
}

export async function readSnapshot(store: ObjectStore, volume: string, name: string): Promise<Head> {
  checkSnapshotName(name);
  const body = await store.get(snapshotKey(volume, name));
  if (body === undefined) throw new VolumeNotFoundError(`volume ${volume} has no snapshot ${name}`);
  return parseHead(body, `${store.location}${snapshotKey(volume, name)}`);
}

export async function listSnapshots(store: ObjectStore, volume: string): Promise<SnapshotInfo[]> {
  const out: SnapshotInfo[] = [];
  for await (const key of store.list(snapshotsPrefix(volume))) {
    const body = await store.get(key);
    // Deleted since it was listed.
    if (body !== undefined) out.push(infoOf(parseHead(body, `${store.location}${key}`)));
  }
  return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** Moves the snapshot to the trash (GC keeps what it names for the grace period) and deletes it. */
export async function deleteSnapshot(store: ObjectStore, volume: string, name: string, now = new Date()): Promise<void> {
  checkSnapshotName(name);
  const key = snapshotKey(volume, name);
  const body = await store.get(key);
  if (body === undefined) throw new VolumeNotFoundError(`volume ${volume} has no snapshot ${name}`);
  await store.put(trashKey(volume, `snapshot-${name}`, now), body);
  await store.delete(key);
}

/** Creates volume `name` from a snapshot's head: the same contents, its own history from now on. */
export async function cloneFromSnapshot(store: ObjectStore, snapshot: Head, name: string, now = new Date()): Promise<Head> {
  const origin = { volume: snapshot.name, snapshot: snapshot.snapshot?.name ?? '' };
  const { snapshot: _dropped, origin: _parentOrigin, ...rest } = snapshot;
  const head: Head = {
    ...rest,
    name,
    createdAt: now.toISOString(),
    epoch: 0,
    version: 0,
    owner: null,
    journalSince: 0,
    ackedSeq: snapshot.seq,
    released: [],
    origin,
  };
  try {
    await store.putIfAbsent(headKey(name), encodeHead(head));
  } catch (err) {
    if (err instanceof PreconditionFailedError) throw new VolumeExistsError(`volume ${name} already exists`, { cause: err });
    throw err;
  }
  return head;
}

function infoOf(head: Head): SnapshotInfo {
  return {
    volume: head.name,
    name: head.snapshot?.name ?? '',
    createdAt: head.snapshot?.createdAt ?? head.createdAt,
    seq: head.seq,
    size: head.size,
    deltas: head.deltas.length,
  };
}
