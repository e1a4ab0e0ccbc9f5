import os from 'node:os';
import path from 'node:path';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { elementAt } from '../shared/checked.js';
import { S3_SERVER_NAMES, startS3Server, type S3ServerKind } from '../tests/helpers/s3-server.js';
import { fio } from './fio.js';
import { GLYPH_HEIGHT, Raster, type Rgb } from './png.js';
import { fetchVolume, type VolumeProgress } from './admin.js';
import { ProcessMeter } from './proc.js';
import type { TargetResult } from './report.js';
import { drainJournal, launchHoldfast, VOLUME } from './systems.js';

/**
 * Sustained 4 KiB random writes (issue 12): a volume of `size` (16 GiB) on a fresh S3 server of its
 * own, a 256 MiB journal limit, fio for `runtime` (5 minutes) — long after the journal is full, so
 * what is measured is what the uploads sustain, not what the journal absorbs. It reports the IOPS of
 * every 10-second window and the bytes sent to S3 per byte written (deltas, base extents, heads and
 * index pages). Its own server, its objects on disk (this writes more than the machine's memory),
 * closed after it: the GiB this writes must not stay for what runs next.
 */

/** fio's IOPS averaging window; a run shorter than a few of them (--quick) takes 1-s windows. */
const WINDOW_S = 10;
const TARGET_IOPS = 5000;
const TARGET_RATIO = 3;
const MiB = 2 ** 20;
const GiB = 2 ** 30;

export interface SustainedWritesOptions {
  readonly s3Server: S3ServerKind;
  readonly size: number;
  /** Seconds of writes. */
  readonly runtime: number;
  readonly journalLimit: number;
  readonly cacheSize: number;
  /** The gateway's --index-memory (its default when absent): smaller makes compaction start sooner. */
  readonly indexMemory?: number;
  /** The gateway's --delta-budget (its default when absent): smaller starts compaction for delta bytes sooner. */
  readonly deltaBudget?: number;
  /** Where the gateway writes a CPU profile (node --cpu-prof) when it exits; none when absent. */
  readonly cpuProfileDir?: string;
  readonly workDir: string;
  /** The server's objects in a BlueStore file (a full run writes more than the machine's memory), not in memory. */
  readonly onDisk: boolean;
  readonly log: (line: string) => void;
}

export interface SustainedWritesResult {
  readonly s3Server: S3ServerKind;
  readonly size: number;
  readonly runtime: number;
  readonly journalLimit: number;
  readonly cacheSize: number;
  readonly indexMemory?: number;
  readonly deltaBudget?: number;
  readonly cpus: number;
  readonly windowSeconds: number;
  readonly writtenBytes: number;
  readonly iops: number;
  /** fio's IOPS averaged over each window, `t` its end in seconds. */
  readonly windows: readonly { readonly t: number; readonly iops: number }[];
  readonly minWindowIops: number;
  readonly bytesSentDuringRun: number;
  /** Until the journal had drained after the run. */
  readonly bytesSent: number;
  readonly bytesSentPerByteWritten: number;
  readonly drainSeconds: number;
  readonly compactedExtents: number;
  readonly deltasAtEnd: number;
  readonly indexBytesAtEnd: number;
  readonly peakRssMiB: number;
}

const sent = (v: VolumeProgress): number => v.uploadBytes + v.metadataBytes;

