import { DEFAULT_HANG_POLICY } from '../../shared/hang-policy.js';
import { LogEventSink } from '../events/event-sink.js';
import { HangMonitor, type HangControl } from '../hang/index.js';
import { Compactor } from './compactor.js';
import { ExtentBuffers } from './extent-buffers.js';
import { ExtentCache } from './extent-cache.js';
import { HeadCommits } from './head-commits.js';
import { PendingChanges } from './pending-changes.js';
import { ReadPath } from './read-path.js';
import { Uploader } from './uploader.js';
import type { VolumeOptions, VolumeParts } from './options.js';

/**
 * Extent buffers kept free for the next load at least; more while the cache's bound has room for them
 * (a compaction batch returns 16 at once, which the loads after it take), beyond that the collector's.
 */
const FREE_EXTENT_BUFFERS = 2;

/** The parts of a served volume around its journal, image and head writer. */
export interface VolumeComponents {
  readonly pending: PendingChanges;
  readonly extentCache: ExtentCache;
  readonly hang: HangMonitor;
  /** The hang engine's operator controls alone: what the volume hands the admin API. */
  readonly hangControl: HangControl;
  readonly reads: ReadPath;
  readonly commits: HeadCommits;
  readonly uploader: Uploader;
  readonly compactor: Compactor;
}

/**
 * Builds them in one place. The parts do not call each other about storage health: the uploader,
 * head commits, compactor and journal report their store and disk outcomes to the volume's
 * VolumeHealth, which the hang engine reads; the engine's "the store answers again" goes back
 * through it to the uploader and the lease renewal. The one direct cue left is work, not health:
 * each upload commit may start compaction.
 */
export function wireVolume(
  opts: VolumeOptions,
  parts: VolumeParts,
  volume: { ackedSeq(): number; leaseWaiting(): { requests: number; bytes: number } },
): VolumeComponents {
  const { writer, image, journal, health } = parts;
  const shape = image.shape;
  const pending = new PendingChanges(shape.extentSize);
  // Room for a base extent read whole: its data, and its tables (a CRC per 4 KiB block, its runs, a trailer).
  const bufferSize = shape.extentSize + shape.extentSize / 1024 + 4096;
  const buffers: ExtentBuffers = new ExtentBuffers(bufferSize, (): number =>
    Math.max(FREE_EXTENT_BUFFERS, Math.floor(extentCache.unusedBytes / bufferSize)),
  );
  const extentCache: ExtentCache = new ExtentCache(opts.cacheBytes, buffers);
  const reserve = (bytes: number) => extentCache.reserve(bytes);
  const hang = new HangMonitor({
    volume: shape.name,
    gateway: opts.gatewayId ?? 'holdfast',
    policy: opts.hangPolicy ?? { ...DEFAULT_HANG_POLICY, retryMaxMs: opts.retryMaxMs },
    probe: (signal) => opts.store.probe({ signal }),
    journal: {
      held: () => journal.waiting(),
      failWaiters: (err) => {
        journal.failWaiters(err);
      },
      usage: () => ({ bytes: journal.usedBytes, limit: journal.limitBytes }),
    },
    events: opts.events ?? new LogEventSink(opts.logger),
    logger: opts.logger,
    retryInitialMs: opts.retryInitialMs,
    onStoreRecovered: () => {
      health.storeRecovered();
    },
  });
  health.connect(hang);
  // Writes durable in the journal that wait for the lease (the store unreachable longer than it).
  hang.addHeldSource({
    held: () => volume.leaseWaiting(),
    fail: (err) => {
      writer.failLeaseWaiters(err);
    },
    waitsOn: 'store',
  });
  const reads = new ReadPath({
    image,
    journal,
    pending,
    cache: extentCache,
    buffers,
    logger: opts.logger,
    hold: (op, bytes, signal) => hang.run(op, bytes, signal),
    storeHealthy: () => hang.state === 'normal',
  });
  const commits = new HeadCommits({
    name: shape.name,
    store: opts.store,
    writer,
    image,
    failpoints: opts.failpoints,
    gcGraceMs: opts.gcGraceMs,
    ackedSeq: () => volume.ackedSeq(),
    logger: opts.logger,
    health,
  });
  const compactor = new Compactor({
    name: shape.name,
    epoch: writer.head.epoch,
    store: opts.store,
    image,
    commits,
    budget: opts.compaction,
    reserve,
    buffers,
    failpoints: opts.failpoints,
    logger: opts.logger,
    health,
    retryInitialMs: opts.retryInitialMs,
    retryMaxMs: opts.retryMaxMs,
    ...(opts.compactionClock === undefined ? {} : { clock: opts.compactionClock }),
    onProgress: () => {
      uploader.notify();
    },
  });
  const uploader = new Uploader({
    name: shape.name,
    epoch: writer.head.epoch,
    store: opts.store,
    journal,
    pending,
    image,
    commits,
    reserve,
    concurrency: opts.uploadConcurrency,
    delayMs: opts.uploadDelayMs,
    retryInitialMs: opts.retryInitialMs,
    retryMaxMs: opts.retryMaxMs,
    failpoints: opts.failpoints,
    logger: opts.logger,
    health,
    onCommitted: () => {
      compactor.maybeRun();
    },
    admit: () => compactor.admitsUploads(),
  });
  health.onStoreRecovered(() => {
    reads.storeRecovered();
    compactor.retryNow();
    uploader.retryNow();
    commits.renewSoon();
  });
  return { pending, extentCache, hang, hangControl: controlsOf(hang), reads, commits, uploader, compactor };
}

/** A surface with only `hang`'s operator controls, so that whoever holds it can do nothing else to the engine. */
function controlsOf(hang: HangMonitor): HangControl {
  return {
    get policy() {
      return hang.policy;
    },
    setPolicy: (policy, by) => {
      hang.setPolicy(policy, by);
    },
    pause: (by) => hang.pause(by),
    resume: (by) => {
      hang.resume(by);
    },
    release: (by) => hang.release(by),
  };
}
