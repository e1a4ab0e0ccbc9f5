import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { startS3Server, type S3Server } from '../tests/helpers/s3-server.js';
import { SqueezeMeter } from './admin.js';
import { fio } from './fio.js';
import type { BenchOptions, LargeWorkload } from './options.js';
import { ProcessMeter, run } from './proc.js';
import { fillRawFile } from './raw-file.js';
import { median, squeezeNote } from './report.js';
import {
  type BenchSystem,
  cpuProfileFlags,
  drainJournal,
  type HoldfastProcess,
  holdfastCommand,
  launchHoldfast,
  startSystem,
  type UploadDrain,
} from './systems.js';

/**
 * The large-volume workloads (issue 15), once per run after the rounds, on one data set of
 * `--large-size` (16 GiB by default): a raw file of random data served by qemu-nbd (default cache)
 * and nbdkit's file plugin, and the same file imported into a Holdfast volume served with
 * `--cache-size` of RAM cache and a disk cache that holds the volume (filled by one sequential read).
 * Holdfast's store is RGW with its objects on disk (BlueStore in a file): this machine has no 16 GiB of
 * memory to spare for memstore. The disk cache answers the reads here; the store is what a miss would cost.
 *
 *   large-randread  4 KiB random reads over the whole volume, iodepth 32
 *   large-zipf      4 KiB, 70 % reads / 30 % writes, offsets zipf:1.1 — a VM's disk: a hot set and a long tail
 *   large-restart   the gateway stopped and started again, then random reads at once: the first 10 s
 *                   against the warm large-randread figure (the disk cache survives, the RAM cache does not)
 */

export const LARGE_SYSTEMS = ['holdfast', 'qemu-nbd', 'nbdkit'] as const;
export type LargeSystem = (typeof LARGE_SYSTEMS)[number];
type RoundWorkload = Exclude<LargeWorkload, 'large-restart'>;

const VOLUME = 'large';
const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** The restart figure is the first this many seconds of reads after the gateway serves again. */
const RESTART_WINDOW_S = 10;
/** Sequential passes that may be needed for the disk cache to hold the volume (a pass skips what it cannot write fast enough). */
const MAX_WARM_PASSES = 3;
const HELD_SHARE = 0.99;

const FIO_ARGS: Readonly<Record<RoundWorkload, readonly string[]>> = {
  'large-randread': ['--rw=randread', '--bs=4k', '--iodepth=32'],
  'large-zipf': ['--rw=randrw', '--rwmixread=70', '--random_distribution=zipf:1.1', '--bs=4k', '--iodepth=32'],
};

export interface LargeRun {
  readonly round: number;
  readonly system: LargeSystem;
  readonly workload: RoundWorkload;
  readonly iops: number;
  readonly latP99Ms: number;
  readonly peakRssMiB: number;
  /** The most room the memory limit took from the cache meanwhile (0 for the others). */
  readonly peakSqueezeMiB: number;
  readonly cpuSecondsPerGiB: number;
}

/** Medians over the rounds of one system and workload; the peak RSS is the highest round's. */
export interface LargeRow {
  readonly system: LargeSystem;
  readonly workload: RoundWorkload;
  readonly runs: number;
  readonly iops: number;
  readonly latP99Ms: number;
  readonly peakRssMiB: number;
  readonly peakSqueezeMiB: number;
  readonly cpuSecondsPerGiB: number;
}

export interface LargeRestart {
  /** From the signal that stopped the old gateway to the new one serving. */
  readonly restartSeconds: number;
  readonly runtimeSeconds: number;
  /** IOPS of each second of the run, from fio's log. */
  readonly perSecondIops: readonly number[];
  /** Mean over the first RESTART_WINDOW_S seconds (or the whole run, when shorter). */
  readonly firstWindowIops: number;
  readonly windowSeconds: number;
  readonly peakRssMiB: number;
  readonly peakSqueezeMiB: number;
  /** The volume's object reads the disk cache answered during the run, and those it did not. */
  readonly diskCacheHits: number;
  readonly diskCacheMisses: number;
}

export interface LargeVolumeResult {
  readonly size: number;
  readonly cacheSize: number;
  readonly diskCacheSize: number;
  readonly runtime: number;
  readonly rounds: number;
  readonly importSeconds: number;
  readonly warmPasses: number;
  readonly warmSeconds: number;
  /** What the disk cache held after the sequential read(s). */
  readonly diskCacheBytes: number;
  readonly runs: readonly LargeRun[];
  readonly rows: readonly LargeRow[];
  /** Holdfast's uploads after each zipf run (its writes go to the store as deltas). */
  readonly drains: readonly UploadDrain[];
  readonly restart: LargeRestart | null;
  readonly failures: readonly string[];
}

