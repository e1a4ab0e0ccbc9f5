import type { S3Server } from '../tests/helpers/s3-server.js';
import { fio } from './fio.js';
import { cpuSeconds } from './proc.js';
import { measurePuts } from './s3-ceiling.js';
import { drainJournal, type FioTarget, type UploadDrain } from './systems.js';

/**
 * How fast Holdfast uploads a backlog: the S3 server stops answering, fio writes while the journal
 * takes everything, the server answers again, and the drain is timed from its return until nothing
 * is owed to the store. Measured this way because the backlog a write workload leaves behind when the
 * store is up is only its last delta or two — the uploader keeps up with the writes — and timing that
 * measures one PUT's latency and a head commit, not a rate.
 *
 * The server is frozen (SIGSTOP: connections accepted, never answered, as across a partition), not
 * killed: RGW restarted on BlueStore PUTs at ~0.75× its warm rate for its first seconds (66-68 MiB/s
 * against 87-93 here, 4 MiB to new keys, 8 in flight), which is all of a drain, so the ratio to the
 * warm ceiling measured RGW's warm-up. A killed server's return is the recovery and outage-writes
 * workloads' business.
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
  /** PUTs in flight for the server's own rate measured after the drain. */
  readonly s3Parallelism: number;
}

/**
 * The server's PUT rate is measured again right after each drain, for as long as the drain took (this
 * long at least): RGW's own rate here moved between 85 and 141 MiB/s from one bench run to the next,
 * more than any change to the uploader, so a drain is compared with the server as it was then.
 */
const MIN_CEILING_SECONDS = 3;

/**
 * Backlog sizes: large enough that the drain lasts seconds (one delta is 8–16 MiB, four go at once)
 * and what does not scale with it — the restarted server's first, slower PUTs (an 8 MiB one took
 * 650 ms here), the last head commit, the 100-ms polls that time it — is a small part of that; small
 * enough that fio writes it well within the 30-s lease the gateway cannot renew while the server is
 * down (4 KiB writes go at ~10k IOPS here: 384 MiB in ~10 s), and that both together stay under the
 * 1 GiB delta budget, so compaction does not start.
 */
const BACKLOG_BYTES: Readonly<Record<BacklogKind, number>> = { whole: 512 * 2 ** 20, partial: 384 * 2 ** 20 };

function fioArgs(kind: BacklogKind, bytes: number, volumeSize: number): string[] {
  return kind === 'whole'
    ? ['--rw=write', '--bs=1M', '--iodepth=8', `--size=${bytes}`]
    : ['--rw=randwrite', '--bs=4k', '--iodepth=32', `--size=${volumeSize}`, `--io_size=${bytes}`];
}

export async function measureBacklogDrain(kind: BacklogKind, o: BacklogDrainOptions): Promise<UploadDrain> {
  const bytes = Math.min(BACKLOG_BYTES[kind], o.volumeSize / 2);
  o.s3.freeze();
  try {
    await fio(`backlog-${kind}`, o.target, fioArgs(kind, bytes, o.volumeSize), o.cwd, 600_000);
  } finally {
    o.s3.thaw();
  }
  const cpuBefore = cpuSeconds(o.pid);
  const drain = await drainJournal(o.adminUrl, `backlog-${kind}`, bytes);
  const gatewayCpuSeconds = cpuSeconds(o.pid) - cpuBefore;
  const serverPutMiBps = await measurePuts(o.s3, o.s3Parallelism, Math.max(MIN_CEILING_SECONDS, drain.activeSeconds));
  return { ...drain, gatewayCpuSeconds, serverPutMiBps };
}
