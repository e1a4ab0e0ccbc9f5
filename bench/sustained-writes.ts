/**
 * `npm run bench:sustained`: 4 KiB random writes over a 16 GiB volume on the real S3 server (Ceph's
 * RADOS Gateway) for 5 minutes, with a 256 MiB journal limit — long after the journal is full, so
 * what is measured is what the uploads sustain, not what the journal absorbs. Reports the IOPS of every
 * 10-second window (and plots them) and the bytes sent to S3 per byte written (deltas, base extents,
 * heads and index pages). Targets (volume format 2): at least 5,000 IOPS in every window from the
 * first to the last, at most 3 bytes to S3 per byte written. It reports; it asserts nothing.
 */
import { defined, elementAt } from '../shared/checked.js';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parseDuration, parseSize } from '../shared/units.js';
import { startS3Server } from '../tests/helpers/s3-server.js';
import { GLYPH_HEIGHT, Raster, type Rgb } from './png.js';
import { ProcessMeter, sleep, startDaemon, waitFor } from './proc.js';
import { GATEWAY_NODE_FLAGS, gatewayAllocatorEnv } from '../shared/runtime-tuning.js';
import { ensureAllocator } from './tools.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const WINDOW_S = 10;
const TARGET_IOPS = 5000;
const TARGET_RATIO = 3;

interface Options {
  readonly size: number;
  readonly runtime: number;
  readonly journalLimit: string;
  readonly cacheSize: string;
  readonly out: string;
  readonly name: string;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '16G' },
      runtime: { type: 'string', default: '300s' },
      'journal-limit': { type: 'string', default: '256MiB' },
      'cache-size': { type: 'string', default: '256MiB' },
      out: { type: 'string', default: path.join(REPO, 'bench', 'results') },
      name: { type: 'string', default: 'sustained-writes' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'npm run bench:sustained -- [--size 16G] [--runtime 300s] [--journal-limit 256MiB] [--cache-size 256MiB] [--out DIR] [--name NAME]\n',
    );
    process.exit(0);
  }
  const size = parseSize(values.size);
  const runtime = parseDuration(values.runtime);
  if (size === undefined || runtime === undefined) throw new Error('--size and --runtime take a size (16G) and a duration (300s)');
  return {
    size,
    runtime: runtime / 1000,
    journalLimit: values['journal-limit'],
    cacheSize: values['cache-size'],
    out: values.out,
    name: values.name,
  };
}

const log = (line: string): void => void process.stderr.write(`[sustained-writes] ${line}\n`);

interface ImageStatus {
  readonly uploads: { readonly bytes: number };
  readonly image: {
    readonly metadataBytes: number;
    readonly compactedExtents: number;
    readonly deltas: number;
    readonly indexBytes: number;
  };
  readonly journal: { readonly backlogRecords: number; readonly bytes: number };
}

async function status(adminUrl: string): Promise<ImageStatus> {
  return (await (await fetch(`${adminUrl}/v1/volumes/bench`)).json()) as ImageStatus;
}

