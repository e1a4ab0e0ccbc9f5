import type { Logger } from 'pino';
import { z } from 'zod';
import { HoldfastError, VolumeExistsError, VolumeNotFoundError } from '../../shared/errors.js';
import type { GcReport } from '../image/gc.js';
import type { SnapshotInfo } from '../image/snapshots.js';
import { allow, HttpError, pathSegment } from './http.js';

/** Where the storage routes find what they act on (the gateway; tests give their own). */
export interface StorageSources {
  /** Snapshots and compaction of a served volume (docs/volume-format-2.md). */
  readonly storage?: (volume: string) => VolumeStorage | undefined;
  /** Garbage collection of the whole store, now. */
  readonly gc?: (dryRun: boolean) => Promise<GcReport>;
}

/** What the admin API may do with a served volume's storage. */
export interface VolumeStorage {
  /** Snapshot of everything acknowledged before the call (the gateway holds what the store lacks). */
  snapshot(name: string): Promise<SnapshotInfo>;
  listSnapshots(): Promise<SnapshotInfo[]>;
  deleteSnapshot(name: string): Promise<void>;
  /** Folds every delta into base extents; resolves with the deltas left. */
  compact(): Promise<number>;
}

const SNAPSHOTS = /^\/v1\/volumes\/([^/]+)\/snapshots(?:\/([^/]+))?$/;
const COMPACT = /^\/v1\/volumes\/([^/]+)\/compact$/;
const SnapshotRequest = z.object({ name: z.string().min(1) }).strict();

/**
 * The storage operations of the admin API: snapshots of served volumes (they must go through the
 * gateway that holds the volume's journal, so that they include every acknowledged write), compaction
 * and garbage collection. Undefined when the path is not one of these.
 */
export async function storageRoute(
  path: string,
  method: string,
  url: URL,
  sources: StorageSources,
  body: () => Promise<unknown>,
  logger: Logger,
): Promise<{ status: number; body: unknown } | undefined> {
  if (path === '/v1/gc') {
    allow(method, ['POST']);
    if (sources.gc === undefined) throw new HttpError(404, 'garbage collection is not available here');
    return { status: 200, body: await sources.gc(url.searchParams.get('dryRun') === 'true') };
  }
  const compact = COMPACT.exec(path);
  if (compact !== null) {
    allow(method, ['POST']);
    const { name, storage } = served(sources, compact[1] ?? '');
    const deltas = await storage.compact();
    logger.info({ volume: name }, 'volume compacted');
    return { status: 200, body: { compacted: true, deltas } };
  }
  const m = SNAPSHOTS.exec(path);
  if (m === null) return undefined;
  const { name, storage } = served(sources, m[1] ?? '');
  const snapshot = m[2] === undefined ? undefined : pathSegment(m[2], 'snapshot name');
  try {
    if (snapshot === undefined) {
      allow(method, ['GET', 'POST']);
      if (method === 'GET') return { status: 200, body: { snapshots: await storage.listSnapshots() } };
      const parsed = SnapshotRequest.safeParse(await body());
      if (!parsed.success)
        throw new HttpError(
          400,
          `invalid snapshot request: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')}`,
        );
      const info = await storage.snapshot(parsed.data.name);
      logger.info({ volume: name, snapshot: info.name, seq: info.seq }, 'snapshot created');
      return { status: 201, body: info };
    }
    allow(method, ['DELETE']);
    await storage.deleteSnapshot(snapshot);
    logger.info({ volume: name, snapshot }, 'snapshot deleted');
    return { status: 200, body: { deleted: snapshot } };
  } catch (err) {
    if (err instanceof VolumeExistsError) throw new HttpError(409, err.message);
    if (err instanceof VolumeNotFoundError) throw new HttpError(404, err.message);
    if (err instanceof HoldfastError) throw new HttpError(400, err.message);
    throw err;
  }
}

function served(sources: StorageSources, encoded: string): { name: string; storage: VolumeStorage } {
  const name = pathSegment(encoded, 'volume name');
  const storage = sources.storage?.(name);
  if (storage === undefined) throw new HttpError(404, `no volume named ${name} is served here`);
  return { name, storage };
}
