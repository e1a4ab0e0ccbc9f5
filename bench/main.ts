import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type S3Server, startS3Server } from '../tests/helpers/s3-server.js';
import { defined } from '../shared/checked.js';
import { SqueezeMeter } from './admin.js';
import { measureBacklogDrain } from './backlog-drain.js';
import { prefill, runWorkload, warmRegion, warmUp, type FioRunOptions } from './fio.js';
import { type BenchOptions, LARGE_WORKLOADS, type LargeWorkload, parseOptions, type SystemName, USAGE, type Workload } from './options.js';
import { largeVolumeTargets } from './large-report.js';
import { type LargeVolumeResult, runLargeVolume } from './large-volume.js';
import { plotRecovery } from './plot.js';
import { GatewayExitedError, runOutageWrites, type OutageWritesResult } from './outage-writes.js';
import { ProcessMeter, run } from './proc.js';
import { fillRawFile } from './raw-file.js';
import { runRecovery } from './recovery.js';
import {
  type BenchReport,
  evaluateTargets,
  markdown,
  median,
  type OutageWritesTarget,
  type RunRecord,
  squeezeNote,
  type SystemStatus,
  summarize,
  uploadRates,
  type UploadRecord,
} from './report.js';
import { measureS3, type S3Ceiling } from './s3-ceiling.js';
import { plotSustained, runSustainedWrites, sustainedTargets, type SustainedWritesResult } from './sustained.js';
import { type BenchSystem, describeSystem, startSystem, VOLUME } from './systems.js';
import { ensureAllocator, ensureTools } from './tools.js';

/**
 * `npm run bench`: starts the S3 server and every system, fills them, then runs each workload on
 * each system in turn, round after round, then once the outage-writes workload (too long for every
 * round), and writes the medians as Markdown, JSON and a PNG of the recovery workload. It reports;
 * it asserts nothing about speed.
 */

const REPO = fileURLToPath(new URL('../', import.meta.url));
const MiB = 2 ** 20;
/** Issue 12's setting: the journal fills within seconds, and what is measured is what the uploads sustain. */
const SUSTAINED_JOURNAL_LIMIT = 256 * MiB;
const WRITES: ReadonlySet<Workload> = new Set(['randwrite', 'seqwrite', 'flush-heavy']);
/** Each needs its cache emptied first: the data must come from the store. */
const COLD: ReadonlySet<Workload> = new Set(['randread-cold', 'seqread', 'recovery']);
/** What the rounds' systems keep in the work directory (startHoldfast, the raw file), none of it needed after them. */
const ROUND_DATA = ['holdfast-local', 'holdfast-s3', 'holdfast-tls', 'raw.img'];
/** Tool each system needs (the harness installs it when missing). */
const TOOL: Readonly<Record<SystemName, string | undefined>> = {
  'holdfast-local': undefined,
  'holdfast-s3': undefined,
  'qemu-nbd': 'qemu-nbd',
  'qemu-nbd-wt': 'qemu-nbd',
  nbdkit: 'nbdkit',
  s3backer: 's3backer',
  'holdfast-tls': 'certtool',
};

