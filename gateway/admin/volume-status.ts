import { z } from 'zod';
import { ErrorClassSchema, JOURNAL_PRESSURE_LEVELS } from '../../shared/events.js';
import { HangPolicyDocumentSchema, type HangPolicyDocument } from '../../shared/hang-policy.js';
import type { DiskCacheStats } from '../disk-cache/cache-stats.js';
import type { VolumeSnapshot } from '../volume/volume.js';
import type { WaitingVolume } from '../volume/waiting-volume.js';

const count = z.number().int().nonnegative();
const time = z.iso.datetime();

/**
 * What `GET /v1/volumes[/{name}]` returns per volume and `holdfast status` prints: one schema, used
 * to check what the CLI reads, and whose type the gateway builds.
 */
export const VolumeStatusSchema = z.object({
  name: z.string(),
  size: count,
  readOnly: z.boolean(),
  clients: count,
  state: z.enum(['normal', 'hang', 'timed-out']),
  paused: z.boolean(),
  held: z.object({ requests: count, bytes: count }),
  episode: z.object({ id: z.string(), startedAt: time, durationMs: z.number(), deadline: time.nullable() }).nullable(),
  timedOutSince: time.nullable(),
  storageUnavailableSince: time.nullable(),
  journalFailing: z.boolean(),
  errorClass: ErrorClassSchema.nullable(),
  lastError: z.string().nullable(),
  policy: HangPolicyDocumentSchema,
  journal: z.object({ bytes: count, limit: count, pressure: z.enum(JOURNAL_PRESSURE_LEVELS), backlogRecords: count, dirtyExtents: count }),
  cache: z.object({ bytes: count, hits: count, misses: count, squeezed: count }),
  /** The volume's object reads the disk cache answered and did not; null without a disk cache. */
  diskCache: z.object({ hits: count, misses: count }).nullable(),
  uploads: z.object({ done: count, bytes: count, failures: count, inFlight: count }),
  /** The volume in the store (format 2): its head, deltas, index and compaction. */
  image: z.object({
    epoch: count,
    headSeq: count,
    ackedSeq: count,
    leaseRemainingMs: z.number(),
    deltas: count,
    deltaBytes: count,
    baseExtents: count,
    indexBytes: count,
    compactedExtents: count,
    compactionBytes: count,
    /** Times uploads waited for compaction (deltas at twice their budget; writes slow down meanwhile). */
    compactionWaits: count,
    metadataBytes: count,
    corruptReads: count,
  }),
});
export type VolumeStatus = z.infer<typeof VolumeStatusSchema>;

/** The gateway's disk cache tier, which all its volumes share. */
export const DiskCacheStatusSchema = z.object({
  dir: z.string(),
  limit: count,
  /** The bound in force: less than the limit when the disk has less room. */
  effectiveLimit: count,
  bytes: count,
  objects: count,
  hits: count,
  misses: count,
  corrupt: count,
  evictions: count,
  skipped: count,
  full: count,
  errors: count,
});
export type DiskCacheStatus = z.infer<typeof DiskCacheStatusSchema>;

/** `GET /v1/volumes`. */
export const VolumesResponseSchema = z.object({
  gateway: z.string(),
  volumes: z.array(VolumeStatusSchema),
  diskCache: DiskCacheStatusSchema.nullable(),
});

export function diskCacheStatus(s: DiskCacheStats): DiskCacheStatus {
  return {
    dir: s.dir,
    limit: s.limitBytes,
    effectiveLimit: s.effectiveLimitBytes,
    bytes: s.bytes,
    objects: s.objects,
    hits: s.hits,
    misses: s.misses,
    corrupt: s.corrupt,
    evictions: s.evictions,
    skipped: s.skipped,
    full: s.full,
    errors: s.errors,
  };
}
export type VolumesResponse = z.infer<typeof VolumesResponseSchema>;

/**
 * A volume the gateway served before but cannot take yet (its store does not answer): offered to
 * clients, every request held until it is taken.
 */
export function waitingStatus(v: WaitingVolume, policy: HangPolicyDocument, since: Date): VolumeStatus {
  const held = v.held;
  return {
    name: v.name,
    size: v.size,
    readOnly: v.readOnly,
    clients: v.clients,
    state: held > 0 ? 'hang' : 'normal',
    paused: false,
    held: { requests: held, bytes: 0 },
    episode: null,
    timedOutSince: null,
    storageUnavailableSince: since.toISOString(),
    journalFailing: false,
    errorClass: 'transient',
    lastError: 'the object store did not answer: the volume is not taken yet',
    policy,
    journal: { bytes: 0, limit: 0, pressure: 'normal', backlogRecords: 0, dirtyExtents: 0 },
    cache: { bytes: 0, hits: 0, misses: 0, squeezed: 0 },
    diskCache: null,
    uploads: { done: 0, bytes: 0, failures: 0, inFlight: 0 },
    image: {
      epoch: 0,
      headSeq: 0,
      ackedSeq: 0,
      leaseRemainingMs: 0,
      deltas: 0,
      deltaBytes: 0,
      baseExtents: 0,
      indexBytes: 0,
      compactedExtents: 0,
      compactionBytes: 0,
      compactionWaits: 0,
      metadataBytes: 0,
      corruptReads: 0,
    },
  };
}

/** A served volume's status, from what `Volume.status()` answered. */
export function volumeStatus(v: VolumeSnapshot): VolumeStatus {
  const s = v.stats;
  const { journalPressure, ...hang } = v.hang;
  return {
    name: s.name,
    size: s.size,
    readOnly: s.readOnly,
    clients: s.clients,
    ...hang,
    journal: {
      bytes: s.journalBytes,
      limit: s.journalLimitBytes,
      pressure: journalPressure,
      backlogRecords: s.pendingEntries,
      dirtyExtents: s.dirtyExtents,
    },
    cache: { bytes: s.cacheBytes, hits: s.cacheHits, misses: s.cacheMisses, squeezed: s.cacheSqueezedBytes },
    diskCache: s.diskCache ?? null,
    uploads: { done: s.puts + s.deletes, bytes: s.bytesUploaded, failures: s.uploadFailures, inFlight: s.uploadsInFlight },
    image: {
      epoch: s.epoch,
      headSeq: s.headSeq,
      ackedSeq: s.ackedSeq,
      leaseRemainingMs: s.leaseRemainingMs,
      deltas: s.deltas,
      deltaBytes: s.deltaBytes,
      baseExtents: s.baseExtents,
      indexBytes: s.indexBytes,
      compactedExtents: s.compactedExtents,
      compactionBytes: s.compactionBytes,
      compactionWaits: s.compactionWaits,
      metadataBytes: s.metadataBytes,
      corruptReads: s.corruptReads,
    },
  };
}
