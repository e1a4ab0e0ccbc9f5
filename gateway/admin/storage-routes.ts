import type { Logger } from 'pino';
import { z } from 'zod';
import { HoldfastError, VolumeExistsError, VolumeNotFoundError } from '../../shared/errors.js';
import { deleteSnapshot, listSnapshots, storeSnapshot } from '../image/snapshots.js';
import { allow, HttpError, type AdminSources } from './admin-server.js';

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
  sources: AdminSources,
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
    const volume = served(sources, compact[1]!);
    await volume.compact();
    return { status: 200, body: { compacted: true, deltas: volume.stats().deltas } };
  }
  const m = SNAPSHOTS.exec(path);
  if (m === null) return undefined;
  const volume = served(sources, m[1]!);
  const snapshot = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
  try {
    if (snapshot === undefined) {
      allow(method, ['GET', 'POST']);
      if (method === 'GET') return { status: 200, body: { snapshots: await listSnapshots(volume.storeOf, volume.name) } };
      const parsed = SnapshotRequest.safeParse(await body());
      if (!parsed.success) throw new HttpError(400, `invalid snapshot request: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')}`);
      const info = await storeSnapshot(volume.storeOf, await volume.committedHead(), parsed.data.name);
      logger.info({ volume: volume.name, snapshot: info.name, seq: info.seq }, 'snapshot created');
      return { status: 201, body: info };
    }
    allow(method, ['DELETE']);
    await deleteSnapshot(volume.storeOf, volume.name, snapshot);
    logger.info({ volume: volume.name, snapshot }, 'snapshot deleted');
    return { status: 200, body: { deleted: snapshot } };
  } catch (err) {
    if (err instanceof VolumeExistsError) throw new HttpError(409, err.message);
    if (err instanceof VolumeNotFoundError) throw new HttpError(404, err.message);
    if (err instanceof HoldfastError && !(err instanceof HttpError)) throw new HttpError(400, err.message);
    throw err;
  }
}

function served(sources: AdminSources, encoded: string) {
  const name = decodeURIComponent(encoded);
  const volume = sources.volume(name);
  if (volume === undefined) throw new HttpError(404, `no volume named ${name} is served here`);
  return volume;
}
