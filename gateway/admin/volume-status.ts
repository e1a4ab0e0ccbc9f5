import { z } from 'zod';
import { ErrorClassSchema, JOURNAL_PRESSURE_LEVELS } from '../../shared/events.js';
import { HangPolicyDocumentSchema } from '../../shared/hang-policy.js';
import type { Volume } from '../volume/volume.js';

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
  cache: z.object({ bytes: count, hits: count, misses: count }),
  uploads: z.object({ done: count, bytes: count, failures: count, inFlight: count }),
});
export type VolumeStatus = z.infer<typeof VolumeStatusSchema>;

/** `GET /v1/volumes`. */
export const VolumesResponseSchema = z.object({ gateway: z.string(), volumes: z.array(VolumeStatusSchema) });
export type VolumesResponse = z.infer<typeof VolumesResponseSchema>;

export function volumeStatus(v: Volume): VolumeStatus {
  const s = v.stats();
  const { journalPressure, ...hang } = v.hang.snapshot();
  return {
    name: v.name,
    size: v.size,
    readOnly: v.readOnly,
    clients: s.clients,
    ...hang,
    journal: {
      bytes: s.journalBytes,
      limit: s.journalLimitBytes,
      pressure: journalPressure,
      backlogRecords: s.pendingEntries,
      dirtyExtents: s.dirtyExtents,
    },
    cache: { bytes: s.cacheBytes, hits: s.cacheHits, misses: s.cacheMisses },
    uploads: { done: s.puts + s.deletes, bytes: s.bytesUploaded, failures: s.uploadFailures, inFlight: s.uploadsInFlight },
  };
}
