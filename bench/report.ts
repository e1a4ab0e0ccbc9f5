import { defined } from '../shared/checked.js';
import { elementAt } from '../shared/checked.js';
import type { BenchOptions, SystemName, Workload } from './options.js';
import { SYSTEMS, WORKLOADS } from './options.js';
import type { OutageWritesResult } from './outage-writes.js';
import { largeVolumeSection } from './large-report.js';
import type { LargeVolumeResult } from './large-volume.js';
import type { S3Ceiling } from './s3-ceiling.js';
import type { RecoveryResult } from './recovery.js';
import { sustainedSection, type SustainedWritesResult } from './sustained.js';
import type { UploadDrain } from './systems.js';
import { S3_SERVER_NAMES } from '../tests/helpers/s3-server.js';

/** Medians, the targets of issue 6 as ratios, and the Markdown and JSON forms of one run. */

export interface RunRecord {
  readonly round: number;
  readonly system: SystemName;
  readonly workload: Workload;
  readonly iops: number;
  readonly mibPerSecond: number;
  readonly latP50Ms: number;
  readonly latP99Ms: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly peakRssMiB: number;
  /** The most room the memory limit took from the cache meanwhile (0 for servers without one). */
  readonly peakSqueezeMiB: number;
  readonly cpuSeconds: number;
  readonly cpuSecondsPerGiB: number;
  readonly recovery?: RecoveryResult;
}

export interface UploadRecord {
  readonly round: number;
  readonly system: SystemName;
  /** The write that made the backlog: 'prefill' or a write workload. */
  readonly after: string;
  readonly drain: UploadDrain;
}

export interface SystemStatus {
  readonly name: SystemName;
  readonly description: string;
  readonly available: boolean;
  readonly why?: string;
}

export interface Row {
  readonly system: SystemName;
  readonly workload: Workload;
  readonly runs: number;
  readonly iops: number;
  readonly mibPerSecond: number;
  readonly latP50Ms: number;
  readonly latP99Ms: number;
  /** The highest of the rounds: the limit is on the peak. */
  readonly peakRssMiB: number;
  /** The most room the memory limit took from the cache, over the rounds. */
  readonly peakSqueezeMiB: number;
  readonly cpuSecondsPerGiB: number;
  /** Median of the requests in flight when the server returned; 0 means the reads never waited. */
  readonly recoveryHeld?: number;
  readonly recoveryFirstMs?: number | null;
  readonly recoveryLastMs?: number | null;
  /** The slowest round's last held request; the 1.5 s target is on every round. */
  readonly recoveryLastMaxMs?: number | null;
}

export interface TargetResult {
  readonly target: string;
  readonly measured: number | null;
  readonly needed: string;
  /** null: a system it compares with did not run. */
  readonly met: boolean | null;
}

export interface BenchReport {
  readonly harness: 'holdfast-bench';
  readonly version: 1;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly machine: {
    readonly cpus: number;
    readonly memoryGiB: number;
    readonly kernel: string;
    readonly node: string;
    readonly fio: string;
  };
  readonly options: BenchOptions;
  readonly systems: readonly SystemStatus[];
  readonly s3Server: { readonly runs: readonly (S3Ceiling & { readonly round: number })[]; readonly median: S3Ceiling | null };
  readonly runs: readonly RunRecord[];
  readonly uploads: readonly UploadRecord[];
  /** Per Holdfast system: bytes uploaded over the seconds uploads were running, all drains together. */
  readonly uploadMiBps: Partial<Record<SystemName, UploadRates>>;
  readonly rows: readonly Row[];
  readonly targets: readonly TargetResult[];
  /** The outage-writes workload on holdfast-s3 (run once, after the rounds); null where it did not run or failed. */
  readonly outageWrites: OutageWritesResult | null;
  /** The sustained-writes workload (run once, after the rounds); null where it was not asked for or failed. */
  readonly sustainedWrites: SustainedWritesResult | null;
  /** The large-* workloads (run once, after the rounds); null where they were not asked for or failed. */
  readonly largeVolume: LargeVolumeResult | null;
  /** Runs that failed, each with why; their rows are medians of the rounds that did run. */
  readonly failures: readonly string[];
  readonly files: { readonly json: string; readonly markdown: string; readonly plot: string | null; readonly sustainedPlot: string | null };
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length === 0
    ? 0
    : sorted.length % 2 === 1
      ? elementAt(sorted, mid)
      : (elementAt(sorted, mid - 1) + elementAt(sorted, mid)) / 2;
}

