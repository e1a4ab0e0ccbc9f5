import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { NbdServer } from '../../gateway/nbd/server.js';
import { MemoryExport, MemoryRegistry } from '../helpers/memory-export.js';
import { listenOnLoopback } from '../helpers/nbd-listen.js';
import { waitFor } from '../helpers/wait-for.js';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a client tool without blocking the event loop the in-process server needs. */
async function run(command: string, args: readonly string[], cwd?: string): Promise<RunResult> {
  try {
    const { stdout, stderr } = await execFileAsync(command, args, { cwd, timeout: 120_000, maxBuffer: 16 * MiB });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const failure = err as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failure.code !== 'number') throw err;
    return { code: failure.code, stdout: failure.stdout ?? '', stderr: failure.stderr ?? '' };
  }
}

async function runOk(command: string, args: readonly string[], cwd?: string): Promise<RunResult> {
  const result = await run(command, args, cwd);
  assert.equal(result.code, 0, `${command} ${args.join(' ')} failed:\n${result.stdout}\n${result.stderr}`);
  return result;
}

interface FioJob {
  readonly jobname: string;
  readonly error: number;
  readonly write: { readonly io_kbytes: number };
  readonly read: { readonly io_kbytes: number };
}

/** fio's nbd engine prints a line before the JSON document. */
function fioJobs(stdout: string): FioJob[] {
  const start = stdout.indexOf('{');
  assert.ok(start >= 0, `no JSON in fio output: ${stdout}`);
  const report = JSON.parse(stdout.slice(start)) as { jobs: FioJob[] };
  return report.jobs;
}

