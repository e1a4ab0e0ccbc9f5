/**
 * `npm run bench:sparse-copy`: the time `nbdcopy` takes to copy a 4 GiB volume holding 256 MiB of data
 * out of Holdfast on the real S3 server (Ceph's RADOS Gateway), with the gateway's cache cold each time:
 * once as nbdcopy runs by default — it asks base:allocation where the data is and reads only that —
 * and once with `--no-extents`, which is how every client had to copy before the gateway offered
 * base:allocation (all 4 GiB through NBD). It checks the copy against the source and prints the
 * output file's allocated size. It reports; it asserts nothing.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startS3Server } from '../tests/helpers/s3-server.js';
import { drainJournal, launchHoldfast, type HoldfastProcess } from './systems.js';
import { SPARSE_COPY_TOOLS, ensureTools } from './tools.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const GiB = 2 ** 30;
const MiB = 2 ** 20;
const VOLUME_SIZE = 4 * GiB;
const DATA_CHUNKS = 64;
const CHUNK = 4 * MiB;

const log = (line: string): void => void process.stderr.write(`[sparse-copy] ${line}\n`);

function run(cmd: string, args: readonly string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString();
    });
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve((performance.now() - started) / 1000);
      else reject(new Error(`${cmd} ${args.join(' ')} exited with ${code ?? 'a signal'}: ${err}`));
    });
  });
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function allocatedMiB(file: string): Promise<number> {
  return ((await stat(file)).blocks * 512) / MiB;
}

async function main(): Promise<void> {
  ensureTools(log, 'rgw', SPARSE_COPY_TOOLS);
  const work = await mkdtemp(path.join(os.tmpdir(), 'holdfast-sparse-copy-'));
  const s3 = await startS3Server({ dir: path.join(work, 's3') });
  let gateway: HoldfastProcess | undefined;
  try {
    const source = path.join(work, 'source.img');
    const fh = await open(source, 'w');
    await fh.truncate(VOLUME_SIZE);
    // 64 chunks of 4 MiB spread over the volume: 256 MiB of data, the rest holes.
    for (let i = 0; i < DATA_CHUNKS; i++)
      await fh.write(randomBytes(CHUNK), 0, CHUNK, Math.floor((i * VOLUME_SIZE) / DATA_CHUNKS / CHUNK) * CHUNK + (i % 3) * CHUNK);
    await fh.close();
    const args = [
      '--store',
      `s3://${s3.bucket}/sparse`,
      '--s3-endpoint',
      s3.endpoint,
      '--journal-dir',
      path.join(work, 'journal'),
      '--create-volume',
      `bench=${VOLUME_SIZE}`,
      '--cache-size',
      '256MiB',
    ];
    gateway = await launchHoldfast('holdfast-s3', args, s3);
    const uri = (g: HoldfastProcess): string => `nbd://127.0.0.1:${g.port}/bench`;
    log(`writing ${(DATA_CHUNKS * CHUNK) / MiB} MiB of data into a ${VOLUME_SIZE / GiB} GiB volume`);
    await run('nbdcopy', [source, uri(gateway)]);
    await drainJournal(gateway.adminUrl, 'holdfast-s3', DATA_CHUNKS * CHUNK);
    const expected = await sha256(source);
    const rows: { how: string; seconds: number; allocatedMiB: number; same: boolean }[] = [];
    for (const [how, extra] of [
      ['nbdcopy (base:allocation)', []],
      ['nbdcopy --no-extents (as before base:allocation)', ['--no-extents']],
    ] as const) {
      // A cold cache each time: the copy reads from S3 what it reads at all.
      await gateway.daemon.stop('SIGTERM', 30_000);
      gateway = await launchHoldfast('holdfast-s3', args, s3);
      const out = path.join(work, 'copy.img');
      await rm(out, { force: true });
      const seconds = await run('nbdcopy', [...extra, uri(gateway), out]);
      rows.push({ how, seconds, allocatedMiB: await allocatedMiB(out), same: (await sha256(out)) === expected });
      log(`${how}: ${seconds.toFixed(2)} s, ${(await allocatedMiB(out)).toFixed(0)} MiB allocated`);
    }
    const md = [
      `Copying a ${VOLUME_SIZE / GiB} GiB volume holding ${(DATA_CHUNKS * CHUNK) / MiB} MiB of data out of Holdfast on ${s3.kind} (cold cache), ${os.cpus().length} cores:`,
      '',
      '| client | seconds | output allocated | identical to the source |',
      '| --- | ---: | ---: | --- |',
      ...rows.map((r) => `| ${r.how} | ${r.seconds.toFixed(2)} | ${r.allocatedMiB.toFixed(0)} MiB | ${r.same ? 'yes' : 'NO'} |`),
      '',
      `Speed-up: ${((rows[1]?.seconds ?? NaN) / (rows[0]?.seconds ?? NaN)).toFixed(1)}×`,
      '',
    ].join('\n');
    const outDir = path.join(REPO, 'bench', 'results');
    await mkdir(outDir, { recursive: true });
    await writeFile(path.join(outDir, 'sparse-copy.md'), md);
    await writeFile(
      path.join(outDir, 'sparse-copy.json'),
      `${JSON.stringify({ volumeSize: VOLUME_SIZE, dataBytes: DATA_CHUNKS * CHUNK, s3Server: s3.kind, rows }, null, 2)}\n`,
    );
    process.stdout.write(md);
  } finally {
    await gateway?.daemon.stop('SIGTERM', 30_000);
    await s3.close();
    await rm(work, { recursive: true, force: true });
  }
}

await main();
