import type { Logger } from 'pino';
import type { VolumeManifest } from '../../shared/volume-manifest.js';
import type { ObjectStore } from '../store/object-store.js';
import { Volume, type VolumeOptions } from '../volume/volume.js';
import type { ResolvedConfig } from './load-config.js';

/** Backoff of the first retry after a failed upload or journal write. */
const RETRY_INITIAL_MS = 50;

/** The options every opener of a volume (the gateway, import, export) derives from the configuration. */
export function volumeOptions(config: ResolvedConfig, manifest: VolumeManifest, store: ObjectStore, logger: Logger): VolumeOptions {
  return {
    manifest,
    store,
    journalDir: Volume.journalDirFor(config.journalRoot, manifest.name),
    cacheBytes: config.cacheSize,
    journalLimitBytes: config.journalLimit,
    segmentBytes: config.segmentSize,
    uploadConcurrency: config.uploadConcurrency,
    uploadDelayMs: config.uploadDelay,
    retryInitialMs: RETRY_INITIAL_MS,
    retryMaxMs: config.retryMax,
    logger: logger.child({ volume: manifest.name }),
  };
}
