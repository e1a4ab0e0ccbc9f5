import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { pino } from 'pino';
import { DEFAULT_HANG_POLICY } from '../../shared/hang-policy.js';
import { Failpoints } from '../../gateway/failpoints.js';
import type { Owner } from '../../gateway/image/head.js';
import type { ObjectStore } from '../../gateway/store/object-store.js';
import { openVolume } from '../../gateway/volume/open-volume.js';
import type { Volume, VolumeOptions } from '../../gateway/volume/volume.js';

/**
 * A volume opened in this process the way a gateway opens one, with small settings. Each open is a
 * new "process" (a new owner instance on the same journal), so reopening takes the volume at once.
 */
export function testOwner(journalId = 'test-journal'): Owner {
  return { gateway: 'test', journalId, host: hostname(), pid: process.pid, instance: randomUUID(), admin: null };
}

export function openTestVolume(store: ObjectStore, journalDir: string, extra: Partial<VolumeOptions> = {}): Promise<Volume> {
  return openVolume({
    name: 'model',
    store,
    journalDir,
    owner: testOwner(),
    leaseMs: 60_000,
    cacheBytes: 0,
    journalLimitBytes: 64 * 1024 * 1024,
    segmentBytes: 256 * 1024,
    uploadConcurrency: 3,
    uploadDelayMs: 0,
    retryInitialMs: 1,
    retryMaxMs: 5,
    compaction: { indexMemoryBytes: 64 * 1024 * 1024, deltaBytes: 1024 * 1024 * 1024, deltaCount: 256 },
    gcGraceMs: 3_600_000,
    logger: pino({ level: 'silent' }),
    failpoints: new Failpoints(),
    hangPolicy: { ...DEFAULT_HANG_POLICY, timeout: 'off' },
    ...extra,
  });
}