function fioArgs(uri: string, name: string, extra: readonly string[]): string[] {
  return [
    `--name=${name}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    '--rw=randwrite',
    '--bs=4k',
    '--iodepth=32',
    '--size=16M',
    '--verify=crc32c',
    '--output-format=json',
    // fio would otherwise leave *-verify.state files in its working directory.
    '--verify_state_save=0',
    ...extra,
  ];
}

describe('NBD server against real clients', () => {
  const registry = new MemoryRegistry(
    [
      new MemoryExport({ name: 'alpha', size: 64 * MiB }),
      new MemoryExport({ name: 'beta', size: 32 * MiB, canMultiConn: false }),
      new MemoryExport({ name: 'convert', size: 8 * MiB }),
      new MemoryExport({ name: 'copy', size: 8 * MiB }),
      new MemoryExport({ name: 'fio', size: 16 * MiB }),
      new MemoryExport({ name: 'fio-pair', size: 32 * MiB }),
      new MemoryExport({ name: 'ro', size: 8 * MiB, readOnly: true }),
      new MemoryExport({ name: 'sparse', size: 64 * MiB, allocationBlockSize: MiB }),
      new MemoryExport({ name: 'local', size: 8 * MiB }),
    ],
    'alpha',
  );
  const server = new NbdServer({ registry, logger: pino({ level: process.env.NBD_TEST_LOG ?? 'silent' }) });
  let port = 0;
  let dir = '';
  let socketPath = '';
  const uri = (name: string): string => `nbd://127.0.0.1:${port}/${name}`;

  before(async () => {
    port = await listenOnLoopback(server);
    dir = await mkdtemp(join(tmpdir(), 'holdfast-nbd-'));
    socketPath = join(dir, 'nbd.sock');
    assert.deepEqual(await server.listen({ kind: 'unix', path: socketPath }), { kind: 'unix', path: socketPath });
    registry.get('ro').disk.fill(0x5a);
  });

  after(async () => {
    await server.close(5000);
    await rm(dir, { recursive: true, force: true });
  });

  it('nbdinfo reports the size, flags and block sizes of an export', async () => {
    const { stdout } = await runOk('nbdinfo', ['--json', uri('beta')]);
    const info = JSON.parse(stdout) as { exports: Array<Record<string, unknown>> };
    const [beta] = info.exports;
    assert.ok(beta !== undefined);
    assert.equal(beta['export-name'], 'beta');
    assert.equal(beta['export-size'], 32 * MiB);
    assert.equal(beta['description'], 'Holdfast volume beta, 32 MiB');
    assert.equal(beta['is_read_only'], false);
    assert.equal(beta['can_flush'], true);
    assert.equal(beta['can_fua'], true);
    assert.equal(beta['can_trim'], true);
    assert.equal(beta['can_zero'], true);
    assert.equal(beta['can_fast_zero'], true);
    assert.equal(beta['can_multi_conn'], false);
    assert.equal(beta['block_size_minimum'], 1);
    assert.equal(beta['block_size_preferred'], 4096);
    assert.equal(beta['block_size_maximum'], 32 * MiB);

    const ro = JSON.parse((await runOk('nbdinfo', ['--json', uri('ro')])).stdout) as { exports: Array<Record<string, unknown>> };
    assert.equal(ro.exports[0]?.['is_read_only'], true);
    assert.equal(ro.exports[0]['can_multi_conn'], true);
    assert.equal(ro.exports[0]['export-size'], 8 * MiB);
  });

  it('nbdinfo --list shows every export with its name and size as description', async () => {
    const { stdout } = await runOk('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${port}`]);
    const listing = JSON.parse(stdout) as { exports: Array<Record<string, unknown>> };
    const names = listing.exports.map((exp) => exp['export-name']);
    assert.deepEqual([...names].sort(), ['alpha', 'beta', 'convert', 'copy', 'fio', 'fio-pair', 'local', 'ro', 'sparse']);
    const alpha = listing.exports.find((exp) => exp['export-name'] === 'alpha');
    assert.equal(alpha?.['description'], 'Holdfast volume alpha, 64 MiB');
    assert.equal(alpha['export-size'], 64 * MiB);
  });

  it('qemu-io writes and reads back a pattern at unaligned offsets', async () => {
    const alpha = registry.get('alpha');
    const { stdout } = await runOk('qemu-io', [
      '-f',
      'raw',
      uri('alpha'),
      '-c',
      'write -P 0xab 1000 70000',
      '-c',
      'read -P 0xab 1000 70000',
      '-c',
      'read -P 0 0 1000',
    ]);
    assert.match(stdout, /wrote 70000\/70000 bytes at offset 1000/);
    assert.match(stdout, /read 70000\/70000 bytes at offset 1000/);
    assert.doesNotMatch(stdout, /Pattern verification failed/);
    assert.equal(alpha.disk[999], 0);
    assert.ok(alpha.disk.subarray(1000, 71000).every((byte) => byte === 0xab));
    assert.equal(alpha.disk[71000], 0);

    // The same read with a wrong pattern must be noticed, or the check above proves nothing.
    const mismatch = await run('qemu-io', ['-f', 'raw', uri('alpha'), '-c', 'read -P 0xcd 1000 70000']);
    assert.match(mismatch.stdout + mismatch.stderr, /Pattern verification failed/);
  });

  it('qemu-io flush, discard, write-zeroes and FUA writes reach the export with their flags', async () => {
    const alpha = registry.get('alpha');
    alpha.disk.fill(0x77, 4 * MiB, 5 * MiB);
    const before = alpha.operations.length;
    await runOk('qemu-io', [
      '-f',
      'raw',
      '--discard=unmap',
      uri('alpha'),
      '-c',
      `write -f -P 0x22 ${4 * MiB} 4096`,
      '-c',
      `write -z ${4 * MiB + 65536} 65536`,
      '-c',
      `write -z -u ${4 * MiB + 131072} 65536`,
      '-c',
      `discard ${4 * MiB + 262144} 65536`,
      '-c',
      'flush',
    ]);
    const ops = alpha.operations.slice(before);
    assert.ok(
      ops.some((op) => op.kind === 'write' && op.fua && op.offset === 4 * MiB && op.length === 4096),
      'FUA write',
    );
    assert.ok(
      ops.some((op) => op.kind === 'writeZeroes' && op.noHole && op.offset === 4 * MiB + 65536),
      'zero without unmap',
    );
    assert.ok(
      ops.some((op) => op.kind === 'writeZeroes' && !op.noHole && op.offset === 4 * MiB + 131072),
      'zero with unmap',
    );
    assert.ok(
      ops.some((op) => op.kind === 'trim' && op.offset === 4 * MiB + 262144),
      'discard',
    );
    assert.ok(
      ops.some((op) => op.kind === 'flush'),
      'flush',
    );
    assert.ok(alpha.disk.subarray(4 * MiB, 4 * MiB + 4096).every((byte) => byte === 0x22));
    assert.ok(alpha.disk.subarray(4 * MiB + 65536, 4 * MiB + 196608).every((byte) => byte === 0));
    assert.equal(alpha.disk[4 * MiB + 196608], 0x77);
  });

  it('qemu-img converts a random image onto an export and compares it back', async () => {
    const source = join(dir, 'convert-src.raw');
    const data = randomBytes(8 * MiB);
    await writeFile(source, data);
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, uri('convert')]);
    assert.ok(registry.get('convert').disk.equals(data));
    const compare = await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri('convert')]);
    assert.match(compare.stdout, /Images are identical/);

    const disk = registry.get('convert').disk;
    disk.writeUInt8(disk.readUInt8(12345) ^ 0xff, 12345);
    const differing = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri('convert')]);
    assert.equal(differing.code, 1, `qemu-img compare should see the changed byte: ${differing.stdout}`);
  });

  it('nbdcopy copies a file onto an export and an export into a file', async () => {
    const copy = registry.get('copy');
    const source = join(dir, 'copy-src.raw');
    const upload = randomBytes(8 * MiB);
    await writeFile(source, upload);
    await runOk('nbdcopy', [source, uri('copy')]);
    assert.ok(copy.disk.equals(upload));

    const download = randomBytes(8 * MiB);
    download.copy(copy.disk);
    const target = join(dir, 'copy-out.raw');
    await runOk('nbdcopy', [uri('copy'), target]);
    assert.ok((await readFile(target)).equals(download));
  });

  it('fio random writes at queue depth 32 verify with crc32c', async () => {
    const { stdout } = await runOk('fio', fioArgs(uri('fio'), 'single', []), dir);
    const [job] = fioJobs(stdout);
    assert.ok(job !== undefined);
    assert.equal(job.error, 0);
    assert.equal(job.write.io_kbytes, 16 * 1024);
    assert.equal(job.read.io_kbytes, 16 * 1024, 'the verify pass reads everything back');
    assert.ok(registry.get('fio').disk.some((byte) => byte !== 0));
  });

  it('two fio processes at once on different regions of one export both verify', async () => {
    const exp = registry.get('fio-pair');
    const [low, high] = await Promise.all([
      runOk('fio', fioArgs(uri('fio-pair'), 'low', ['--offset=0']), dir),
      runOk('fio', fioArgs(uri('fio-pair'), 'high', ['--offset=16M']), dir),
    ]);
    for (const result of [low, high]) {
      const [job] = fioJobs(result.stdout);
      assert.ok(job !== undefined);
      assert.equal(job.error, 0);
      assert.equal(job.write.io_kbytes, 16 * 1024);
      assert.equal(job.read.io_kbytes, 16 * 1024);
    }
    assert.ok(exp.disk.subarray(0, 16 * MiB).some((byte) => byte !== 0));
    assert.ok(exp.disk.subarray(16 * MiB).some((byte) => byte !== 0));
  });

  it('a read-only export serves reads and refuses writes', async () => {
    const ro = registry.get('ro');
    const read = await runOk('qemu-io', ['-r', '-f', 'raw', uri('ro'), '-c', 'read -P 0x5a 0 65536']);
    assert.doesNotMatch(read.stdout, /Pattern verification failed/);
    assert.match(read.stdout, /read 65536\/65536 bytes at offset 0/);

    const write = await run('qemu-io', ['-f', 'raw', uri('ro'), '-c', 'write -P 0xab 0 4096']);
    assert.notEqual(write.code, 0);
    assert.match(write.stderr, /Permission denied|read-only/i);
    assert.doesNotMatch(write.stdout, /wrote/);
    assert.ok(ro.disk.every((byte) => byte === 0x5a));
    assert.equal(ro.operations.filter((op) => op.kind !== 'read').length, 0);
  });

  it('nbdinfo --map and qemu-img map see holes through base:allocation', async () => {
    await runOk('qemu-io', ['-f', 'raw', uri('sparse'), '-c', `write -P 0x11 ${8 * MiB} ${2 * MiB}`, '-c', `write -z ${9 * MiB} ${MiB}`]);
    const map = JSON.parse((await runOk('nbdinfo', ['--map', '--json', uri('sparse')])).stdout) as Array<{
      offset: number;
      length: number;
      type: number;
    }>;
    assert.deepEqual(
      map.map((e) => [e.offset, e.length, e.type]),
      [
        [0, 8 * MiB, 3],
        [8 * MiB, MiB, 0],
        [9 * MiB, MiB, 2],
        [10 * MiB, 54 * MiB, 3],
      ],
    );
    const qemu = JSON.parse((await runOk('qemu-img', ['map', '--output=json', '-f', 'raw', uri('sparse')])).stdout) as Array<{
      start: number;
      length: number;
      data: boolean;
      zero: boolean;
    }>;
    assert.deepEqual(
      qemu.map((e) => [e.start, e.length, e.data, e.zero]),
      [
        [0, 8 * MiB, false, true],
        [8 * MiB, MiB, true, false],
        [9 * MiB, MiB, true, true],
        [10 * MiB, 54 * MiB, false, true],
      ],
    );
    // A sparse copy: nbdcopy writes the data and leaves the holes.
    const target = join(dir, 'sparse.raw');
    await runOk('nbdcopy', [uri('sparse'), target]);
    const allocated = Number((await runOk('du', ['--block-size=1', target])).stdout.split('\t')[0]);
    // The allocated zeros (WRITE_ZEROES with NO_HOLE) read as zero too: nbdcopy may skip them.
    assert.ok(allocated <= 2 * MiB, `nbdcopy allocated ${allocated} bytes for 1 MiB of data`);
    assert.ok((await readFile(target)).equals(registry.get('sparse').disk));
  });

  it('serves the same exports on a Unix socket', async () => {
    const local = registry.get('local');
    const socketUri = `nbd+unix:///local?socket=${socketPath}`;
    const { stdout } = await runOk('nbdinfo', ['--json', socketUri]);
    assert.equal((JSON.parse(stdout) as { exports: Array<Record<string, unknown>> }).exports[0]?.['export-size'], 8 * MiB);
    const io = await runOk('qemu-io', ['-f', 'raw', socketUri, '-c', 'write -P 0x3c 0 65536', '-c', 'read -P 0x3c 0 65536']);
    assert.doesNotMatch(io.stdout, /Pattern verification failed/);
    assert.ok(local.disk.subarray(0, 65536).every((byte) => byte === 0x3c));
  });

  it('detaches every export once its clients are gone', async () => {
    await waitFor(() => server.stats.connectionsActive === 0, 'all client connections to close');
    for (const exp of registry.exports) {
      assert.equal(exp.attached, 0, `${exp.name} still attached`);
    }
    assert.ok(registry.get('alpha').attachCount > 0);
    assert.equal(server.stats.requestsInFlight, 0);
    assert.deepEqual(
      Object.entries(server.stats.protocolErrors).filter(([reason, count]) => count > 0 && reason !== 'ClosedDuringHandshake'),
      [],
    );
  });
});
