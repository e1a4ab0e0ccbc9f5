import type { HangSnapshot } from '../hang/hang-monitor.js';
import type { Volume } from '../volume/volume.js';

/** What `GET /v1/volumes[/{name}]` returns per volume and `holdfast status` prints. */
export interface VolumeStatus extends Omit<HangSnapshot, 'journalFailing' | 'journalPressure'> {
  readonly name: string;
  readonly size: number;
  readonly readOnly: boolean;
  readonly clients: number;
  readonly journalFailing: boolean;
  readonly journal: { bytes: number; limit: number; pressure: string; backlogRecords: number; dirtyExtents: number };
  readonly cache: { bytes: number; hits: number; misses: number };
  readonly uploads: { done: number; bytes: number; failures: number; inFlight: number };
}

export function volumeStatus(v: Volume): VolumeStatus {
  const s = v.stats();
  const h = v.hang.snapshot();
  return {
    name: v.name,
    size: v.size,
    readOnly: v.readOnly,
    clients: s.clients,
    ...h,
    journal: { bytes: s.journalBytes, limit: s.journalLimitBytes, pressure: h.journalPressure, backlogRecords: s.pendingEntries, dirtyExtents: s.dirtyExtents },
    cache: { bytes: s.cacheBytes, hits: s.cacheHits, misses: s.cacheMisses },
    uploads: { done: s.puts + s.deletes, bytes: s.bytesUploaded, failures: s.uploadFailures, inFlight: s.uploadsInFlight },
  };
}