export interface LargeVolumeContext {
  readonly opts: BenchOptions;
  readonly workDir: string;
  readonly log: (line: string) => void;
}

interface DiskCacheView {
  readonly bytes: number;
  readonly volumeHits: number;
  readonly volumeMisses: number;
}

async function diskCacheView(adminUrl: string): Promise<DiskCacheView> {
  const res = await fetch(`${adminUrl}/v1/volumes`, { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`GET ${adminUrl}/v1/volumes answered ${res.status}`);
  const body = (await res.json()) as {
    volumes?: { name?: unknown; diskCache?: { hits?: unknown; misses?: unknown } | null }[];
    diskCache?: { bytes?: unknown } | null;
  };
  const volume = body.volumes?.find((v) => v.name === VOLUME);
  const n = (v: unknown, what: string): number => {
    if (typeof v !== 'number') throw new Error(`admin API: no ${what} in /v1/volumes (is the disk cache on?)`);
    return v;
  };
  return {
    bytes: n(body.diskCache?.bytes, 'diskCache.bytes'),
    volumeHits: n(volume?.diskCache?.hits, 'disk cache hits'),
    volumeMisses: n(volume?.diskCache?.misses, 'disk cache misses'),
  };
}

/** Mean IOPS of each second from fio's `--write_iops_log` file (one line per second per direction). */
export function perSecondIops(log: string): number[] {
  const bySecond = new Map<number, number>();
  for (const line of log.split('\n')) {
    const [ms, value] = line.split(',').map((f) => Number(f.trim()));
    if (ms === undefined || value === undefined || !Number.isFinite(ms) || !Number.isFinite(value)) continue;
    const second = Math.max(0, Math.round(ms / 1000) - 1);
    bySecond.set(second, (bySecond.get(second) ?? 0) + value);
  }
  return [...bySecond.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v);
}

class LargeVolume {
  private readonly dir: string;
  private readonly raw: string;
  private readonly runs: LargeRun[] = [];
  private readonly drains: UploadDrain[] = [];
  private readonly failures: string[] = [];
  private readonly others: BenchSystem[] = [];
  private gateway: HoldfastProcess | undefined;

  constructor(
    private readonly ctx: LargeVolumeContext,
    private readonly s3: S3Server,
  ) {
    this.dir = path.join(ctx.workDir, 'large');
    this.raw = path.join(this.dir, 'raw.img');
  }

  private get o(): BenchOptions {
    return this.ctx.opts;
  }

  private storeArgs(): string[] {
    return [
      '--store',
      `s3://${this.s3.bucket}/holdfast`,
      '--s3-endpoint',
      this.s3.endpoint,
      '--journal-dir',
      path.join(this.dir, 'journal'),
    ];
  }

  private serve(): Promise<HoldfastProcess> {
    return launchHoldfast(
      'holdfast (large volume)',
      [
        ...this.storeArgs(),
        '--volumes',
        VOLUME,
        '--create-volume',
        '',
        '--cache-size',
        String(this.o.cacheSize),
        '--cache-dir',
        path.join(this.dir, 'cache'),
        '--disk-cache-size',
        String(this.o.diskCacheSize),
        ...(this.o.uploadDelay === undefined ? [] : ['--upload-delay', this.o.uploadDelay]),
      ],
      this.s3,
      cpuProfileFlags(this.o),
    );
  }

  async prepare(): Promise<{ importSeconds: number; warmPasses: number; warmSeconds: number; diskCacheBytes: number }> {
    const size = this.o.largeSize;
    await mkdir(this.dir, { recursive: true });
    await fillRawFile(this.raw, size);
    this.ctx.log(`bench: large volume: ${size / GiB} GiB raw file written`);
    const started = performance.now();
    const command = holdfastCommand(['import', this.raw, VOLUME, '--size', String(size), ...this.storeArgs()], this.s3);
    const imported = await run(process.execPath, command.args, { env: command.env, timeoutMs: 60_000 + (size / MiB) * 1_000 });
    if (imported.code !== 0)
      throw new Error(
        `holdfast import exited with ${imported.code ?? imported.signal}: ${imported.stderr.trim().split('\n').slice(-3).join(' / ')}`,
      );
    const importSeconds = (performance.now() - started) / 1000;
    this.ctx.log(`bench: large volume: imported in ${importSeconds.toFixed(1)} s`);
    this.gateway = await this.serve();
    const target = this.target('holdfast');
    let warmPasses = 0;
    let warmSeconds = 0;
    let held = 0;
    // A pass leaves out what the disk cache could not write as fast as the store delivered it; another pass fills the gaps.
    while (warmPasses < MAX_WARM_PASSES && held < HELD_SHARE * size) {
      const r = await fio(
        'large-warm',
        target,
        ['--rw=read', '--bs=1M', '--iodepth=8', `--size=${size}`],
        this.ctx.workDir,
        60_000 + (size / MiB) * 1_000,
      );
      warmPasses++;
      warmSeconds += r.seconds;
      held = (await diskCacheView(this.gateway.adminUrl)).bytes;
      this.ctx.log(
        `bench: large volume: sequential pass ${warmPasses}, ${r.mibPerSecond.toFixed(0)} MiB/s; the disk cache holds ${(held / GiB).toFixed(2)} GiB`,
      );
    }
    for (const name of ['qemu-nbd', 'nbdkit'] as const) {
      this.others.push(await startSystem(name, { opts: this.o, workDir: this.dir, s3: this.s3, rawFile: this.raw }));
    }
    return { importSeconds, warmPasses, warmSeconds, diskCacheBytes: held };
  }

  private target(system: LargeSystem): { engine: 'nbd'; uri: string } {
    if (system === 'holdfast') {
      if (this.gateway === undefined) throw new Error('the large-volume gateway is not running');
      return { engine: 'nbd', uri: `nbd://127.0.0.1:${this.gateway.port}/${VOLUME}` };
    }
    const other = this.others.find((s) => s.name === system);
    const t = other?.target();
    if (t?.engine !== 'nbd') throw new Error(`${system} is not running`);
    return t;
  }

  private pid(system: LargeSystem): number {
    if (system === 'holdfast') return this.gateway?.daemon.pid ?? -1;
    return this.others.find((s) => s.name === system)?.pid() ?? -1;
  }

  private async measure(round: number, system: LargeSystem, workload: RoundWorkload): Promise<void> {
    const meter = new ProcessMeter(this.pid(system));
    const squeeze = system === 'holdfast' && this.gateway !== undefined ? new SqueezeMeter(this.gateway.adminUrl, VOLUME) : undefined;
    const args = [...FIO_ARGS[workload], `--size=${this.o.largeSize}`, '--time_based', `--runtime=${this.o.runtime}`];
    const r = await fio(workload, this.target(system), args, this.ctx.workDir, this.o.runtime * 1000 + 300_000).finally(() => meter.stop());
    const usage = meter.stop();
    const peakSqueezeMiB = (await squeeze?.stop()) ?? 0;
    this.runs.push({
      round,
      system,
      workload,
      iops: r.iops,
      latP99Ms: r.latP99Ms,
      peakRssMiB: usage.peakRssMiB,
      peakSqueezeMiB,
      cpuSecondsPerGiB: r.bytes > 0 ? usage.cpuSeconds / (r.bytes / GiB) : 0,
    });
    this.ctx.log(
      `bench: round ${round}: ${workload} on ${system}: ${Math.round(r.iops)} IOPS, peak RSS ${Math.round(usage.peakRssMiB)} MiB${squeezeNote(peakSqueezeMiB)}`,
    );
    if (system === 'holdfast' && workload === 'large-zipf' && this.gateway !== undefined) {
      this.drains.push(await drainJournal(this.gateway.adminUrl, 'holdfast (large volume)', this.o.largeSize, VOLUME));
    }
  }

  async rounds(workloads: readonly RoundWorkload[]): Promise<void> {
    for (let round = 1; round <= this.o.rounds; round++) {
      for (const workload of workloads) {
        for (const system of LARGE_SYSTEMS) {
          try {
            await this.measure(round, system, workload);
          } catch (err) {
            const why = `round ${round}: ${workload} on ${system} failed: ${err instanceof Error ? err.message : String(err)}`;
            this.failures.push(why);
            this.ctx.log(`bench: ${why}`);
          }
        }
      }
    }
  }

  /** Stops the gateway (a clean stop: its journal shipped, its disk cache index written), starts it again, and reads at once. */
  async restart(): Promise<LargeRestart | null> {
    const gateway = this.gateway;
    if (gateway === undefined) return null;
    try {
      const stoppedAt = performance.now();
      this.gateway = undefined;
      await gateway.daemon.stop('SIGTERM', 60_000);
      this.gateway = await this.serve();
      const restartSeconds = (performance.now() - stoppedAt) / 1000;
      const before = await diskCacheView(this.gateway.adminUrl);
      const runtime = this.o.quick ? Math.max(2, this.o.runtime) : Math.max(this.o.runtime, RESTART_WINDOW_S);
      const meter = new ProcessMeter(this.gateway.daemon.pid);
      const squeeze = new SqueezeMeter(this.gateway.adminUrl, VOLUME);
      const args = [
        ...FIO_ARGS['large-randread'],
        `--size=${this.o.largeSize}`,
        '--time_based',
        `--runtime=${runtime}`,
        '--write_iops_log=restart',
        '--log_avg_msec=1000',
      ];
      const r = await fio('large-restart', this.target('holdfast'), args, this.ctx.workDir, runtime * 1000 + 300_000).finally(() =>
        meter.stop(),
      );
      const usage = meter.stop();
      const peakSqueezeMiB = await squeeze.stop();
      const after = await diskCacheView(this.gateway.adminUrl);
      const perSecond = perSecondIops(await readFile(path.join(this.ctx.workDir, 'restart_iops.1.log'), 'utf8'));
      const window = perSecond.slice(0, RESTART_WINDOW_S);
      const firstWindowIops = window.length === 0 ? r.iops : window.reduce((a, b) => a + b, 0) / window.length;
      this.ctx.log(
        `bench: large-restart: serving again ${restartSeconds.toFixed(1)} s after the stop; first ${window.length} s ${Math.round(firstWindowIops)} IOPS, ${Math.round(r.iops)} over ${runtime} s`,
      );
      return {
        restartSeconds,
        runtimeSeconds: runtime,
        perSecondIops: perSecond,
        firstWindowIops,
        windowSeconds: window.length,
        peakRssMiB: usage.peakRssMiB,
        peakSqueezeMiB,
        diskCacheHits: after.volumeHits - before.volumeHits,
        diskCacheMisses: after.volumeMisses - before.volumeMisses,
      };
    } catch (err) {
      const why = `large-restart failed: ${err instanceof Error ? err.message : String(err)}`;
      this.failures.push(why);
      this.ctx.log(`bench: ${why}`);
      return null;
    }
  }

  async stop(): Promise<void> {
    await this.gateway?.daemon.stop('SIGTERM', 60_000);
    for (const s of this.others.splice(0)) await s.stop().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }

  result(prepared: Awaited<ReturnType<LargeVolume['prepare']>>, restart: LargeRestart | null): LargeVolumeResult {
    return {
      size: this.o.largeSize,
      cacheSize: this.o.cacheSize,
      diskCacheSize: this.o.diskCacheSize,
      runtime: this.o.runtime,
      rounds: this.o.rounds,
      ...prepared,
      runs: this.runs,
      rows: largeRows(this.runs),
      drains: this.drains,
      restart,
      failures: this.failures,
    };
  }
}

function largeRows(runs: readonly LargeRun[]): LargeRow[] {
  const rows: LargeRow[] = [];
  for (const workload of Object.keys(FIO_ARGS) as RoundWorkload[]) {
    for (const system of LARGE_SYSTEMS) {
      const mine = runs.filter((r) => r.system === system && r.workload === workload);
      if (mine.length === 0) continue;
      const m = (f: (r: LargeRun) => number): number => median(mine.map(f));
      rows.push({
        system,
        workload,
        runs: mine.length,
        iops: m((r) => r.iops),
        latP99Ms: m((r) => r.latP99Ms),
        peakRssMiB: Math.max(...mine.map((r) => r.peakRssMiB)),
        peakSqueezeMiB: Math.max(...mine.map((r) => r.peakSqueezeMiB)),
        cpuSecondsPerGiB: m((r) => r.cpuSecondsPerGiB),
      });
    }
  }
  return rows;
}

/** Runs the large-volume workloads asked for; everything it started is stopped and its files removed. */
export async function runLargeVolume(ctx: LargeVolumeContext, workloads: readonly LargeWorkload[]): Promise<LargeVolumeResult> {
  const s3 = await startS3Server({ kind: 'rgw', dir: path.join(ctx.workDir, 'large-s3'), bucket: 'large', onDisk: !ctx.opts.quick });
  const large = new LargeVolume(ctx, s3);
  try {
    const prepared = await large.prepare();
    await large.rounds(workloads.filter((w): w is RoundWorkload => w !== 'large-restart'));
    const restart = workloads.includes('large-restart') ? await large.restart() : null;
    return large.result(prepared, restart);
  } finally {
    await large.stop();
    await s3.close();
  }
}