const T0 = performance.now();
const log = (line: string): void => void process.stderr.write(`[${((performance.now() - T0) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);

async function machine(): Promise<BenchReport['machine']> {
  const fio = await run('fio', ['--version']);
  return {
    cpus: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    fio: fio.stdout.trim(),
  };
}

function stamp(date: Date): string {
  return date
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replace(/:/g, '-');
}

class Bench {
  private readonly systems: BenchSystem[] = [];
  private readonly statuses: SystemStatus[] = [];
  private readonly runs: RunRecord[] = [];
  private readonly uploads: UploadRecord[] = [];
  private readonly s3Runs: (S3Ceiling & { round: number })[] = [];
  private readonly failures: string[] = [];
  private outageWrites: OutageWritesResult | null = null;
  private largeVolume: LargeVolumeResult | null = null;
  private sustainedWrites: SustainedWritesResult | null = null;
  /** Set once outage-writes was tried on holdfast-s3, whatever came of it: its RSS target counts. */
  private outageWritesTarget: OutageWritesTarget | undefined;
  private readonly fioOptions: FioRunOptions;

  constructor(
    private readonly opts: BenchOptions,
    private readonly workDir: string,
    private readonly s3: S3Server,
    /** Closes `s3` (once, whoever asks first). */
    private readonly closeS3: () => Promise<void>,
  ) {
    this.fioOptions = { cwd: workDir, runtime: opts.runtime, size: opts.size, warmRegion: warmRegion(opts.size, opts.cacheSize) };
  }

  async start(toolMissing: ReadonlyMap<string, string>): Promise<void> {
    const rawFile = path.join(this.workDir, 'raw.img');
    if (this.opts.systems.some((s) => s === 'qemu-nbd' || s === 'qemu-nbd-wt' || s === 'nbdkit'))
      await fillRawFile(rawFile, this.opts.size);
    for (const name of this.opts.systems) {
      const tool = TOOL[name];
      const missing = tool === undefined ? undefined : toolMissing.get(tool);
      if (missing !== undefined) {
        this.statuses.push({ name, description: describeSystem(name, this.opts.s3Server), available: false, why: missing });
        log(`bench: ${name} will not run: ${missing}`);
        continue;
      }
      let system: BenchSystem | undefined;
      try {
        system = await startSystem(name, { opts: this.opts, workDir: this.workDir, s3: this.s3, rawFile });
        // The raw file was written whole above; the others are filled through their own path.
        if (system.name === 'holdfast-s3') await this.backlogDrains(system);
        if (system.storeBacked) {
          await prefill(system.target(), this.fioOptions);
          const drain = await system.settle();
          if (drain !== undefined) this.uploads.push({ round: 0, system: name, after: 'prefill', drain });
        }
        this.systems.push(system);
        this.statuses.push({ name, description: describeSystem(name, this.opts.s3Server), available: true });
        log(`bench: ${name} started and filled`);
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        await system?.stop().catch(() => undefined);
        this.statuses.push({ name, description: describeSystem(name, this.opts.s3Server), available: false, why });
        log(`bench: ${name} will not run: ${why}`);
      }
    }
  }

  /** The upload rate of backlogs left by an outage (backlog-drain.ts), before the volume is filled. */
  private async backlogDrains(system: BenchSystem): Promise<void> {
    const adminUrl = defined(system.adminUrl, 'holdfast admin URL')();
    for (const kind of ['whole', 'partial'] as const) {
      const drain = await measureBacklogDrain(kind, {
        target: system.target(),
        adminUrl,
        s3: this.s3,
        cwd: this.workDir,
        volumeSize: this.opts.size,
        pid: system.pid(),
        s3Parallelism: this.opts.s3Parallelism,
      });
      this.uploads.push({ round: 0, system: system.name, after: `backlog-${kind}`, drain });
      const cpu = drain.gatewayCpuSeconds ?? 0;
      log(
        `bench: ${system.name} uploaded a backlog of ${kind === 'whole' ? 'whole extents' : '4 KiB random writes'} at ${drain.mibPerSecond.toFixed(1)} MiB/s, gateway CPU ${cpu.toFixed(2)} s (${((cpu * 1000) / (drain.bytes / 2 ** 20)).toFixed(1)} ms per MiB); the S3 server's own PUT right after: ${drain.serverPutMiBps?.toFixed(1) ?? '—'} MiB/s`,
      );
    }
  }

  async rounds(): Promise<void> {
    // Only once-workloads asked for: no round, and no S3 server measurement for rows that will not be there.
    if (this.opts.workloads.length === 0) return;
    for (let round = 1; round <= this.opts.rounds; round++) {
      const ceiling = await measureS3(this.s3, this.opts.s3Parallelism, this.opts.runtime);
      this.s3Runs.push({ round, ...ceiling });
      log(`bench: round ${round}: S3 server GET ${ceiling.getMiBps.toFixed(1)} MiB/s, PUT ${ceiling.putMiBps.toFixed(1)} MiB/s`);
      for (const workload of this.opts.workloads) {
        for (const system of this.systems) {
          if (!system.workloads.has(workload)) continue;
          try {
            const record = await this.measure(round, system, workload);
            this.runs.push(record);
            const what =
              workload === 'recovery'
                ? `last held read ${record.recovery?.lastMs === null ? 'never done' : `done ${((record.recovery?.lastMs ?? 0) / 1000).toFixed(2)} s after`}`
                : `${Math.round(record.iops)} IOPS, ${record.mibPerSecond.toFixed(1)} MiB/s`;
            log(
              `bench: round ${round}: ${workload} on ${system.name}: ${what}, peak RSS ${Math.round(record.peakRssMiB)} MiB${squeezeNote(record.peakSqueezeMiB)}`,
            );
          } catch (err) {
            const why = `round ${round}: ${workload} on ${system.name} failed: ${err instanceof Error ? err.message : String(err)}`;
            this.failures.push(why);
            log(`bench: ${why}`);
          }
        }
      }
    }
  }

  /** The workloads too long for every round, each once after them. */
  async once(): Promise<void> {
    await this.outageWritesOnce();
    // What follows brings its own S3 server: the rounds' one, idle by then, would only keep disk and
    // page cache from the sustained writes' server and the large data set.
    await this.stop();
    await this.closeS3();
    await this.sustainedWritesOnce();
    await this.largeVolumeOnce();
  }

  private async sustainedWritesOnce(): Promise<void> {
    if (!this.opts.onceWorkloads.includes('sustained-writes')) return;
    try {
      const r = await runSustainedWrites({
        s3Server: this.opts.s3Server,
        size: this.opts.sustainedSize,
        runtime: this.opts.sustainedRuntime,
        journalLimit: SUSTAINED_JOURNAL_LIMIT,
        cacheSize: this.opts.cacheSize,
        workDir: this.workDir,
        onDisk: !this.opts.quick,
        log,
      });
      this.sustainedWrites = r;
      log(
        `bench: sustained-writes: ${Math.round(r.iops)} IOPS, slowest ${r.windowSeconds}-s window ${Math.round(r.minWindowIops)}, ${r.bytesSentPerByteWritten.toFixed(2)} bytes to S3 per byte written, peak RSS ${Math.round(r.peakRssMiB)} MiB`,
      );
    } catch (err) {
      const why = `sustained-writes failed: ${err instanceof Error ? err.message : String(err)}`;
      this.failures.push(why);
      log(`bench: ${why}`);
    }
  }

  /**
   * The large-* workloads on their own data set, after the other systems are stopped: they are idle
   * by then, and their memory would only take page cache from the large data set.
   */
  private async largeVolumeOnce(): Promise<void> {
    const asked = this.opts.onceWorkloads.filter((w): w is LargeWorkload => (LARGE_WORKLOADS as readonly string[]).includes(w));
    if (asked.length === 0) return;
    // The data set lies on this disk three times (raw file, store, disk cache): the rounds' stores and
    // journals (GiB of deltas by then) would leave the disk cache too little room to hold the volume.
    for (const name of ROUND_DATA) await rm(path.join(this.workDir, name), { recursive: true, force: true });
    try {
      this.largeVolume = await runLargeVolume({ opts: this.opts, workDir: this.workDir, log }, asked);
      this.failures.push(...this.largeVolume.failures);
    } catch (err) {
      const why = `the large-volume workloads failed: ${err instanceof Error ? err.message : String(err)}`;
      this.failures.push(why);
      log(`bench: ${why}`);
    }
  }

  private async outageWritesOnce(): Promise<void> {
    if (!this.opts.onceWorkloads.includes('outage-writes')) return;
    const system = this.systems.find((s) => s.name === 'holdfast-s3');
    if (system === undefined) return;
    try {
      const target = system.target();
      const adminUrl = system.adminUrl?.();
      if (target.engine !== 'nbd' || adminUrl === undefined) throw new Error('outage-writes needs an NBD server with an admin API');
      log(`bench: outage-writes on holdfast-s3: the S3 server goes down for ${this.opts.longOutage} s under writes`);
      const r = await runOutageWrites({
        uri: target.uri,
        adminUrl,
        pid: system.pid(),
        s3: this.s3,
        size: this.opts.size,
        before: this.leadIn(),
        outage: this.opts.longOutage,
        after: Math.min(this.opts.runtime, 5),
        settle: () => system.settle(),
      });
      this.outageWrites = r;
      this.outageWritesTarget = { seconds: this.opts.longOutage, peakRssMiB: r.peakRssMiB, gatewayExited: false };
      log(
        `bench: outage-writes on holdfast-s3: peak RSS ${Math.round(r.peakRssMiB)} MiB (${Math.round(r.rssAtOutageEndMiB)} MiB at the end of the outage), ${(r.outageBytes / MiB).toFixed(1)} MiB acknowledged during it, ${r.errors} client errors, drained ${r.drainSeconds.toFixed(1)} s after the return`,
      );
    } catch (err) {
      const exited = err instanceof GatewayExitedError;
      this.outageWritesTarget = { seconds: this.opts.longOutage, peakRssMiB: exited ? err.highestRssMiB : null, gatewayExited: exited };
      const why = `outage-writes on holdfast-s3 failed: ${err instanceof Error ? err.message : String(err)}`;
      this.failures.push(why);
      log(`bench: ${why}`);
    }
  }

  /** Seconds of I/O before an outage starts. */
  private leadIn(): number {
    return Math.min(this.opts.runtime / 2, 2);
  }

  private async measure(round: number, system: BenchSystem, workload: Workload): Promise<RunRecord> {
    const cold = COLD.has(workload) && system.storeBacked;
    if (cold) await system.dropCache();
    if (workload === 'randread-warm') await warmUp(system.target(), this.fioOptions);
    const meter = new ProcessMeter(system.pid());
    const adminAtStart = system.adminUrl?.();
    const squeeze = adminAtStart === undefined ? undefined : new SqueezeMeter(adminAtStart, VOLUME);
    let result: { bytes: number; seconds: number; iops: number; mibPerSecond: number; latP50Ms: number; latP99Ms: number };
    let recovery: RunRecord['recovery'];
    if (workload === 'recovery') {
      const target = system.target();
      const adminUrl = system.adminUrl?.();
      if (target.engine !== 'nbd' || adminUrl === undefined) throw new Error('recovery needs an NBD server with an admin API');
      recovery = await runRecovery({
        port: Number(new URL(target.uri).port),
        adminUrl,
        s3: this.s3,
        size: this.opts.size,
        before: this.leadIn(),
        outage: this.opts.outage,
      });
      const mibPerSecond = recovery.bytes / MiB / recovery.seconds;
      result = {
        bytes: recovery.bytes,
        seconds: recovery.seconds,
        iops: (mibPerSecond * MiB) / 4096,
        mibPerSecond,
        latP50Ms: 0,
        latP99Ms: 0,
      };
    } else {
      result = await runWorkload(workload, system.target(), this.fioOptions, cold);
      if (WRITES.has(workload)) {
        const drain = await system.settle();
        if (drain !== undefined) this.uploads.push({ round, system: system.name, after: workload, drain });
      }
    }
    const usage = meter.stop();
    const peakSqueezeMiB = (await squeeze?.stop()) ?? 0;
    return {
      round,
      system: system.name,
      workload,
      ...result,
      ...usage,
      peakSqueezeMiB,
      cpuSecondsPerGiB: result.bytes > 0 ? usage.cpuSeconds / (result.bytes / 2 ** 30) : 0,
      ...(recovery === undefined ? {} : { recovery }),
    };
  }

  async stop(): Promise<void> {
    for (const system of this.systems.splice(0))
      await system.stop().catch((err: unknown) => {
        log(`bench: stopping ${system.name}: ${String(err)}`);
      });
  }

  async report(startedAt: Date): Promise<{ report: BenchReport; text: string; pngs: Record<'plot' | 'sustainedPlot', Buffer | null> }> {
    const rows = summarize(this.runs);
    const s3Median =
      this.s3Runs.length === 0
        ? null
        : { getMiBps: median(this.s3Runs.map((r) => r.getMiBps)), putMiBps: median(this.s3Runs.map((r) => r.putMiBps)) };
    const uploadMiBps = uploadRates(this.uploads);
    const base = this.opts.name ?? `bench-${stamp(startedAt)}`;
    const recoveries = this.runs.flatMap((r) => (r.recovery === undefined ? [] : [r.recovery]));
    // The round whose last held read is the median one (a never-completed round sorts last).
    const shown = [...recoveries].sort((a, b) => (a.lastMs ?? Infinity) - (b.lastMs ?? Infinity))[(recoveries.length - 1) >> 1];
    const body: Omit<BenchReport, 'files'> = {
      harness: 'holdfast-bench',
      version: 1,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine: await machine(),
      options: this.opts,
      systems: this.statuses,
      s3Server: { runs: this.s3Runs, median: s3Median },
      runs: this.runs,
      uploads: this.uploads,
      uploadMiBps,
      rows,
      targets: [
        ...evaluateTargets(rows, s3Median, uploadMiBps, this.opts.cacheSize, this.outageWritesTarget),
        ...sustainedTargets(this.sustainedWrites),
        ...largeVolumeTargets(this.largeVolume, this.opts.cacheSize),
      ],
      outageWrites: this.outageWrites,
      sustainedWrites: this.sustainedWrites,
      largeVolume: this.largeVolume,
      failures: this.failures,
    };
    const files = {
      json: path.join(this.opts.out, `${base}.json`),
      markdown: path.join(this.opts.out, `${base}.md`),
      plot: shown === undefined ? null : path.join(this.opts.out, `${base}-recovery.png`),
      sustainedPlot: this.sustainedWrites === null ? null : path.join(this.opts.out, `${base}-sustained.png`),
    };
    const pngs = {
      plot: shown === undefined ? null : plotRecovery(shown, this.opts.outage),
      sustainedPlot: this.sustainedWrites === null ? null : plotSustained(this.sustainedWrites),
    };
    return { report: { ...body, files }, text: markdown(body), pngs };
  }
}

