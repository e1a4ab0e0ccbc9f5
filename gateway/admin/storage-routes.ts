import type { Logger } from 'pino';
import { z } from 'zod';
import { HoldfastError, VolumeBusyError, VolumeExistsError, VolumeNotFoundError } from '../../shared/errors.js';
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
  /** New size; a shrink is refused (VolumeBusyError) while clients are attached. */
  resize(size: number): Promise<{ size: number }>;
  /**
   * Stops serving the volume and deletes it; refused (VolumeBusyError) while clients are attached
   * unless forced, in which case they are disconnected once their requests in flight are answered.
   */
  delete(force: boolean): Promise<{ snapshots: number; disconnected: number }>;
}

const SNAPSHOTS = /^\/v1\/volumes\/([^/]+)\/snapshots(?:\/([^/]+))?$/;
const COMPACT = /^\/v1\/volumes\/([^/]+)\/compact$/;
const RESIZE = /^\/v1\/volumes\/([^/]+)\/resize$/;
const VOLUME = /^\/v1\/volumes\/([^/]+)$/;
const SnapshotRequest = z.object({ name: z.string().min(1) }).strict();
const ResizeRequest = z.object({ size: z.number().int().positive() }).strict();

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
  try {
    return await volumeRoute(path, method, url, sources, body, logger);
  } catch (err) {
    if (err instanceof VolumeBusyError) throw new HttpError(423, err.message);
    if (err instanceof VolumeExistsError) throw new HttpError(409, err.message);
    if (err instanceof VolumeNotFoundError) throw new HttpError(404, err.message);
    if (err instanceof HoldfastError) throw new HttpError(400, err.message);
    throw err;
  }
}

async function volumeRoute(
  path: string,
  method: string,
  url: URL,
  sources: StorageSources,
  body: () => Promise<unknown>,
  logger: Logger,
): Promise<{ status: number; body: unknown } | undefined> {
  const volume = VOLUME.exec(path);
  // GET on a volume is its status, the admin server's own route.
  if (volume !== null && method === 'DELETE') {
    const { name, storage } = served(sources, volume[1] ?? '');
    const result = await storage.delete(url.searchParams.get('force') === 'true');
    logger.info({ volume: name, ...result }, 'volume deleted');
    return { status: 200, body: { deleted: name, ...result } };
  }
  const resize = RESIZE.exec(path);
  if (resize !== null) {
    allow(method, ['POST']);
    const { name, storage } = served(sources, resize[1] ?? '');
    const parsed = ResizeRequest.safeParse(await body());
    if (!parsed.success) throw new HttpError(400, `invalid resize request: ${describeIssues(parsed.error.issues)}`);
    return { status: 200, body: { volume: name, ...(await storage.resize(parsed.data.size)) } };
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
  if (snapshot === undefined) {
    allow(method, ['GET', 'POST']);
    if (method === 'GET') return { status: 200, body: { snapshots: await storage.listSnapshots() } };
    const parsed = SnapshotRequest.safeParse(await body());
    if (!parsed.success) throw new HttpError(400, `invalid snapshot request: ${describeIssues(parsed.error.issues)}`);
    const info = await storage.snapshot(parsed.data.name);
    logger.info({ volume: name, snapshot: info.name, seq: info.seq }, 'snapshot created');
    return { status: 201, body: info };
  }
  allow(method, ['DELETE']);
  await storage.deleteSnapshot(snapshot);
  logger.info({ volume: name, snapshot }, 'snapshot deleted');
  return { status: 200, body: { deleted: snapshot } };
}

function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
}

function served(sources: StorageSources, encoded: string): { name: string; storage: VolumeStorage } {
  const name = pathSegment(encoded, 'volume name');
  const storage = sources.storage?.(name);
  if (storage === undefined) throw new HttpError(404, `no volume named ${name} is served here`);
  return { name, storage };
}