/** null when any round never completed its held requests: a median over "never" is "never". */
function medianOrNull(values: readonly (number | null | undefined)[]): number | null {
  return values.some((v) => v === null || v === undefined) ? null : median(values as number[]);
}

export function summarize(runs: readonly RunRecord[]): Row[] {
  const rows: Row[] = [];
  for (const system of SYSTEMS) {
    for (const workload of WORKLOADS) {
      const mine = runs.filter((r) => r.system === system && r.workload === workload);
      if (mine.length === 0) continue;
      const m = (f: (r: RunRecord) => number): number => median(mine.map(f));
      const recoveries = mine.map((r) => r.recovery);
      rows.push({
        system,
        workload,
        runs: mine.length,
        iops: m((r) => r.iops),
        mibPerSecond: m((r) => r.mibPerSecond),
        latP50Ms: m((r) => r.latP50Ms),
        latP99Ms: m((r) => r.latP99Ms),
        peakRssMiB: Math.max(...mine.map((r) => r.peakRssMiB)),
        peakSqueezeMiB: Math.max(...mine.map((r) => r.peakSqueezeMiB)),
        cpuSecondsPerGiB: m((r) => r.cpuSecondsPerGiB),
        ...(workload === 'recovery'
          ? {
              recoveryHeld: median(recoveries.map((r) => r?.heldAtReturn ?? 0)),
              recoveryFirstMs: medianOrNull(recoveries.map((r) => r?.firstMs)),
              recoveryLastMs: medianOrNull(recoveries.map((r) => r?.lastMs)),
              recoveryLastMaxMs: recoveries.some((r) => r?.lastMs === null || r === undefined)
                ? null
                : Math.max(...recoveries.map((r) => defined(defined(r, 'recovery result').lastMs ?? undefined, 'last recovery'))),
            }
          : {}),
      });
    }
  }
  return rows;
}

/**
 * Upload rates of one system, by kind of backlog (bench/backlog-drain.ts): whole extents (1 MiB
 * sequential writes) and extents changed in part (4 KiB random writes). With volume format 2 both
 * are shipped as deltas, one PUT per 8–16 MiB, so the ceiling of both is the S3 server's PUT rate.
 */
export interface UploadRates {
  readonly wholeExtents?: number;
  readonly partialExtents?: number;
  /** The S3 server's PUT rate measured right after each kind's drain (backlog-drain.ts), where measured. */
  readonly wholeExtentsPut?: number;
  readonly partialExtentsPut?: number;
}

/**
 * The drains after write workloads (`after` a workload's name) keep the rounds apart but are not
 * rates: the uploader keeps up with the writes, so what is left is a delta or two.
 */
const BACKLOGS = { wholeExtents: 'backlog-whole', partialExtents: 'backlog-partial' } as const;

export function uploadRates(uploads: readonly UploadRecord[]): Partial<Record<SystemName, UploadRates>> {
  const rate = (mine: readonly UploadRecord[]): number | undefined => {
    const seconds = mine.reduce((s, u) => s + u.drain.activeSeconds, 0);
    return seconds > 0 ? mine.reduce((s, u) => s + u.drain.bytes, 0) / 2 ** 20 / seconds : undefined;
  };
  const serverPut = (mine: readonly UploadRecord[]): number | undefined => {
    const puts = mine.flatMap((u) => (u.drain.serverPutMiBps === undefined ? [] : [u.drain.serverPutMiBps]));
    return puts.length > 0 ? median(puts) : undefined;
  };
  const rates: Partial<Record<SystemName, UploadRates>> = {};
  for (const system of SYSTEMS) {
    const mine = uploads.filter((u) => u.system === system);
    const whole = mine.filter((u) => u.after === BACKLOGS.wholeExtents);
    const partial = mine.filter((u) => u.after === BACKLOGS.partialExtents);
    const found = {
      wholeExtents: rate(whole),
      partialExtents: rate(partial),
      wholeExtentsPut: serverPut(whole),
      partialExtentsPut: serverPut(partial),
    };
    if (found.wholeExtents !== undefined || found.partialExtents !== undefined)
      rates[system] = Object.fromEntries(Object.entries(found).filter(([, v]) => v !== undefined));
  }
  return rates;
}

