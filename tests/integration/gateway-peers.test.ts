import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import {
  type GatewayProcess,
  GatewayStartError,
  type Stores,
  type StoreTarget,
  STORE_KINDS,
  startGateway,
  startStores,
  waitForJournalDrained,
} from '../helpers/gateway-process.js';
import { NbdClient, NbdConnectionError } from '../helpers/nbd-client.js';

/**
 * The gateway process against the NBD clients people actually use (nbdinfo, qemu-img, qemu-io,
 * nbdcopy, fio), on both store kinds. A missing tool fails the test that needs it.
 */

const MiB = 1024 * 1024;
const VOLUME = 'vol';
const VOLUME_SIZE = 64 * MiB;
/** 1 MiB extents so that every test crosses many extent boundaries; a cache of 8 so reads go to the store. */
// A short lease: a second gateway sees the first renew it, and refuses, within two seconds.
const GATEWAY_ARGS = ['--extent-size', '1MiB', '--cache-size', '8MiB', '--lease-ttl', '6s'];
const TOOL_TIMEOUT_MS = 120_000;

interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

interface Run extends Promise<RunResult> {
  kill(signal: NodeJS.Signals): void;
}

function run(cmd: string, args: readonly string[], opts: { cwd?: string } = {}): Run {
  const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<RunResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${TOOL_TIMEOUT_MS} ms; stderr:\n${stderr}`));
    }, TOOL_TIMEOUT_MS);
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        err.code === 'ENOENT'
          ? `${cmd} is not installed; these tests need it (qemu-utils, libnbd-bin, fio)`
          : `${cmd} failed to start: ${err.message}`;
      reject(new Error(why, { cause: err }));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return Object.assign(done, { kill: (signal: NodeJS.Signals) => void child.kill(signal) });
}

async function runOk(cmd: string, args: readonly string[], opts: { cwd?: string } = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} exited with ${r.code ?? r.signal}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r;
}

/**
 * qemu-io reports a failed command (a pattern mismatch included) on its output and may still exit
 * 0, so every line is checked: no failure, and one result line per I/O command.
 */
async function qemuIo(uri: string, commands: readonly string[]): Promise<void> {
  const r = await run('qemu-io', ['-f', 'raw', uri, ...commands.flatMap((c) => ['-c', c])]);
  const lines = `${r.stdout}\n${r.stderr}`.split('\n');
  const context = `qemu-io ${commands.join(' ; ')}:\n${r.stdout}${r.stderr}`;
  assert.deepEqual(
    lines.filter((l) => /fail|error|mismatch/i.test(l)),
    [],
    context,
  );
  assert.equal(r.code, 0, context);
  const results = lines.filter((l) => /^(?:wrote|read|discard) (\d+)\/\1 bytes at offset \d+$/.test(l));
  assert.equal(results.length, commands.filter((c) => /^(write|read|discard) /.test(c)).length, context);
}

async function assertSameImage(file: string, uri: string): Promise<void> {
  const r = await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', file, uri]);
  assert.match(r.stdout, /Images are identical/);
}

/** Random bytes with a few zero runs, one of them unaligned and one at the very end. */
async function makeImage(file: string, size: number): Promise<Buffer> {
  const data = randomBytes(size);
  data.fill(0, 5 * MiB, 7 * MiB);
  data.fill(0, 20 * MiB + 123, 21 * MiB + 4567);
  data.fill(0, size - MiB);
  await writeFile(file, data);
  return data;
}

interface FioJob {
  readonly error: number;
  readonly read: { readonly io_bytes: number; readonly iops: number };
  readonly write: { readonly io_bytes: number; readonly iops: number };
}

/** fio prints "fio: connected to NBD server" on stdout before its JSON report. */
function fioJob(stdout: string): FioJob {
  const report = JSON.parse(stdout.slice(stdout.indexOf('\n{') + 1)) as { jobs: FioJob[] };
  const job = report.jobs[0];
  assert.ok(job !== undefined, 'fio reported no job');
  return job;
}

function fioArgs(name: string, uri: string, offset: string, extra: readonly string[]): string[] {
  return [
    `--name=${name}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    '--rw=randwrite',
    '--bs=4k',
    '--iodepth=32',
    '--size=32M',
    `--offset=${offset}`,
    '--output-format=json',
    ...extra,
  ];
}

