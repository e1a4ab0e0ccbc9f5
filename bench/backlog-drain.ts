import type { S3Server } from '../tests/helpers/s3-server.js';
import { fio } from './fio.js';
import { cpuSeconds } from './proc.js';
import { drainJournal, type FioTarget, type UploadDrain } from './systems.js';

/**
 * How fast Holdfast uploads a backlog: the S3 server is killed, fio writes while the journal takes
 * everything, the server comes back, and the drain is timed from its return until nothing is owed
 * to the store. Measured this way because the backlog a write workload leaves behind when the store
 * is up is only its last delta or two — the uploader keeps up with the writes — and timing that
 * measures one PUT's latency and a head commit, not a rate.
 *
 * Run on a fresh volume, before its prefill: the deltas stay under the delta budget, so the drain is
 * the upload path alone and not compaction's rewrites sharing the PUTs with it.
 */

/** Whole extents: 1 MiB sequential writes; in part: 4 KiB random writes (one delta holds ~4,000 of them). */
export type BacklogKind = 'whole' | 'partial';

export interface BacklogDrainOptions {
  readonly target: FioTarget;
  readonly adminUrl: string;
  readonly s3: S3Server;
  readonly cwd: string;
  readonly volumeSize: number;
  /** The gateway's process, whose CPU the drain costs. */
  readonly pid: number;
}

/**
 * Backlog sizes: large enough that the drain lasts seconds (one delta is 8–16 MiB, four go at once),
 * small enough that fio writes it well within the 30-s lease the gateway cannot renew while the
 * server is down (4 KiB writes go at ~10k IOPS here: 256 MiB in ~7 s).
 */
const BACKLOG_BYTES: Readonly<Record<BacklogKind, number>> = { whole: 512 * 2 ** 20, partial: 256 * 2 ** 20 };

function fioArgs(kind: BacklogKind, bytes: number, volumeSize: number): string[] {
  return kind === 'whole'
    ? ['--rw=write', '--bs=1M', '--iodepth=8', `--size=${bytes}`]
    : ['--rw=randwrite', '--bs=4k', '--iodepth=32', `--size=${volumeSize}`, `--io_size=${bytes}`];
}

export async function measureBacklogDrain(kind: BacklogKind, o: BacklogDrainOptions): Promise<UploadDrain> {
  const bytes = Math.min(BACKLOG_BYTES[kind], o.volumeSize / 2);
  await o.s3.kill();
  try {
    await fio(`backlog-${kind}`, o.target, fioArgs(kind, bytes, o.volumeSize), o.cwd, 600_000);
  } finally {
    await o.s3.restart();
  }
  const cpuBefore = cpuSeconds(o.pid);
  const drain = await drainJournal(o.adminUrl, `backlog-${kind}`, bytes);
  return { ...drain, gatewayCpuSeconds: cpuSeconds(o.pid) - cpuBefore };
}
