import type { HangCounters, HangSnapshot } from '../hang/index.js';
import type { Head } from '../image/head.js';
import type { VolumeImage } from '../image/volume-image.js';
import type { Journal } from '../journal/journal.js';
import type { Compactor } from './compactor.js';
import type { ExtentCache } from './extent-cache.js';
import type { PendingChanges } from './pending-changes.js';
import type { Uploader } from './uploader.js';

/** A served volume's numbers, for the admin API, metrics and `holdfast status`. */
export interface VolumeStats {
  readonly name: string;
  readonly size: number;
  readonly extentSize: number;
  readonly readOnly: boolean;
  readonly clients: number;
  readonly journalBytes: number;
  readonly journalLimitBytes: number;
  readonly journalSegments: number;
  readonly pendingEntries: number;
  readonly dirtyExtents: number;
  readonly uploadsInFlight: number;
  readonly cacheBytes: number;
  /** Taken off the cache's bound for the gateway's memory limit. */
  readonly cacheSqueezedBytes: number;
  readonly cacheHits: number;
  readonly cacheMisses: number;
  /** Objects PUT: deltas and compacted base extents. */
  readonly puts: number;
  readonly deletes: number;
  readonly bytesUploaded: number;
  readonly uploadFailures: number;
  readonly epoch: number;
  readonly headSeq: number;
  readonly ackedSeq: number;
  /** The sequence of the last record appended to the journal. */
  readonly lastSeq: number;
  readonly leaseRemainingMs: number;
  readonly deposed: boolean;
  readonly deltas: number;
  readonly deltaBytes: number;
  readonly baseExtents: number;
  readonly indexBytes: number;
  readonly compactions: number;
  readonly compactedExtents: number;
  /** Times new deltas waited for compaction because the deltas were at twice their budget. */
  readonly compactionWaits: number;
  readonly compactionBytes: number;
  /** Reads that failed because stored bytes failed their CRC32C. */
  readonly corruptReads: number;
  /** Object reads the disk cache answered, and those it did not hold; undefined without a disk cache. */
  readonly diskCache: { readonly hits: number; readonly misses: number } | undefined;
  /** Bytes of heads and index pages sent to the store. */
  readonly metadataBytes: number;
}

/** Everything the admin API and metrics read of a served volume at one moment: `Volume.status()`. */
export interface VolumeSnapshot {
  readonly stats: VolumeStats;
  /** The hang engine's view: state, held requests, episode, storage health, journal pressure, policy. */
  readonly hang: HangSnapshot;
  /** The hang engine's counters since the volume was opened (a copy). */
  readonly hangCounters: Readonly<HangCounters>;
}

export function volumeStats(v: {
  name: string;
  size: number;
  extentSize: number;
  readOnly: boolean;
  clients: number;
  journal: Journal;
  pending: PendingChanges;
  cache: ExtentCache;
  uploader: Uploader;
  compactor: Compactor;
  image: VolumeImage;
  head: Head;
  ackedSeq: number;
  leaseRemainingMs: number;
  deposed: boolean;
  corruptReads: number;
  diskCache: { readonly hits: number; readonly misses: number } | undefined;
  metadataBytes: number;
}): VolumeStats {
  const u = v.uploader.stats;
  const c = v.compactor.stats;
  return {
    name: v.name,
    size: v.size,
    extentSize: v.extentSize,
    readOnly: v.readOnly,
    clients: v.clients,
    journalBytes: v.journal.usedBytes,
    journalLimitBytes: v.journal.limitBytes,
    journalSegments: v.journal.segmentCount,
    pendingEntries: v.pending.count,
    dirtyExtents: v.pending.dirtyExtentCount,
    uploadsInFlight: v.uploader.uploading,
    cacheBytes: v.cache.bytes,
    cacheSqueezedBytes: v.cache.squeezed,
    cacheHits: v.cache.hits,
    cacheMisses: v.cache.misses,
    puts: u.deltas + c.extents,
    deletes: 0,
    bytesUploaded: u.bytesUploaded + c.bytesWritten,
    uploadFailures: u.failures + c.failures,
    epoch: v.head.epoch,
    headSeq: v.head.seq,
    ackedSeq: v.ackedSeq,
    lastSeq: v.journal.lastSequence,
    leaseRemainingMs: Math.round(v.leaseRemainingMs),
    deposed: v.deposed,
    deltas: v.image.deltas.size,
    deltaBytes: v.image.deltaBytes,
    baseExtents: v.image.bases.size,
    indexBytes: v.image.indexBytes,
    compactions: c.runs,
    compactedExtents: c.extents,
    compactionWaits: u.compactionWaits,
    compactionBytes: c.bytesWritten,
    corruptReads: v.corruptReads,
    diskCache: v.diskCache === undefined ? undefined : { hits: v.diskCache.hits, misses: v.diskCache.misses },
    metadataBytes: v.metadataBytes,
  };
}