/** A write whose bytes are its sequence number repeated, checked after a restart. */
interface StampedWrite {
  readonly offset: number;
  readonly data: Buffer;
}

function stamped(seq: number, offset: number, length: number): StampedWrite {
  const data = Buffer.alloc(length);
  for (let at = 0; at + 4 <= length; at += 4) data.writeUInt32LE(seq, at);
  return { offset, data };
}

/**
 * Writes consecutive, non-overlapping blocks of [start, end) with 16 in flight until the connection
 * goes away, and returns the writes that were acknowledged. `onProgress` hears each acknowledgement.
 */
async function writeUntilClosed(
  client: NbdClient,
  start: number,
  end: number,
  onProgress: (acked: number) => void,
): Promise<StampedWrite[]> {
  const acked: StampedWrite[] = [];
  const inFlight = new Set<Promise<void>>();
  let cursor = start;
  let seq = 1;
  let broken: unknown;
  while (broken === undefined && cursor < end) {
    const w = stamped(seq++, cursor, Math.min(4096 + (seq % 16) * 3001, end - cursor));
    cursor += w.data.length;
    const p: Promise<void> = client.write(w.offset, w.data).then(
      () => {
        acked.push(w);
        onProgress(acked.length);
      },
      (err: unknown) => {
        broken ??= err;
      },
    );
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    if (inFlight.size >= 16) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrows whatever else the connection failed with, as is
  if (broken !== undefined && !(broken instanceof NbdConnectionError)) throw broken;
  return acked;
}

for (const kind of STORE_KINDS) {
  describe(`gateway with real NBD clients (${kind} store)`, () => {
    let stores: Stores;
    let store: StoreTarget;
    let journalDir: string;
    let work: string;
    /** One gateway for the tests that need no restart; each test checks only what it wrote itself. */
    let gw: GatewayProcess;

    before(async () => {
      stores = await startStores(kind);
      store = await stores.fresh();
      journalDir = await stores.tempDir('journal');
      work = await stores.tempDir('work');
      gw = await startGateway({ store, journalDir, createVolume: `${VOLUME}=64MiB`, args: GATEWAY_ARGS });
    });
    after(async () => {
      try {
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
        if (gw !== undefined) assert.equal(await gw.stop(), 0);
      } finally {
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
        await stores?.dispose();
      }
    });

    it('describes the export to nbdinfo', async () => {
      const info = JSON.parse((await runOk('nbdinfo', ['--json', gw.uri(VOLUME)])).stdout) as { exports: Record<string, unknown>[] };
      assert.equal(info.exports.length, 1);
      const exp = info.exports[0]!;
      assert.equal(exp['export-name'], VOLUME);
      assert.equal(exp['export-size'], VOLUME_SIZE);
      assert.equal(exp.is_read_only, false);
      for (const flag of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_multi_conn']) assert.equal(exp[flag], true, flag);

      const list = JSON.parse((await runOk('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${gw.port}`])).stdout) as {
        exports: Record<string, unknown>[];
      };
      assert.deepEqual(
        list.exports.map((e) => [e['export-name'], e['export-size']]),
        [[VOLUME, VOLUME_SIZE]],
      );
    });

    it(
      'holds a qemu-img image across a restart, and in the store alone once the journal drained',
      { timeout: 240_000 },
      async (t: TestContext) => {
        const ownStore = await stores.fresh();
        const ownJournal = await stores.tempDir('journal');
        const image = path.join(work, 'random64M.img');
        await makeImage(image, VOLUME_SIZE);
        // Every delta upload fails (a test-only failpoint), so everything stays in the journal and the
        // restart below must replay it.
        let own = await startGateway({
          store: ownStore,
          journalDir: ownJournal,
          createVolume: `${VOLUME}=64MiB`,
          args: [...GATEWAY_ARGS, '--shutdown-grace', '2s'],
          env: { HOLDFAST_FAILPOINTS: 'upload.before-put=error*1000000' },
        });
        try {
          await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', image, own.uri(VOLUME)]);
          await assertSameImage(image, own.uri(VOLUME));
          assert.equal(await own.stop(), 0);

          own = await startGateway({
            store: ownStore,
            journalDir: ownJournal,
            createVolume: '',
            args: [...GATEWAY_ARGS, '--upload-delay', '0'],
          });
          assert.ok(
            own.logs.some((l) => l.msg.startsWith('journal replayed')),
            'the restarted gateway replayed its journal',
          );
          await assertSameImage(image, own.uri(VOLUME));
          await waitForJournalDrained(ownJournal, VOLUME);
          assert.equal(await own.stop(), 0);

          own = await startGateway({
            store: ownStore,
            journalDir: await stores.tempDir('empty-journal'),
            createVolume: '',
            args: GATEWAY_ARGS,
          });
          await assertSameImage(image, own.uri(VOLUME));
          assert.equal(await own.stop(), 0);
          t.diagnostic('identical after convert, after a restart and from the store alone');
        } finally {
          await own.kill('SIGKILL');
        }
      },
    );

    it('serves unaligned qemu-io writes, zeroes, discards and FUA writes across extent boundaries', async () => {
      const uri = gw.uri(VOLUME);
      await qemuIo(uri, [
        // Straddles the first extent boundary (1 MiB) by a few hundred bytes on each side.
        'write -P 0x5a 1048000 3000',
        'read -P 0x5a 1048000 3000',
        'read -P 0 1047000 1000',
        'read -P 0 1051000 1000',
        // Spans three extents, starting and ending mid-extent.
        'write -P 0x33 4194000 2097300',
        'read -P 0x33 4194000 2097300',
        'write -z 4194100 500000',
        'read -P 0x33 4194000 100',
        'read -P 0 4194100 500000',
        'read -P 0x33 4694100 1597200',
        // A discarded range reads back as zeroes; the data around it stays.
        'write -P 0x77 9437000 1100000',
        'discard 9437184 1048576',
        'read -P 0x77 9437000 184',
        'read -P 0 9437184 1048576',
        'read -P 0x77 10485760 51240',
        'write -f -P 0xa1 12582000 200000',
        'discard 12600000 5000',
        'read -P 0xa1 12582000 18000',
        'read -P 0 12600000 5000',
        'read -P 0xa1 12605000 177000',
        'flush',
        // The last byte of the volume.
        `write -P 0xee ${VOLUME_SIZE - 1} 1`,
        `read -P 0xee ${VOLUME_SIZE - 1} 1`,
      ]);
      // A new connection sees the same bytes.
      await qemuIo(uri, [
        'read -P 0x5a 1048000 3000',
        'read -P 0 4194100 500000',
        'read -P 0 9437184 1048576',
        'read -P 0xa1 12605000 177000',
      ]);
    });

    it('copies with nbdcopy to a file and back', async () => {
      const source = path.join(work, 'nbdcopy-source.img');
      const copy = path.join(work, 'nbdcopy-copy.img');
      const data = await makeImage(source, VOLUME_SIZE);
      await runOk('nbdcopy', ['--flush', source, gw.uri(VOLUME)]);
      await runOk('nbdcopy', [gw.uri(VOLUME), copy]);
      assert.ok((await readFile(copy)).equals(data), 'the copy read back differs from what was written');
      await assertSameImage(source, gw.uri(VOLUME));
    });

    it('verifies two concurrent fio jobs on two connections', { timeout: 240_000 }, async (t: TestContext) => {
      const fioDir = await stores.tempDir('fio');
      const verify = ['--verify=crc32c', '--verify_fatal=1'];
      const [low, high] = await Promise.all([
        runOk('fio', fioArgs('low', gw.uri(VOLUME), '0', verify), { cwd: fioDir }),
        runOk('fio', fioArgs('high', gw.uri(VOLUME), '32M', verify), { cwd: fioDir }),
      ]);
      for (const [name, r] of [
        ['low', low],
        ['high', high],
      ] as const) {
        const job = fioJob(r.stdout);
        assert.equal(job.error, 0, `fio ${name}: ${r.stderr}`);
        assert.equal(job.write.io_bytes, 32 * MiB, `fio ${name} wrote everything`);
        assert.equal(job.read.io_bytes, 32 * MiB, `fio ${name} verified everything`);
        t.diagnostic(
          `fio ${name}: ${Math.round(job.write.iops)} write IOPS, ${Math.round(job.read.iops)} verify-read IOPS (4 KiB, iodepth 32)`,
        );
      }
    });

    it('exits 0 on SIGTERM with writes in flight and keeps every acknowledged write', { timeout: 120_000 }, async (t: TestContext) => {
      const ownStore = await stores.fresh();
      const ownJournal = await stores.tempDir('journal');
      const args = [...GATEWAY_ARGS, '--shutdown-grace', '5s'];
      let own = await startGateway({ store: ownStore, journalDir: ownJournal, createVolume: `${VOLUME}=64MiB`, args });
      const fioDir = await stores.tempDir('fio');
      let fio: Run | undefined;
      let client: NbdClient | undefined;
      try {
        await qemuIo(own.uri(VOLUME), ['write -P 0x3c 0 8388608', 'write -P 0xc3 8388608 4194304', 'write -f -P 0x42 12582912 1000']);

        // fio keeps a real client's queue full while the gateway goes down; its errors are expected.
        fio = run('fio', fioArgs('busy', own.uri(VOLUME), '32M', ['--time_based', '--runtime=60']), { cwd: fioDir });
        client = await NbdClient.connect({ host: '127.0.0.1', port: own.port, exportName: VOLUME });
        let signalled: Promise<number | null> | undefined;
        const victim = own;
        const acked = await writeUntilClosed(client, 16 * MiB, 32 * MiB, (n) => {
          // Enough acknowledgements that fio and this client are both in full flow.
          if (n === 200) signalled = victim.stop();
        });
        assert.ok(signalled !== undefined, `only ${acked.length} writes were acknowledged before the 16 MiB ran out`);
        assert.equal(await signalled, 0, `exit code after SIGTERM; stderr: ${own.otherStderr.join('\n')}`);
        const fioResult = await fio;
        fio = undefined;
        t.diagnostic(`${acked.length} writes acknowledged before the shutdown; fio exited with ${fioResult.code}`);

        own = await startGateway({ store: ownStore, journalDir: ownJournal, createVolume: '', args });
        await qemuIo(own.uri(VOLUME), ['read -P 0x3c 0 8388608', 'read -P 0xc3 8388608 4194304', 'read -P 0x42 12582912 1000']);
        client = await NbdClient.connect({ host: '127.0.0.1', port: own.port, exportName: VOLUME });
        for (const w of acked) {
          const back = await client.read(w.offset, w.data.length);
          assert.ok(back.equals(w.data), `acknowledged write at ${w.offset}+${w.data.length} is lost`);
        }
        await client.disconnect();
        client = undefined;
        assert.equal(await own.stop(), 0);
      } finally {
        client?.destroy();
        fio?.kill('SIGKILL');
        await fio?.catch(() => undefined);
        await own.kill('SIGKILL');
      }
    });

    it('refuses a second gateway on the same volume and keeps serving', async () => {
      await assert.rejects(startGateway({ store, journalDir, createVolume: '', args: GATEWAY_ARGS }), (err: unknown) => {
        assert.ok(err instanceof GatewayStartError, String(err));
        assert.equal(err.exitCode, 3, err.message);
        assert.match(err.stderr, /served by gateway/);
        return true;
      });
      const otherJournal = await stores.tempDir('other-journal');
      await assert.rejects(startGateway({ store, journalDir: otherJournal, createVolume: '', args: GATEWAY_ARGS }), (err: unknown) => {
        assert.ok(err instanceof GatewayStartError, String(err));
        assert.equal(err.exitCode, 3, err.message);
        assert.match(err.stderr, /served by gateway/);
        return true;
      });
      await qemuIo(gw.uri(VOLUME), ['write -P 0x99 30000000 70000', 'read -P 0x99 30000000 70000']);
      await runOk('nbdinfo', ['--json', gw.uri(VOLUME)]);
    });
  });
}
