import type { Workload } from './options.js';
import { run } from './proc.js';
import type { FioTarget } from './systems.js';

/** The fio jobs behind each workload, and what is read back from fio's JSON report. */

type FioWorkload = Exclude<Workload, 'recovery'>;

interface Spec {
  readonly rw: 'randread' | 'randwrite' | 'read' | 'write';
  readonly bs: string;
  readonly iodepth: number;
  readonly extra?: readonly string[];
  /** Reads that must hit the cache stay in a region it holds; everything else spans the volume. */
  readonly warmRegion?: true;
}

const SPECS: Readonly<Record<FioWorkload, Spec>> = {
  'randread-warm': { rw: 'randread', bs: '4k', iodepth: 32, warmRegion: true },
  'randread-cold': { rw: 'randread', bs: '4k', iodepth: 32 },
  seqread: { rw: 'read', bs: '1M', iodepth: 8 },
  randwrite: { rw: 'randwrite', bs: '4k', iodepth: 32 },
  seqwrite: { rw: 'write', bs: '1M', iodepth: 8 },
  // A journaling filesystem's pattern: small writes, and a flush after every few of them.
  'flush-heavy': { rw: 'randwrite', bs: '4k', iodepth: 32, extra: ['--fsync=16'] },
};

export interface FioResult {
  readonly bytes: number;
  readonly seconds: number;
  readonly iops: number;
  readonly mibPerSecond: number;
  readonly latP50Ms: number;
  readonly latP99Ms: number;
}

interface FioDirection {
  readonly io_bytes: number;
  readonly iops: number;
  readonly bw_bytes: number;
  readonly runtime: number;
  readonly clat_ns?: { readonly percentile?: Readonly<Record<string, number>> };
}

interface FioReport {
  readonly jobs: readonly { readonly error: number; readonly read: FioDirection; readonly write: FioDirection }[];
}

function targetArgs(target: FioTarget): string[] {
  return target.engine === 'nbd'
    ? ['--ioengine=nbd', `--uri=${target.uri}`]
    : ['--ioengine=libaio', '--direct=1', `--filename=${target.file}`];
}

/** One fio job (`--name`, the target, JSON output and random offsets added) and what it measured. */
export async function fio(name: string, target: FioTarget, args: readonly string[], cwd: string, timeoutMs: number): Promise<FioResult> {
  const full = [`--name=${name}`, ...targetArgs(target), '--output-format=json', '--randrepeat=0', '--norandommap', ...args];
  const r = await run('fio', full, { cwd, timeoutMs, ...(target.engine === 'nbd' && target.env !== undefined ? { env: target.env } : {}) });
  // The nbd engine prints "fio: connected to NBD server" ahead of the report.
  const start = r.stdout.search(/^\{/m);
  if (r.code !== 0 || start < 0)
    throw new Error(`fio ${full.join(' ')} exited with ${r.code ?? r.signal}: ${r.stderr.trim() || r.stdout.trim()}`);
  const job = (JSON.parse(r.stdout.slice(start)) as FioReport).jobs[0];
  if (job === undefined || job.error !== 0) throw new Error(`fio ${name} failed (error ${job?.error}): ${r.stderr.trim()}`);
  const dir = job.write.io_bytes > job.read.io_bytes ? job.write : job.read;
  const seconds = Math.max(job.read.runtime, job.write.runtime) / 1000;
  const bytes = job.read.io_bytes + job.write.io_bytes;
  const pct = (p: string): number => (dir.clat_ns?.percentile?.[p] ?? 0) / 1e6;
  return {
    bytes,
    seconds,
    iops: job.read.iops + job.write.iops,
    mibPerSecond: seconds > 0 ? bytes / 2 ** 20 / seconds : 0,
    latP50Ms: pct('50.000000'),
    latP99Ms: pct('99.000000'),
  };
}

export interface FioRunOptions {
  readonly cwd: string;
  readonly runtime: number;
  readonly size: number;
  readonly warmRegion: number;
}

export function warmRegion(size: number, cacheSize: number): number {
  return Math.max(2 ** 20, Math.min(size, Math.floor(cacheSize / 2 / 2 ** 20) * 2 ** 20));
}

/**
 * `cold`: one pass over the volume at most (still capped at the runtime), so that a store-backed
 * system's cache, filled by the pass itself, does not turn the rest of the run into cache hits.
 */
export function runWorkload(workload: FioWorkload, target: FioTarget, o: FioRunOptions, cold: boolean): Promise<FioResult> {
  const spec = SPECS[workload];
  const region = spec.warmRegion === true ? o.warmRegion : o.size;
  return fio(
    workload,
    target,
    [
      `--rw=${spec.rw}`,
      `--bs=${spec.bs}`,
      `--iodepth=${spec.iodepth}`,
      `--size=${region}`,
      ...(cold ? [] : ['--time_based']),
      `--runtime=${o.runtime}`,
      ...(spec.extra ?? []),
    ],
    o.cwd,
    // Generous: a store-backed system's first cold reads can take a while to start flowing.
    o.runtime * 1000 + 300_000,
  );
}

/** Reads the warm region once, so that randread-warm finds it in the cache. */
export async function warmUp(target: FioTarget, o: FioRunOptions): Promise<void> {
  await fio('warm-up', target, ['--rw=read', '--bs=1M', '--iodepth=8', `--size=${o.warmRegion}`], o.cwd, 600_000);
}

/** Writes the whole volume once with fio's random data, so that reads read data and not holes. */
export async function prefill(target: FioTarget, o: FioRunOptions): Promise<FioResult> {
  return fio('prefill', target, ['--rw=write', '--bs=1M', '--iodepth=8', `--size=${o.size}`], o.cwd, 1_800_000);
}