const HOLDFAST: readonly SystemName[] = ['holdfast-local', 'holdfast-s3'];
const MiB = 2 ** 20;

/** The outage-writes run the targets count (undefined where it was not asked for). */
export interface OutageWritesTarget {
  readonly seconds: number;
  /** null where the run failed before measuring it. */
  readonly peakRssMiB: number | null;
  /** The gateway died during the run: the target is missed whatever its RSS was seen at. */
  readonly gatewayExited: boolean;
}

export function evaluateTargets(
  rows: readonly Row[],
  s3: S3Ceiling | null,
  uploadMiBps: Partial<Record<SystemName, UploadRates>>,
  cacheSize: number,
  outageWrites?: OutageWritesTarget,
): TargetResult[] {
  const value = (system: SystemName, workload: Workload): number | undefined =>
    rows.find((r) => r.system === system && r.workload === workload)?.mibPerSecond;
  const ratio = (target: string, num: number | undefined, den: number | undefined, min: number): TargetResult => {
    const measured = num === undefined || den === undefined || den === 0 ? null : num / den;
    return { target, measured, needed: `≥ ${min}×`, met: measured === null ? null : measured >= min };
  };
  const out: TargetResult[] = [];
  for (const hf of HOLDFAST) {
    if (!rows.some((r) => r.system === hf)) continue;
    out.push(ratio(`${hf} randread-warm / qemu-nbd`, value(hf, 'randread-warm'), value('qemu-nbd', 'randread-warm'), 0.7));
    out.push(ratio(`${hf} randwrite / qemu-nbd-wt`, value(hf, 'randwrite'), value('qemu-nbd-wt', 'randwrite'), 1.0));
    out.push(ratio(`${hf} flush-heavy / qemu-nbd`, value(hf, 'flush-heavy'), value('qemu-nbd', 'flush-heavy'), 1.0));
  }
  // What TLS costs: the same gateway and store with and without it (issue 13).
  if (rows.some((r) => r.system === 'holdfast-tls')) {
    out.push(
      ratio(
        'holdfast-tls randread-warm / holdfast-local',
        value('holdfast-tls', 'randread-warm'),
        value('holdfast-local', 'randread-warm'),
        0.7,
      ),
    );
    out.push(
      ratio('holdfast-tls randwrite / holdfast-local', value('holdfast-tls', 'randwrite'), value('holdfast-local', 'randwrite'), 0.7),
    );
  }
  if (rows.some((r) => r.system === 'holdfast-s3')) {
    out.push(ratio('holdfast-s3 seqread (cold) / S3 GET', value('holdfast-s3', 'seqread'), s3?.getMiBps, 0.8));
    // Against the server's PUT rate right after each drain where measured, else the rounds' median.
    const up = uploadMiBps['holdfast-s3'];
    out.push(
      ratio('holdfast-s3 upload drain, 1 MiB sequential writes / S3 PUT', up?.wholeExtents, up?.wholeExtentsPut ?? s3?.putMiBps, 0.8),
    );
    out.push(
      ratio('holdfast-s3 upload drain, 4 KiB random writes / S3 PUT', up?.partialExtents, up?.partialExtentsPut ?? s3?.putMiBps, 0.8),
    );
    out.push(ratio('holdfast-s3 randwrite / s3backer', value('holdfast-s3', 'randwrite'), value('s3backer', 'randwrite'), 2));
    out.push(ratio('holdfast-s3 seqwrite / s3backer', value('holdfast-s3', 'seqwrite'), value('s3backer', 'seqwrite'), 2));
    const rec = rows.find((r) => r.system === 'holdfast-s3' && r.workload === 'recovery');
    // Nothing held means the reads never waited for the store: the run measured nothing to compare.
    if (rec !== undefined && rec.recoveryHeld !== 0) {
      const last = rec.recoveryLastMaxMs ?? null;
      const med = rec.recoveryLastMs ?? null;
      out.push({
        target: 'recovery: last held request done (slowest round, s)',
        measured: last === null ? null : last / 1000,
        needed: '≤ 1.5 s',
        met: last !== null && last <= 1500,
      });
      out.push({
        target: 'recovery: last held request done (median, s)',
        measured: med === null ? null : med / 1000,
        needed: '≤ 0.5 s',
        met: med !== null && med <= 500,
      });
    }
  }
  const limit = cacheSize / MiB + 150;
  for (const hf of HOLDFAST) {
    const mine = rows.filter((r) => r.system === hf);
    if (mine.length === 0) continue;
    const peak = Math.max(...mine.map((r) => r.peakRssMiB));
    out.push({ target: `${hf} peak RSS, every workload (MiB)`, measured: peak, needed: `≤ ${limit} MiB`, met: peak <= limit });
  }
  // The same limit holds after a long outage under writes (issue 6: "also after a 5-minute outage").
  if (outageWrites !== undefined) {
    const { seconds, peakRssMiB: peak, gatewayExited } = outageWrites;
    out.push({
      target: `holdfast-s3 peak RSS during/after a ${seconds}-s outage under writes (MiB)${gatewayExited ? ', gateway exited' : ''}`,
      measured: peak,
      needed: `≤ ${limit} MiB`,
      met: gatewayExited ? false : peak === null ? null : peak <= limit,
    });
  }
  return out;
}

