import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { BenchReport } from '../../bench/report.js';

/**
 * `npm run bench` on a tiny size: the harness starts every system, runs every workload once (the
 * round workloads in one round, then outage-writes on a short outage) and writes well-formed
 * results. Timings are not checked — benchmarks report, they do not assert.
 */

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const ARGS = ['--quick', '--size', '16M', '--runtime', '1', '--rounds', '1', '--outage', '1', '--long-outage', '2', '--large-size', '32M'];
const READS = ['randread-warm', 'seqread'];
const WRITES = ['randwrite', 'seqwrite', 'flush-heavy'];
/** The rows each system must have: the table, minus what a system has no use for. */
const EXPECTED: Readonly<Record<string, readonly string[]>> = {
  'holdfast-local': [...READS, 'randread-cold', ...WRITES],
  'holdfast-s3': [...READS, 'randread-cold', 'recovery', ...WRITES],
  'qemu-nbd': [...READS, ...WRITES],
  'qemu-nbd-wt': WRITES,
  nbdkit: [...READS, ...WRITES],
  s3backer: [...READS, 'randread-cold', ...WRITES],
  'holdfast-tls': ['randread-warm', 'randwrite'],
};
/** Installed by `npm test` itself (or present on every machine): these must run. */
const MUST_RUN = ['holdfast-local', 'holdfast-s3', 'qemu-nbd', 'qemu-nbd-wt', 'nbdkit', 'holdfast-tls'];