async function main(): Promise<number> {
  let opts: BenchOptions | undefined;
  try {
    opts = parseOptions(process.argv.slice(2), path.join(REPO, 'bench', 'results'));
  } catch (err) {
    log(`bench: ${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  if (opts === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (opts.systems.some((s) => s.startsWith('holdfast')) && !existsSync(path.join(REPO, 'dist', 'holdfast.js'))) {
    log('bench: dist/holdfast.js is missing: run `npm run build` (npm run bench does)');
    return 1;
  }
  const startedAt = new Date();
  const toolMissing = ensureTools(log, opts.s3Server);
  ensureAllocator(log);
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-bench-'));
  const s3From = performance.now();
  // On disk: the rounds write tens of GiB that the gateway's GC grace keeps past the run, more than
  // this machine's memory (a memstore OSD once reached 21 GiB and swapped the machine to a halt).
  // --quick writes a few MiB: memstore, which starts in a second.
  const s3 = await startS3Server({ kind: opts.s3Server, dir: path.join(workDir, opts.s3Server), bucket: 'bench', onDisk: !opts.quick });
  log(`bench: S3 server ${s3.kind} on ${s3.endpoint}, started in ${((performance.now() - s3From) / 1000).toFixed(1)} s`);
  let s3Closed: Promise<void> | undefined;
  const closeS3 = (): Promise<void> => (s3Closed ??= s3.close());
  const bench = new Bench(opts, workDir, s3, closeS3);
  let stopping: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (stopping ??= (async () => {
      await bench.stop();
      await closeS3();
      await rm(workDir, { recursive: true, force: true });
    })());
  // An interrupted run must still unmount s3backer and stop the servers it started.
  process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
  try {
    await bench.start(toolMissing);
    await bench.rounds();
    await bench.once();
  } finally {
    await cleanup();
  }
  const { report, text, pngs } = await bench.report(startedAt);
  await mkdir(opts.out, { recursive: true });
  await writeFile(report.files.json, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(report.files.markdown, text);
  const written = [report.files.json, report.files.markdown];
  for (const key of ['plot', 'sustainedPlot'] as const) {
    const file = report.files[key];
    const png = pngs[key];
    if (file === null || png === null) continue;
    await writeFile(file, png);
    written.push(file);
  }
  process.stdout.write(`${text}\nresults: ${written.join('\n         ')}\n`);
  return 0;
}

process.exitCode = await main();
