import type { Logger } from 'pino';
import { DEFAULT_CLASS_ACTIONS, type HangPolicy } from '../../shared/hang-policy.js';
import type { EventSink } from '../events/event-sink.js';
import { processFailpoints } from '../failpoints.js';
import type { Owner } from '../image/head.js';
import type { ObjectStore } from '../store/object-store.js';
import { Volume, type VolumeOptions } from '../volume/volume.js';
import type { ResolvedConfig } from './load-config.js';

/** Backoff of the first retry after a failed upload or journal write. */
const RETRY_INITIAL_MS = 50;
const GiB = 2 ** 30;
/**
 * Deltas a head may name before the oldest is folded. Folding a delta rewrites every extent it still
 * shows in — for scattered random writes, thousands — so this is a backstop that keeps the head (about
 * 150 bytes a delta) and the start-up load bounded; the index-memory budget, which compacts the extents
 * with the most runs, is what normally keeps deltas in check.
 */
const MAX_DELTAS = 4096;

/** The hang policy every volume starts with, from the configuration. */
export function configuredHangPolicy(config: ResolvedConfig): HangPolicy {
  return { timeout: config.hangTimeout, classes: { ...DEFAULT_CLASS_ACTIONS, ...config.hangPolicy }, retryMaxMs: config.retryMax };
}

/** The options every opener of a volume (the gateway, the CLI commands) derives from the configuration. */
export function volumeOptions(
  config: ResolvedConfig,
  name: string,
  size: number,
  store: ObjectStore,
  owner: Owner,
  logger: Logger,
  extra: { events?: EventSink; gatewayId?: string; onDeposed?: VolumeOptions['onDeposed']; diskCache?: VolumeOptions['diskCache'] } = {},
): VolumeOptions {
  return {
    name,
    store,
    journalDir: Volume.journalDirFor(config.journalRoot, name),
    owner,
    leaseMs: config.leaseTtl,
    forceTakeover: config.forceTakeover.includes(name),
    cacheBytes: config.cacheSize,
    journalLimitBytes: config.journalLimit,
    segmentBytes: config.segmentSize,
    uploadConcurrency: config.uploadConcurrency,
    uploadDelayMs: config.uploadDelay,
    retryInitialMs: RETRY_INITIAL_MS,
    retryMaxMs: config.retryMax,
    compaction: {
      indexMemoryBytes: config.indexMemory,
      deltaBytes: config.deltaBudget ?? Math.max(GiB, Math.floor(size / 2)),
      deltaCount: MAX_DELTAS,
    },
    gcGraceMs: config.gcGrace,
    logger: logger.child({ volume: name }),
    failpoints: processFailpoints,
    forceReadOnly: config.readOnly,
    hangPolicy: configuredHangPolicy(config),
    ...extra,
  };
}