async function main(): Promise<void> {
  const o = options();
  const work = await mkdtemp(path.join(os.tmpdir(), 'holdfast-sustained-'));
  ensureAllocator(log);
  const s3 = await startS3Server();
  log(`S3 server: ${s3.kind} at ${s3.endpoint}`);
  // Started as the container image starts it (shared/runtime-tuning.ts).
  const gateway = startDaemon(
    process.execPath,
    [
      ...GATEWAY_NODE_FLAGS,
      path.join(REPO, 'bin', 'holdfast.js'),
      'serve',
      '--store',
      `s3://${s3.bucket}/sustained`,
      '--s3-endpoint',
      s3.endpoint,
      '--journal-dir',
      path.join(work, 'journal'),
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
      '--log-format',
      'json',
      '--log-level',
      'warn',
      '--create-volume',
      `bench=${o.size}`,
      '--journal-limit',
      o.journalLimit,
      '--cache-size',
      o.cacheSize,
    ],
    { ...process.env, ...s3.env, ...gatewayAllocatorEnv() },
  );
  try {
    await waitFor('the gateway to serve', () => /serving 1 volume/.test(gateway.output()), 60_000, gateway);
    const port = Number(elementAt(defined(/on 127\.0\.0\.1:(\d+)/.exec(gateway.output()) ?? undefined, 'gateway port line'), 1));
    const adminUrl = elementAt(defined(/admin API: (http:\/\/[\d.]+:\d+)/.exec(gateway.output()) ?? undefined, 'admin API line'), 1);
    const meter = new ProcessMeter(gateway.pid);
    const before = await status(adminUrl);
    const iopsLog = path.join(work, 'fio');
    log(`fio: 4 KiB random writes, iodepth 32, over ${o.size / 2 ** 30} GiB for ${o.runtime} s, journal limit ${o.journalLimit}`);
    const fio = await runFio([
      '--name=sustained',
      '--ioengine=nbd',
      `--uri=nbd://127.0.0.1:${port}/bench`,
      '--rw=randwrite',
      '--bs=4k',
      '--iodepth=32',
      `--size=${o.size}`,
      '--time_based',
      `--runtime=${o.runtime}`,
      '--norandommap',
      '--randrepeat=0',
      `--write_iops_log=${iopsLog}`,
      `--log_avg_msec=${WINDOW_S * 1000}`,
      '--output-format=json',
    ]);
    const written = elementAt(fio.jobs, 0).write.io_bytes;
    const afterRun = await status(adminUrl);
    log('fio done; waiting for the journal to drain');
    await waitFor('the backlog to drain', async () => (await status(adminUrl)).journal.backlogRecords === 0, 600_000, gateway);
    const drained = await status(adminUrl);
    const { peakRssMiB } = meter.stop();
    const windows = parseIopsLog(await readFile(`${iopsLog}_iops.1.log`, 'utf8'));
    const sent = (s: ImageStatus) => s.uploads.bytes + s.image.metadataBytes;
    const bytesSent = sent(drained) - sent(before);
    const report = {
      machine: { cpus: os.cpus().length, node: process.version },
      options: { ...o, s3Server: s3.kind },
      writtenBytes: written,
      iops: written / 4096 / o.runtime,
      windows,
      minWindowIops: Math.min(...windows.map((w) => w.iops)),
      bytesSentDuringRun: sent(afterRun) - sent(before),
      bytesSent,
      bytesSentPerByteWritten: bytesSent / written,
      compactedExtents: drained.image.compactedExtents,
      deltasAtEnd: drained.image.deltas,
      indexBytesAtEnd: drained.image.indexBytes,
      peakRssMiB,
    };
    await mkdir(o.out, { recursive: true });
    const md = markdown(report);
    await writeFile(path.join(o.out, `${o.name}.json`), `${JSON.stringify(report, null, 2)}\n`);
    await writeFile(path.join(o.out, `${o.name}.md`), md);
    await writeFile(path.join(o.out, `${o.name}.png`), plot(report.windows, o));
    process.stdout.write(md);
  } finally {
    await gateway.stop();
    await s3.close();
    await rm(work, { recursive: true, force: true });
  }
}

interface FioReport {
  readonly jobs: { readonly write: { readonly io_bytes: number } }[];
}

function runFio(args: string[]): Promise<FioReport> {
  return new Promise((resolve, reject) => {
    const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0) reject(new Error(`fio exited with ${code}`));
      else resolve(JSON.parse(out.slice(out.indexOf('{'))) as FioReport);
    });
  });
}

/** fio's averaged IOPS log: `msec, iops, direction, blocksize, priority` per window. */
function parseIopsLog(text: string): { t: number; iops: number }[] {
  return text
    .trim()
    .split('\n')
    .map((line) => line.split(',').map((f) => Number(f.trim())))
    .map((fields) => ({ t: Math.round(elementAt(fields, 0) / 1000), iops: elementAt(fields, 1) }));
}

