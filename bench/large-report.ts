import type { LargeRow, LargeSystem, LargeVolumeResult } from './large-volume.js';
import { squeezeNote, type TargetResult } from './report.js';

/** The large-volume workloads in the report: their table, and the targets of issue 15. */

const MiB = 2 ** 20;
const GiB = 2 ** 30;

function iopsOf(large: LargeVolumeResult, system: LargeSystem, workload: LargeRow['workload']): number | undefined {
  return large.rows.find((r) => r.system === system && r.workload === workload)?.iops;
}

function ratio(target: string, num: number | undefined, den: number | undefined, min: number): TargetResult {
  const measured = num === undefined || den === undefined || den === 0 ? null : num / den;
  return { target, measured, needed: `≥ ${min}×`, met: measured === null ? null : measured >= min };
}

export function largeVolumeTargets(large: LargeVolumeResult | null, cacheSize: number): TargetResult[] {
  if (large === null) return [];
  const size = `${+(large.size / GiB).toFixed(2)} GiB`;
  const out = [
    ratio(
      `holdfast large-randread (${size}, disk cache) / qemu-nbd`,
      iopsOf(large, 'holdfast', 'large-randread'),
      iopsOf(large, 'qemu-nbd', 'large-randread'),
      0.7,
    ),
    ratio(
      `holdfast large-zipf (70/30, zipf:1.1) / qemu-nbd`,
      iopsOf(large, 'holdfast', 'large-zipf'),
      iopsOf(large, 'qemu-nbd', 'large-zipf'),
      0.5,
    ),
  ];
  const restart = large.restart;
  if (restart !== null)
    out.push(
      ratio(
        `holdfast large-restart, first ${restart.windowSeconds} s / warm large-randread`,
        restart.firstWindowIops,
        iopsOf(large, 'holdfast', 'large-randread'),
        0.5,
      ),
    );
  const peaks = [
    ...large.rows.filter((r) => r.system === 'holdfast').map((r) => r.peakRssMiB),
    ...(restart === null ? [] : [restart.peakRssMiB]),
  ];
  if (peaks.length > 0) {
    const limit = cacheSize / MiB + 150;
    const peak = Math.max(...peaks);
    out.push({ target: 'holdfast peak RSS, large-volume workloads (MiB)', measured: peak, needed: `≤ ${limit} MiB`, met: peak <= limit });
  }
  return out;
}

function num(n: number): string {
  if (n >= 100) return Math.round(n).toLocaleString('en-US');
  if (n >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

export function largeVolumeSection(large: LargeVolumeResult | null): string[] {
  if (large === null) return [];
  const systems = ['holdfast', 'qemu-nbd', 'nbdkit'] as const;
  const cell = (system: LargeSystem, workload: LargeRow['workload'], f: (r: LargeRow) => string): string => {
    const row = large.rows.find((r) => r.system === system && r.workload === workload);
    return row === undefined ? '—' : f(row);
  };
  const workloads = (['large-randread', 'large-zipf'] as const).filter((w) => large.rows.some((r) => r.workload === w));
  const lines = [
    ['workload', 'unit', ...systems],
    ['---', '---', ...systems.map(() => '---:')],
    ...workloads.map((w) => [w, 'IOPS', ...systems.map((s) => cell(s, w, (r) => num(r.iops)))]),
    ...(large.restart === null
      ? []
      : [[`large-restart, first ${large.restart.windowSeconds} s`, 'IOPS', num(large.restart.firstWindowIops), '—', '—']]),
  ];
  const resources = [
    ['workload', ...systems],
    ['---', ...systems.map(() => '---:')],
    ...workloads.map((w) => [
      w,
      ...systems.map((s) =>
        cell(
          s,
          w,
          (r) =>
            `${Math.round(r.peakRssMiB)} MiB${squeezeNote(r.peakSqueezeMiB)} · ${num(r.cpuSecondsPerGiB)} s/GiB · p99 ${num(r.latP99Ms)} ms`,
        ),
      ),
    ]),
    ...(large.restart === null
      ? []
      : [['large-restart', `${Math.round(large.restart.peakRssMiB)} MiB${squeezeNote(large.restart.peakSqueezeMiB)}`, '—', '—']]),
  ];
  const r = large.restart;
  const drained = large.drains.reduce((n, d) => n + d.bytes, 0);
  const drainSeconds = large.drains.reduce((n, d) => n + d.activeSeconds, 0);
  return [
    `Large volume (once, after the rounds): ${num(large.size / GiB)} GiB of random data, one raw file for qemu-nbd (default cache) and nbdkit's file plugin, imported into a Holdfast volume on RGW (${num(large.importSeconds)} s) and served with --cache-size ${num(large.cacheSize / MiB)} MiB and --disk-cache-size ${num(large.diskCacheSize / GiB)} GiB, which held ${num(large.diskCacheBytes / GiB)} GiB after ${large.warmPasses} sequential read(s) of the volume (${num(large.warmSeconds)} s). fio 4 KiB at iodepth 32, ${large.runtime} s runs over the whole volume, medians of ${large.rounds} round(s); large-zipf is 70 % reads, 30 % writes, offsets zipf:1.1.`,
    '',
    lines.map((l) => `| ${l.join(' | ')} |`).join('\n'),
    '',
    ...(r === null
      ? []
      : [
          `large-restart: the gateway stopped (SIGTERM) and started again, serving ${num(r.restartSeconds)} s after the signal; then ${r.runtimeSeconds} s of random reads, ${num(r.firstWindowIops)} IOPS over the first ${r.windowSeconds} s (per second: ${r.perSecondIops.map((v) => Math.round(v)).join(', ')}); the disk cache answered ${r.diskCacheHits.toLocaleString('en-US')} of the volume's object reads and missed ${r.diskCacheMisses.toLocaleString('en-US')}.`,
          '',
        ]),
    ...(large.drains.length === 0
      ? []
      : [
          `Holdfast uploaded the zipf runs' writes as deltas: ${num(drained / MiB)} MiB at ${drainSeconds > 0 ? num(drained / MiB / drainSeconds) : '—'} MiB/s while uploading (to RGW).`,
          '',
        ]),
    'Peak RSS · CPU seconds per GiB moved · p99 latency:',
    '',
    resources.map((l) => `| ${l.join(' | ')} |`).join('\n'),
    '',
  ];
}
