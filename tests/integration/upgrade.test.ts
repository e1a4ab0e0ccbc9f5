/**
 * `holdfast volume upgrade` on a format 1 volume as a format 1 gateway left it — extents at fixed
 * keys, a stale lease, and acknowledged writes still in its journal — interrupted half-way (a
 * test-only failpoint kills it) and run again.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { legacyExtentKey, legacyLeaseKey, legacyManifestKey } from '../../gateway/image/layout.js';
import { Journal } from '../../gateway/journal/journal.js';
import { RecordKind } from '../../gateway/journal/record.js';
import { LocalDirectoryStore } from '../../gateway/store/local-store.js';
import { type CliResult, runCli } from '../helpers/cli-process.js';

const MiB = 2 ** 20;
const SIZE = 24 * MiB;
const NAME = 'old';

function assertExit(r: CliResult, code: number, what: string): void {
  assert.equal(r.code, code, `${what}: exit ${r.code}, expected ${code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
}

describe('volume upgrade from format 1', () => {
  let tmp = '';
  let args: string[] = [];
  const expected = Buffer.alloc(SIZE);

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'hf-upgrade-'));
    const storeDir = path.join(tmp, 'store');
    const journalRoot = path.join(tmp, 'journal');
    args = ['--store', storeDir, '--journal-dir', journalRoot];
    const store = new LocalDirectoryStore(storeDir);
    const manifest = { format: 1, name: NAME, size: SIZE, extentSize: MiB, readOnly: false, createdAt: '2026-01-01T00:00:00.000Z' };
    await store.put(legacyManifestKey(NAME), Buffer.from(JSON.stringify(manifest)));
    await store.put(
      legacyLeaseKey(NAME),
      Buffer.from(JSON.stringify({ journalId: 'gone', host: 'old-host', pid: 1, renewedAt: Date.now() - 3_600_000 })),
    );
    for (const extent of [0, 1, 2, 5, 6, 7, 8, 9, 12, 20, 23]) {
      const data = randomBytes(MiB);
      // Half of extent 6 is zeros: the converted base leaves those blocks out.
      if (extent === 6) data.fill(0, 0, MiB / 2);
      data.copy(expected, extent * MiB);
      await store.put(legacyExtentKey(NAME, extent), data);
    }
    // Acknowledged writes a format 1 gateway had not uploaded yet, in its journal (format 1 names).
    const dir = path.join(journalRoot, NAME);
    const { journal } = await Journal.open({
      dir,
      segmentBytes: MiB,
      limitBytes: 64 * MiB,
      maxPayload: 32 * MiB,
      logger: pino({ level: 'silent' }),
    });
    for (const [offset, fill] of [
      [3 * MiB + 100, 0x77],
      [23 * MiB + 4096, 0x66],
    ] as const) {
      const data = Buffer.alloc(8192, fill);
      void journal.reserve(data.length);
      journal.append(RecordKind.Write, offset, data.length, data);
      data.copy(expected, offset);
    }
    await journal.close();
    for (const name of await readdir(dir)) {
      const m = /^[0-9a-f]{8}-(\d{16}\.seg)$/.exec(name);
      if (m !== null) await rename(path.join(dir, name), path.join(dir, m[1]!));
    }
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('a gateway refuses the volume and names the command', async () => {
    const r = await runCli(
      ['serve', ...args, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--create-volume', '', '--volumes', NAME],
      { cwd: tmp },
    );
    assertExit(r, 6, 'serve a format 1 volume');
    assert.match(r.stderr, /format 1.*holdfast volume upgrade old/);
  });

  it('converts it in place, resumes after a crash half-way, and keeps every acknowledged write', async (t: TestContext) => {
    const crashed = await runCli(['volume', 'upgrade', NAME, ...args, '--concurrency', '1'], {
      cwd: tmp,
      env: { HOLDFAST_FAILPOINTS: 'upgrade.after-extent=crash@5' },
    });
    assert.equal(crashed.signal, 'SIGKILL', `the upgrade was killed at its failpoint: ${crashed.stderr}`);
    const list = await runCli(['volume', 'list', '--json', ...args], { cwd: tmp });
    assertExit(list, 0, 'list');
    assert.equal((JSON.parse(list.stdout) as { format: number }[])[0]?.format, 1, 'an interrupted upgrade leaves a format 1 volume');

    const done = await runCli(['volume', 'upgrade', NAME, ...args], { cwd: tmp });
    assertExit(done, 0, 'upgrade again');
    t.diagnostic(done.stdout.trim());
    assert.match(
      done.stdout,
      /\b(\d+) extents converted, (\d+) found converted already, 11 format 1 objects removed, its journal backlog uploaded/,
    );
    const reused = Number(/(\d+) found converted already/.exec(done.stdout)![1]);
    assert.ok(reused >= 4, `the second run reused what the first converted (${reused})`);

    const exported = await runCli(['export', NAME, path.join(tmp, 'out.img'), ...args], { cwd: tmp });
    assertExit(exported, 0, 'export');
    assert.ok(
      (await readFile(path.join(tmp, 'out.img'))).equals(expected),
      'the upgraded volume holds the extents and the journal backlog',
    );
    const listed = JSON.parse((await runCli(['volume', 'list', '--json', ...args], { cwd: tmp })).stdout) as {
      format: number;
      name: string;
    }[];
    assert.deepEqual(
      listed.map((v) => [v.name, v.format]),
      [[NAME, 2]],
    );
    const store = new LocalDirectoryStore(path.join(tmp, 'store'));
    assert.equal(await store.get(legacyManifestKey(NAME)), undefined, 'format 1 objects are gone');
    assert.equal(await store.get(legacyExtentKey(NAME, 0)), undefined);
  });
});