/** What the memory limit took from the cache, beside a peak RSS: nothing when it took nothing. */
export function squeezeNote(squeezeMiB: number): string {
  return squeezeMiB > 0 ? ` (cache −${Math.round(squeezeMiB)} MiB)` : '';
}

/** 4 KiB workloads are compared in IOPS, 1 MiB ones in MiB/s. */
const UNIT: Readonly<Record<Workload, 'IOPS' | 'MiB/s' | 's'>> = {
  'randread-warm': 'IOPS',
  'randread-cold': 'IOPS',
  seqread: 'MiB/s',
  recovery: 's',
  randwrite: 'IOPS',
  seqwrite: 'MiB/s',
  'flush-heavy': 'IOPS',
};

/** The server's own PUT rate measured right after a drain, as a note to the drain's rate. */
function putAfter(put: number | undefined): string {
  return put === undefined ? '' : ` (the server's own PUT ${num(put)} MiB/s right after it)`;
}

function num(n: number): string {
  if (n >= 100) return Math.round(n).toLocaleString('en-US');
  if (n >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function secondsOrNever(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? 'never' : (ms / 1000).toFixed(2);
}

function table(header: readonly string[], body: readonly (readonly string[])[], rightFrom: number): string {
  const align = header.map((_, i) => (i >= rightFrom ? '---:' : '---'));
  return [header, align, ...body].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}

/** The targets as a Markdown table: measured, needed, met or **missed** (n/a where a system compared with did not run). */
export function targetsTable(targets: readonly TargetResult[]): string {
  return table(
    ['target', 'measured', 'needed', 'result'],
    targets.map((t) => [
      t.target,
      t.measured === null ? 'n/a' : num(t.measured),
      t.needed,
      t.met === null ? 'n/a' : t.met ? 'met' : '**missed**',
    ]),
    1,
  );
}

export function markdown(report: Omit<BenchReport, 'files'>): string {
  const o = report.options;
  const systems = report.systems.filter((s) => s.available).map((s) => s.name);
  const cell = (system: SystemName, workload: Workload, f: (r: Row) => string): string => {
    const row = report.rows.find((r) => r.system === system && r.workload === workload);
    return row === undefined ? '—' : f(row);
  };
  const workloads = o.workloads.filter((w) => report.rows.some((r) => r.workload === w));
  const main = table(
    ['workload', 'unit', ...systems],
    workloads.map((w) => [
      w,
      w === 'recovery' ? 's to first / last held read' : UNIT[w],
      ...systems.map((s) =>
        cell(s, w, (r) =>
          w !== 'recovery'
            ? num(UNIT[w] === 'IOPS' ? r.iops : r.mibPerSecond)
            : r.recoveryHeld === 0
              ? 'none held'
              : `${secondsOrNever(r.recoveryFirstMs)} / ${secondsOrNever(r.recoveryLastMs)} (${r.recoveryHeld} held)`,
        ),
      ),
    ]),
    2,
  );
  const resources = table(
    ['workload', ...systems],
    workloads.map((w) => [
      w,
      ...systems.map((s) =>
        cell(s, w, (r) => `${Math.round(r.peakRssMiB)} MiB${squeezeNote(r.peakSqueezeMiB)} · ${num(r.cpuSecondsPerGiB)} s/GiB`),
      ),
    ]),
    1,
  );
  const targets = targetsTable(report.targets);
  const s3 = report.s3Server.median;
  const uploads = Object.entries(report.uploadMiBps).map(
    ([s, v]) =>
      `${s} ${v.wholeExtents === undefined ? '—' : num(v.wholeExtents)} MiB/s for 1 MiB sequential writes${putAfter(v.wholeExtentsPut)}, ${v.partialExtents === undefined ? '—' : num(v.partialExtents)} MiB/s for 4 KiB random writes${putAfter(v.partialExtentsPut)}`,
  );
  const unavailable = report.systems.filter((s) => !s.available).map((s) => `- ${s.name} did not run: ${s.why ?? 'unknown'}`);
  const m = report.machine;
  const ow = report.outageWrites;
  const outage =
    ow === null
      ? []
      : [
          `Outage under writes (holdfast-s3, once after the rounds): the S3 server down ${num(ow.upAt - ow.downAt)} s (--long-outage ${o.longOutage}) while fio wrote 4 KiB at random, iodepth 32, from ${num(ow.downAt)} s before to ${num(ow.fioEndAt - ow.upAt)} s after it; the volume's hang timeout raised to ${ow.hangTimeoutSeconds} s for it, so that writes are held for the whole outage:`,
          '',
          `- peak RSS ${Math.round(ow.peakRssMiB)} MiB over the outage and the drain; ${Math.round(ow.outagePeakRssMiB)} MiB up to the server's return, ${Math.round(ow.rssAtOutageEndMiB)} MiB at the end of the outage`,
          `- ${num(ow.outageBytes / MiB)} MiB acknowledged during the outage (${num(ow.outageMiBps)} MiB/s); ${ow.errors === 0 ? '0 client errors' : `**${ow.errors.toLocaleString('en-US')} client errors**`}; at most ${ow.maxHeld} requests held`,
          `- backlog drained ${num(ow.drainSeconds)} s after the server's return${ow.uploadedSinceReturnBytes === null ? '' : ` (${num(ow.uploadedSinceReturnBytes / MiB)} MiB uploaded meanwhile, ${num(ow.uploadedSinceReturnBytes / MiB / ow.drainSeconds)} MiB/s; fio wrote for the first ${num(ow.fioEndAt - ow.upAt)} s of it)`}`,
          '',
        ];
  return [
    `### Holdfast benchmark, ${report.startedAt}`,
    '',
    `${m.cpus} CPUs, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}, ${m.fio}. ${o.rounds} round(s) of ${o.runtime} s runs on ${num(o.size / MiB)} MiB${o.quick ? ' (--quick)' : ''}, cache ${num(o.cacheSize / MiB)} MiB, outage ${o.outage} s; medians. Clients: fio --ioengine=nbd (s3backer: libaio on its FUSE file), 4 KiB at iodepth 32, 1 MiB at iodepth 8.`,
    '',
    // With only once-workloads asked for, the round tables would be empty.
    ...(workloads.length === 0 ? [] : [main, '']),
    `S3 server's own throughput (${S3_SERVER_NAMES[o.s3Server]}, 4 MiB objects, ${o.s3Parallelism} in flight, PUTs to new keys): ${s3 === null ? 'not measured' : `GET ${num(s3.getMiBps)} MiB/s, PUT ${num(s3.putMiBps)} MiB/s`}. Holdfast upload drain, a backlog left by an outage of the S3 server timed from its return: ${uploads.length === 0 ? 'not measured' : uploads.join('; ')}.`,
    ...(unavailable.length > 0 ? ['', ...unavailable] : []),
    ...(report.failures.length > 0 ? ['', ...report.failures.map((f) => `- ${f}`)] : []),
    '',
    ...(workloads.length === 0
      ? []
      : [
          'Peak RSS of the server process (highest round) · CPU seconds per GiB moved (workload plus the upload of what it wrote):',
          '',
          resources,
          '',
        ]),
    ...outage,
    ...sustainedSection(report.sustainedWrites),
    ...largeVolumeSection(report.largeVolume),
    'Targets (issues 6, 12, 13 and 15):',
    '',
    targets,
    '',
  ].join('\n');
}