function markdown(r: {
  writtenBytes: number;
  iops: number;
  windows: { t: number; iops: number }[];
  minWindowIops: number;
  bytesSent: number;
  bytesSentPerByteWritten: number;
  compactedExtents: number;
  deltasAtEnd: number;
  peakRssMiB: number;
  options: Options & { s3Server: string };
}): string {
  const o = r.options;
  const met = (ok: boolean) => (ok ? 'met' : 'MISSED');
  return [
    `## Sustained 4 KiB random writes (${o.s3Server}, ${o.size / 2 ** 30} GiB volume, journal limit ${o.journalLimit}, ${o.runtime} s)`,
    '',
    '| measure | value | target |',
    '| --- | ---: | --- |',
    `| IOPS, whole run | ${Math.round(r.iops).toLocaleString('en-US')} | |`,
    `| IOPS, slowest ${WINDOW_S}-s window | ${Math.round(r.minWindowIops).toLocaleString('en-US')} | ≥ ${TARGET_IOPS.toLocaleString('en-US')}: ${met(r.minWindowIops >= TARGET_IOPS)} |`,
    `| bytes to S3 per byte written | ${r.bytesSentPerByteWritten.toFixed(2)} | ≤ ${TARGET_RATIO}: ${met(r.bytesSentPerByteWritten <= TARGET_RATIO)} |`,
    `| written | ${(r.writtenBytes / 2 ** 20).toFixed(0)} MiB | |`,
    `| sent to S3 (deltas, base extents, heads, index pages) | ${(r.bytesSent / 2 ** 20).toFixed(0)} MiB | |`,
    `| extents compacted / deltas left | ${r.compactedExtents} / ${r.deltasAtEnd} | |`,
    `| gateway peak RSS | ${Math.round(r.peakRssMiB)} MiB | |`,
    '',
    `IOPS per ${WINDOW_S}-s window: ${r.windows.map((w) => Math.round(w.iops)).join(', ')}`,
    '',
  ].join('\n');
}

function plot(windows: { t: number; iops: number }[], o: Options): Buffer {
  const W = 960;
  const H = 420;
  const M = { left: 90, right: 30, top: 50, bottom: 60 };
  const ink: Rgb = [40, 40, 40];
  const img = new Raster(W, H, [255, 255, 255]);
  const max = Math.max(TARGET_IOPS * 1.2, ...windows.map((w) => w.iops));
  const step = 10 ** Math.floor(Math.log10(max / 4));
  const top = Math.ceil(max / step) * step;
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const y = (v: number) => M.top + plotH - (v / top) * plotH;
  const bar = plotW / Math.max(windows.length, 1);
  for (let v = 0; v <= top; v += step * 2) {
    img.line(M.left, y(v), M.left + plotW, y(v), [225, 225, 225]);
    img.text(M.left - 8 - img.textWidth(String(v), 2), y(v) - GLYPH_HEIGHT, String(v), ink, 2);
  }
  windows.forEach((w, i) => {
    img.fillRect(M.left + i * bar + 2, y(w.iops), Math.max(bar - 4, 1), M.top + plotH - y(w.iops), [31, 100, 200]);
  });
  img.line(M.left, y(TARGET_IOPS), M.left + plotW, y(TARGET_IOPS), [200, 40, 40], 2);
  img.line(M.left, M.top, M.left, M.top + plotH, ink);
  img.line(M.left, M.top + plotH, M.left + plotW, M.top + plotH, ink);
  img.text(M.left, 14, `Holdfast: 4 KiB random writes over ${o.size / 2 ** 30} GiB, IOPS per ${WINDOW_S} s (red: ${TARGET_IOPS})`, ink, 2);
  img.text(M.left + plotW / 2 - img.textWidth('time (10-s windows)', 2) / 2, H - 2 * GLYPH_HEIGHT - 12, 'time (10-s windows)', ink, 2);
  return img.toPng();
}

await main();
await sleep(0);