export async function runSustainedWrites(o: SustainedWritesOptions): Promise<SustainedWritesResult> {
  const dir = path.join(o.workDir, 'sustained');
  await mkdir(dir, { recursive: true });
  const s3 = await startS3Server({ kind: o.s3Server, dir: path.join(dir, o.s3Server), bucket: 'sustained', onDisk: o.onDisk });
  try {
    const gateway = await launchHoldfast(
      'sustained-writes',
      [
        ...['--store', `s3://${s3.bucket}/sustained`, '--s3-endpoint', s3.endpoint, '--journal-dir', path.join(dir, 'journal')],
        ...['--create-volume', `${VOLUME}=${o.size}`, '--journal-limit', String(o.journalLimit), '--cache-size', String(o.cacheSize)],
        ...(o.indexMemory === undefined ? [] : ['--index-memory', String(o.indexMemory)]),
        ...(o.deltaBudget === undefined ? [] : ['--delta-budget', String(o.deltaBudget)]),
      ],
      s3,
      o.cpuProfileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', o.cpuProfileDir],
    );
    try {
      const meter = new ProcessMeter(gateway.daemon.pid);
      const before = await fetchVolume(gateway.adminUrl, VOLUME);
      o.log(
        `bench: sustained-writes: 4 KiB random writes over ${+(o.size / GiB).toFixed(2)} GiB for ${o.runtime} s, journal limit ${o.journalLimit / MiB} MiB`,
      );
      const iopsLog = path.join(dir, 'fio');
      const windowSeconds = o.runtime >= 3 * WINDOW_S ? WINDOW_S : 1;
      const run = await fio(
        'sustained',
        { engine: 'nbd', uri: `nbd://127.0.0.1:${gateway.port}/${VOLUME}` },
        [
          ...['--rw=randwrite', '--bs=4k', '--iodepth=32', `--size=${o.size}`, '--time_based', `--runtime=${o.runtime}`],
          ...[`--write_iops_log=${iopsLog}`, `--log_avg_msec=${windowSeconds * 1000}`],
        ],
        dir,
        (o.runtime + 120) * 1000,
      );
      const afterRun = await fetchVolume(gateway.adminUrl, VOLUME);
      const drainFrom = performance.now();
      await drainJournal(gateway.adminUrl, 'sustained-writes', o.size);
      const drainSeconds = (performance.now() - drainFrom) / 1000;
      const drained = await fetchVolume(gateway.adminUrl, VOLUME);
      const { peakRssMiB } = meter.stop();
      const windows = parseIopsLog(await readFile(`${iopsLog}_iops.1.log`, 'utf8'));
      const bytesSent = sent(drained) - sent(before);
      return {
        s3Server: s3.kind,
        size: o.size,
        runtime: o.runtime,
        journalLimit: o.journalLimit,
        cacheSize: o.cacheSize,
        ...(o.indexMemory === undefined ? {} : { indexMemory: o.indexMemory }),
        ...(o.deltaBudget === undefined ? {} : { deltaBudget: o.deltaBudget }),
        cpus: os.cpus().length,
        windowSeconds,
        writtenBytes: run.bytes,
        iops: run.bytes / 4096 / o.runtime,
        windows,
        minWindowIops: Math.min(...windows.map((w) => w.iops)),
        bytesSentDuringRun: sent(afterRun) - sent(before),
        bytesSent,
        bytesSentPerByteWritten: bytesSent / run.bytes,
        drainSeconds,
        compactedExtents: drained.compactedExtents,
        deltasAtEnd: drained.deltas,
        indexBytesAtEnd: drained.indexBytes,
        peakRssMiB,
      };
    } finally {
      await gateway.daemon.stop();
    }
  } finally {
    await s3.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** fio's averaged IOPS log: `msec, iops, direction, blocksize, priority` per window. */
function parseIopsLog(text: string): { t: number; iops: number }[] {
  if (text.trim() === '') throw new Error('fio logged no IOPS window');
  return text
    .trim()
    .split('\n')
    .map((line) => line.split(',').map((f) => Number(f.trim())))
    .map((fields) => ({ t: Math.round(elementAt(fields, 0) / 1000), iops: elementAt(fields, 1) }));
}

export function sustainedTargets(r: SustainedWritesResult | null): TargetResult[] {
  if (r === null) return [];
  return [
    {
      target: `holdfast sustained 4 KiB random writes, slowest ${r.windowSeconds}-s window (IOPS)`,
      measured: r.minWindowIops,
      needed: `≥ ${TARGET_IOPS.toLocaleString('en-US')}`,
      met: r.minWindowIops >= TARGET_IOPS,
    },
    {
      target: 'holdfast sustained writes, bytes sent to S3 per byte written',
      measured: r.bytesSentPerByteWritten,
      needed: `≤ ${TARGET_RATIO}`,
      met: r.bytesSentPerByteWritten <= TARGET_RATIO,
    },
  ];
}

const whole = (n: number): string => Math.round(n).toLocaleString('en-US');

export function sustainedSection(r: SustainedWritesResult | null): string[] {
  if (r === null) return [];
  return [
    `Sustained 4 KiB random writes (${S3_SERVER_NAMES[r.s3Server]}, a server of its own; ${+(r.size / GiB).toFixed(2)} GiB volume, journal limit ${r.journalLimit / MiB} MiB, cache ${r.cacheSize / MiB} MiB${r.indexMemory === undefined ? '' : `, index memory ${r.indexMemory / MiB} MiB`}, ${r.runtime} s, iodepth 32):`,
    '',
    '| measure | value |',
    '| --- | ---: |',
    `| IOPS, whole run | ${whole(r.iops)} |`,
    `| IOPS, slowest ${r.windowSeconds}-s window | ${whole(r.minWindowIops)} |`,
    `| bytes sent to S3 per byte written | ${r.bytesSentPerByteWritten.toFixed(2)} |`,
    `| written / sent to S3 (deltas, base extents, heads, index pages) | ${whole(r.writtenBytes / MiB)} / ${whole(r.bytesSent / MiB)} MiB |`,
    `| drained after the run | ${r.drainSeconds.toFixed(1)} s |`,
    `| extents compacted / deltas left | ${r.compactedExtents} / ${r.deltasAtEnd} |`,
    `| gateway peak RSS | ${whole(r.peakRssMiB)} MiB |`,
    '',
    `IOPS per ${r.windowSeconds}-s window: ${r.windows.map((w) => whole(w.iops)).join(', ')}`,
    '',
  ];
}

export function plotSustained(r: SustainedWritesResult): Buffer {
  const W = 960;
  const H = 420;
  const M = { left: 90, right: 30, top: 50, bottom: 60 };
  const ink: Rgb = [40, 40, 40];
  const img = new Raster(W, H, [255, 255, 255]);
  const max = Math.max(TARGET_IOPS * 1.2, ...r.windows.map((w) => w.iops));
  const step = 10 ** Math.floor(Math.log10(max / 4));
  const top = Math.ceil(max / step) * step;
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const y = (v: number): number => M.top + plotH - (v / top) * plotH;
  const bar = plotW / Math.max(r.windows.length, 1);
  for (let v = 0; v <= top; v += step * 2) {
    img.line(M.left, y(v), M.left + plotW, y(v), [225, 225, 225]);
    img.text(M.left - 8 - img.textWidth(String(v), 2), y(v) - GLYPH_HEIGHT, String(v), ink, 2);
  }
  r.windows.forEach((w, i) => {
    img.fillRect(M.left + i * bar + 2, y(w.iops), Math.max(bar - 4, 1), M.top + plotH - y(w.iops), [31, 100, 200]);
  });
  img.line(M.left, y(TARGET_IOPS), M.left + plotW, y(TARGET_IOPS), [200, 40, 40], 2);
  img.line(M.left, M.top, M.left, M.top + plotH, ink);
  img.line(M.left, M.top + plotH, M.left + plotW, M.top + plotH, ink);
  const title = `Holdfast: 4 KiB random writes over ${+(r.size / GiB).toFixed(2)} GiB, IOPS per ${r.windowSeconds} s (red: ${TARGET_IOPS})`;
  img.text(M.left, 14, title, ink, 2);
  const axis = `time (${r.windowSeconds}-s windows)`;
  img.text(M.left + plotW / 2 - img.textWidth(axis, 2) / 2, H - 2 * GLYPH_HEIGHT - 12, axis, ink, 2);
  return img.toPng();
}