describe('npm run bench (tiny)', { timeout: 420_000 }, () => {
  let out: string;
  let stdout = '';
  let stderr = '';
  let code: number | null = null;
  let report: BenchReport;

  before(async () => {
    out = await mkdtemp(path.join(os.tmpdir(), 'holdfast-bench-test-'));
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/main.ts', ...ARGS, '--out', out, '--name', 'tiny'], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    assert.equal(code, 0, `bench exited with ${code}\nstdout:\n${stdout}\nstderr:\n${stderr}`);
    report = JSON.parse(await readFile(path.join(out, 'tiny.json'), 'utf8')) as BenchReport;
  });

  after(async () => {
    await rm(out, { recursive: true, force: true });
  });

  it('runs every system it can, and says why about one it cannot', () => {
    assert.deepEqual(report.systems.map((s) => s.name).sort(), Object.keys(EXPECTED).sort());
    for (const s of report.systems) {
      if (MUST_RUN.includes(s.name)) assert.equal(s.available, true, `${s.name} did not run: ${s.why}`);
      if (!s.available) assert.ok(typeof s.why === 'string' && s.why.length > 0, `${s.name} is unavailable without a reason`);
    }
    assert.deepEqual(report.failures, [], 'no run failed');
  });

  it('writes a JSON row per system and workload, with plausible numbers', () => {
    for (const s of report.systems.filter((x) => x.available)) {
      const workloads = report.rows.filter((r) => r.system === s.name).map((r) => r.workload);
      assert.deepEqual([...workloads].sort(), [...EXPECTED[s.name]!].sort(), `rows of ${s.name}`);
    }
    for (const row of report.rows) {
      const what = `${row.system} ${row.workload}`;
      assert.equal(row.runs, 1, what);
      assert.ok(row.mibPerSecond > 0 && Number.isFinite(row.mibPerSecond), `${what}: throughput ${row.mibPerSecond}`);
      assert.ok(row.peakRssMiB > 0, `${what}: peak RSS ${row.peakRssMiB}`);
      assert.ok(row.cpuSecondsPerGiB >= 0 && Number.isFinite(row.cpuSecondsPerGiB), `${what}: CPU ${row.cpuSecondsPerGiB}`);
    }
    const recovery = report.rows.find((r) => r.system === 'holdfast-s3' && r.workload === 'recovery');
    assert.ok(recovery?.recoveryHeld !== undefined && recovery.recoveryHeld > 0, 'reads were held during the outage');
    assert.equal(typeof recovery.recoveryLastMs, 'number', 'every held read completed after the S3 server returned');
    assert.ok(report.s3Server.median !== null && report.s3Server.median.getMiBps > 0 && report.s3Server.median.putMiBps > 0);
    assert.ok(
      (report.uploadMiBps['holdfast-s3']?.wholeExtents ?? 0) > 0,
      'the upload rate of a backlog of 1 MiB sequential writes was measured',
    );
    assert.ok(
      (report.uploadMiBps['holdfast-s3']?.partialExtents ?? 0) > 0,
      'the upload rate of a backlog of 4 KiB random writes was measured',
    );
    const up = report.uploadMiBps['holdfast-s3'];
    assert.ok((up?.wholeExtentsPut ?? 0) > 0 && (up?.partialExtentsPut ?? 0) > 0, "the server's PUT rate was measured after each drain");
    assert.ok(report.targets.length > 0);
    for (const t of report.targets) assert.ok(t.met === null || typeof t.met === 'boolean', t.target);
  });

  it('runs outage-writes once on holdfast-s3: RSS measured, writes held not failed, the backlog drained', () => {
    assert.deepEqual(
      report.options.onceWorkloads,
      ['outage-writes', 'sustained-writes', 'large-randread', 'large-zipf', 'large-restart'],
      'default workloads',
    );
    const ow = report.outageWrites;
    assert.ok(ow !== null, 'outage-writes ran');
    assert.ok(
      ow.upAt > ow.downAt && ow.fioEndAt > ow.upAt && ow.drainedAt >= ow.fioEndAt,
      `timeline ${ow.downAt} ${ow.upAt} ${ow.fioEndAt} ${ow.drainedAt}`,
    );
    assert.ok(ow.rssAtOutageEndMiB > 0 && ow.peakRssMiB >= ow.rssAtOutageEndMiB, `RSS ${ow.peakRssMiB} / ${ow.rssAtOutageEndMiB}`);
    assert.ok(ow.outageBytes > 0 && ow.bytes >= ow.outageBytes, `${ow.outageBytes} bytes acknowledged during the outage`);
    assert.equal(ow.errors, 0, 'no write failed');
    assert.ok(ow.samples.length > 0);
    const target = report.targets.find((t) => t.target.includes('outage under writes'));
    assert.equal(target?.measured, ow.peakRssMiB, 'the RSS target counts the outage');
  });

  it('runs sustained-writes once on an S3 server of its own: IOPS per window, bytes to S3 per byte written', () => {
    const r = report.sustainedWrites;
    assert.ok(r !== null, 'sustained-writes ran');
    assert.equal(r.size, 64 * 2 ** 20, '--quick size');
    assert.ok(r.writtenBytes > 0 && r.iops > 0, `${r.writtenBytes} bytes written`);
    assert.ok(r.windows.length > 0 && r.windows.every((w) => w.iops > 0), `windows ${JSON.stringify(r.windows)}`);
    assert.ok(r.bytesSent > 0 && r.bytesSentPerByteWritten > 0, `${r.bytesSent} bytes sent`);
    assert.ok(r.peakRssMiB > 0);
    assert.equal(r.windowSeconds, 1, 'a 3-s run takes 1-s windows');
    for (const name of ['slowest 1-s window', 'bytes sent to S3 per byte written'])
      assert.ok(
        report.targets.some((t) => t.target.includes('sustained') && t.target.includes(name)),
        `a target for ${name}`,
      );
  });

  it('runs the large-volume workloads once on one data set: Holdfast with its disk cache, qemu-nbd and nbdkit', () => {
    const large = report.largeVolume;
    assert.ok(large !== null, 'the large-volume workloads ran');
    assert.equal(large.size, 32 * 2 ** 20);
    assert.ok(large.diskCacheBytes > 0, 'the sequential read filled the disk cache');
    for (const workload of ['large-randread', 'large-zipf']) {
      const systems: string[] = large.rows.filter((r) => r.workload === workload).map((r) => r.system);
      assert.deepEqual(systems, ['holdfast', 'qemu-nbd', 'nbdkit'], `${workload} rows`);
    }
    for (const row of large.rows)
      assert.ok(row.iops > 0 && row.peakRssMiB > 0, `${row.system} ${row.workload}: ${row.iops} IOPS, ${row.peakRssMiB} MiB`);
    const restart = large.restart;
    assert.ok(restart !== null, 'the restart ran');
    assert.ok(restart.firstWindowIops > 0 && restart.perSecondIops.length > 0, `restart: ${restart.firstWindowIops} IOPS`);
    assert.ok(restart.diskCacheHits > 0, 'after the restart, the disk cache answered reads');
    for (const name of ['large-randread', 'large-zipf', 'large-restart', 'large-volume workloads']) {
      assert.ok(
        report.targets.some((t) => t.target.includes(name)),
        `a target for ${name}`,
      );
    }
  });

  it('prints the Markdown table and writes it, and plots the recovery and the sustained writes as PNGs', async () => {
    const markdown = await readFile(path.join(out, 'tiny.md'), 'utf8');
    assert.ok(stdout.includes(markdown), 'the table printed is the one written');
    const systems = report.systems.filter((s) => s.available).map((s) => s.name);
    assert.ok(markdown.includes(`| workload | unit | ${systems.join(' | ')} |`), markdown);
    for (const workload of new Set(report.rows.map((r) => r.workload))) {
      const line = markdown.split('\n').find((l) => l.startsWith(`| ${workload} |`));
      assert.ok(line !== undefined, `a table line for ${workload}`);
      assert.equal(line.split('|').length, systems.length + 4, `one cell per system: ${line}`);
    }
    assert.match(markdown, /\| target \| measured \| needed \| result \|/);
    assert.match(markdown, /^Outage under writes \(holdfast-s3/m);
    assert.match(markdown, /^Large volume \(once, after the rounds\)/m);
    assert.match(markdown, /^Sustained 4 KiB random writes \(/m);
    assert.match(markdown, /^\| IOPS, slowest 1-s window \| [\d,]+ \|$/m);
    assert.match(markdown, /^\| large-restart, first \d+ s \| IOPS \|/m);
    for (const plot of ['tiny-recovery.png', 'tiny-sustained.png']) {
      const png = await readFile(path.join(out, plot));
      assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], plot);
      assert.ok(png.length > 1000, `${plot} has content`);
    }
  });
});
