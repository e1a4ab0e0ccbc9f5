/**
 * The `holdfast` command line as an operator runs it: the bundled CLI in a child process, against
 * a local directory store and against S3 (Ceph's RADOS Gateway). Build first: `npm run build`.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { ObjectStore } from '../../gateway/store/object-store.js';
import { openStore } from '../../gateway/store/open-store.js';
import { volumePrefix } from '../../gateway/image/layout.js';
import { Volume } from '../../gateway/volume/volume.js';
import { type CliResult, runCli, startServe } from '../helpers/cli-process.js';
import { openTestVolume } from '../helpers/volume-fixture.js';
import { type S3Server, startS3Server } from '../helpers/s3-server.js';

const MiB = 2 ** 20;
const EXIT = { usage: 2, locked: 3, notFound: 4, exists: 5 } as const;

/** Random data with whole-extent holes (never uploaded) and partial ones (uploaded with their extent). */
function imageWithHoles(): Buffer {
  const img = randomBytes(40 * MiB);
  for (const extent of [3, 10, 11, 12, 25, 39]) img.fill(0, extent * MiB, (extent + 1) * MiB);
  img.fill(0, 5 * MiB + MiB / 2, 6 * MiB);
  img.fill(0, 7 * MiB, 7 * MiB + 100);
  img.fill(0, 15 * MiB + 300_000, 16 * MiB + 200_000);
  return img;
}

function nonZeroExtents(data: Buffer, extentSize: number): number {
  let n = 0;
  for (let at = 0; at < data.length; at += extentSize) if (data.subarray(at, at + extentSize).some((b) => b !== 0)) n++;
  return n;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function collect(keys: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const key of keys) out.push(key);
  return out;
}

function assertExit(result: CliResult, code: number, what: string): void {
  assert.equal(
    result.code,
    code,
    `${what}: exit code ${result.code}, expected ${code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
}

interface StoreFixture {
  readonly args: string[];
  readonly env: Record<string, string>;
  readonly journalRoot: string;
  open(): ObjectStore;
  dispose(): Promise<void>;
}

async function localFixture(tmp: string): Promise<StoreFixture> {
  const storeDir = path.join(tmp, 'store');
  const journalRoot = path.join(tmp, 'journal');
  return {
    args: ['--store', storeDir, '--journal-dir', journalRoot],
    env: {},
    journalRoot,
    open: () => openStore({ storeUrl: storeDir }),
    dispose: async () => undefined,
  };
}

async function s3Fixture(tmp: string): Promise<StoreFixture> {
  const s3: S3Server = await startS3Server();
  // The store the test opens itself finds the credentials where the CLI's does: in the environment.
  Object.assign(process.env, s3.env);
  const storeUrl = `s3://${s3.bucket}/cli-test`;
  const journalRoot = path.join(tmp, 'journal');
  return {
    args: ['--store', storeUrl, '--s3-endpoint', s3.endpoint, '--journal-dir', journalRoot],
    env: s3.env,
    journalRoot,
    open: () => openStore({ storeUrl, s3Endpoint: s3.endpoint }),
    async dispose() {
      await s3.close();
    },
  };
}

function cliSuite(kind: string, makeFixture: (tmp: string) => Promise<StoreFixture>): void {
  describe(`holdfast CLI with a ${kind} store`, () => {
    let tmp = '';
    let fx: StoreFixture;
    let store: ObjectStore;

    before(async () => {
      tmp = await mkdtemp(path.join(os.tmpdir(), 'holdfast-cli-'));
      fx = await makeFixture(tmp);
      store = fx.open();
    });

    after(async () => {
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
      await store?.close();
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
      await fx?.dispose();
      await rm(tmp, { recursive: true, force: true });
    });

    const hf = (...args: string[]): Promise<CliResult> => runCli([...args, ...fx.args], { cwd: tmp, env: fx.env });
    const file = (name: string): string => path.join(tmp, name);
    const inspect = async (name: string): Promise<{ size: number; baseExtents: number; deltas: number; snapshots: unknown[] }> => {
      const r = await hf('volume', 'inspect', name, '--json');
      assertExit(r, 0, `inspect ${name}`);
      return JSON.parse(r.stdout) as { size: number; baseExtents: number; deltas: number; snapshots: unknown[] };
    };
    const listNames = async (): Promise<string[]> => {
      const r = await hf('volume', 'list', '--json');
      assertExit(r, 0, 'volume list --json');
      return (JSON.parse(r.stdout) as { name: string }[]).map((m) => m.name);
    };

    it('creates, lists and inspects a volume', async () => {
      assertExit(await hf('volume', 'create', 'v1', '--size', '96M', '--extent-size', '1M'), 0, 'create v1');
      const table = await hf('volume', 'list');
      assertExit(table, 0, 'volume list');
      assert.match(table.stdout, /^v1\s+96 MiB\s+1 MiB\s+rw/m);
      const r = await hf('volume', 'list', '--json');
      assertExit(r, 0, 'volume list --json');
      const manifests = JSON.parse(r.stdout) as { name: string; size: number; extentSize: number }[];
      assert.deepEqual(
        manifests.map(({ name, size, extentSize }) => ({ name, size, extentSize })),
        [{ name: 'v1', size: 96 * MiB, extentSize: MiB }],
      );
      const info = await inspect('v1');
      assert.equal(info.baseExtents, 0);
      assert.equal(info.deltas, 0);
    });

    it('refuses an existing volume, a bad size and a bad extent size', async () => {
      assertExit(await hf('volume', 'create', 'v1', '--size', '96M'), EXIT.exists, 'create v1 again');
      const badSize = await hf('volume', 'create', 'v2', '--size', '12X');
      assertExit(badSize, EXIT.usage, '--size 12X');
      assert.match(badSize.stderr, /--size/);
      assertExit(await hf('volume', 'create', 'v2', '--size', '12M', '--extent-size', '3M'), EXIT.usage, '--extent-size 3M');
      assert.deepEqual(await listNames(), ['v1']);
    });

    it('imports an image without its holes and exports it back byte for byte, sparse', async (t: TestContext) => {
      const img = imageWithHoles();
      await writeFile(file('in.img'), img);
      const imported = await hf('import', file('in.img'), 'imp', '--extent-size', '1M');
      assertExit(imported, 0, 'import');
      const expectedExtents = nonZeroExtents(img, MiB);
      assert.equal(expectedExtents, 34);
      assert.match(imported.stdout, new RegExp(`\\b${expectedExtents} extents uploaded, 6 zero extents skipped`));
      t.diagnostic(`${kind}: ${imported.stdout.trim()}`);
      const info = await inspect('imp');
      assert.equal(info.size, 40 * MiB);
      assert.equal(info.baseExtents, expectedExtents);

      const exported = await hf('export', 'imp', file('out.img'));
      assertExit(exported, 0, 'export');
      t.diagnostic(`${kind}: ${exported.stdout.trim()}`);
      const out = await readFile(file('out.img'));
      assert.equal(out.length, img.length);
      assert.equal(sha256(out), sha256(img));
      const st = await stat(file('out.img'));
      assert.ok(st.blocks * 512 < st.size, `exported file allocates ${st.blocks * 512} of ${st.size} bytes: not sparse`);
    });

    it('imports a file whose size is not a multiple of the extent size', async () => {
      const img = randomBytes(5 * MiB + 1000);
      await writeFile(file('odd.img'), img);
      assertExit(await hf('import', file('odd.img'), 'odd', '--extent-size', '1M'), 0, 'import odd');
      const info = await inspect('odd');
      assert.equal(info.size, 5 * MiB + 1024);
      assert.equal(info.baseExtents, 6, 'the short last extent has data too');

      assertExit(await hf('export', 'odd', file('odd-out.img')), 0, 'export odd');
      const out = await readFile(file('odd-out.img'));
      assert.equal(out.length, 5 * MiB + 1024);
      assert.equal(sha256(out.subarray(0, img.length)), sha256(img));
      assert.ok(out.subarray(img.length).every((b) => b === 0));
    });

    it('imports over an existing volume only with --force, replacing all of it', async () => {
      const img = randomBytes(30 * MiB);
      img.fill(0, 0, 2 * MiB);
      await writeFile(file('second.img'), img);
      assertExit(await hf('import', file('second.img'), 'imp'), EXIT.exists, 'import over imp without --force');
      const forced = await hf('import', file('second.img'), 'imp', '--force');
      assertExit(forced, 0, 'import --force');
      assert.match(forced.stdout, /\b28 extents uploaded, 12 zero extents skipped/);
      assert.equal((await inspect('imp')).baseExtents, 28);

      assertExit(await hf('export', 'imp', file('second-out.img')), 0, 'export');
      const expected = Buffer.concat([img, Buffer.alloc(10 * MiB)]);
      assert.equal(sha256(await readFile(file('second-out.img'))), sha256(expected));
    });

    it('refuses to export over an existing file without --force', async () => {
      const before = await readFile(file('out.img'));
      const refused = await hf('export', 'imp', file('out.img'));
      assertExit(refused, EXIT.usage, 'export over an existing file');
      assert.match(refused.stderr, /exists.*--force/);
      assert.equal(sha256(await readFile(file('out.img'))), sha256(before), 'the file is untouched');
      assertExit(await hf('export', 'imp', file('out.img'), '--force'), 0, 'export --force');
      assert.equal(sha256(await readFile(file('out.img'))), sha256(await readFile(file('second-out.img'))));
    });

    it('deletes a volume; garbage collection then frees all its objects', async () => {
      assert.ok((await collect(store.list(volumePrefix('imp')))).length > 0);
      assertExit(await hf('volume', 'delete', 'imp'), 0, 'delete imp');
      assert.ok(!(await listNames()).includes('imp'));
      const gc = await hf('gc', '--gc-grace', '0');
      assertExit(gc, 0, 'gc');
      assert.match(gc.stdout, /deleted [1-9]\d* /);
      assert.deepEqual(await collect(store.list(volumePrefix('imp'))), []);
    });

    it('exits with 4 for a volume that does not exist', async () => {
      assertExit(await hf('volume', 'inspect', 'nope'), EXIT.notFound, 'inspect nope');
      assertExit(await hf('volume', 'delete', 'nope'), EXIT.notFound, 'delete nope');
      assertExit(await hf('export', 'nope', file('nope.img')), EXIT.notFound, 'export nope');
      await assert.rejects(stat(file('nope.img')), { code: 'ENOENT' });
    });

    it('uploads the journal backlog of a stopped gateway before export and import', async () => {
      // More dirty extents than uploads in flight, so that opening the volume alone does not upload them all.
      assertExit(await hf('volume', 'create', 'jv', '--size', '16M', '--extent-size', '1M'), 0, 'create jv');
      const written = Buffer.alloc(12 * MiB, 0xab);
      await leaveBacklog(store, fx.journalRoot, 'jv', 1.5 * MiB, written);
      assert.equal((await inspect('jv')).deltas, 0, 'the backlog is only in the journal');

      assertExit(await hf('export', 'jv', file('jv.img')), 0, 'export jv');
      const exported = await readFile(file('jv.img'));
      assert.equal(sha256(exported.subarray(1.5 * MiB, 13.5 * MiB)), sha256(written), 'every acknowledged write is exported');
      assert.equal(nonZeroExtents(exported, MiB), 13);

      await leaveBacklog(store, fx.journalRoot, 'jv', 2.5 * MiB, Buffer.alloc(10 * MiB, 0xcd));
      const img = Buffer.alloc(16 * MiB);
      img.fill(0x11, 0, 1000);
      await writeFile(file('jv-new.img'), img);
      assertExit(await hf('import', file('jv-new.img'), 'jv', '--force'), 0, 'import over jv');
      assert.equal(await pendingJournalRecords(store, fx.journalRoot, 'jv'), 0, 'nothing is left to replay over the import');
      assertExit(await hf('export', 'jv', file('jv-after.img')), 0, 'export jv again');
      assert.equal(sha256(await readFile(file('jv-after.img'))), sha256(img));
    });

    it('refuses to import into a served volume, and exports it through a snapshot the gateway takes', async () => {
      const gateway = await startServe(
        [...fx.args, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--create-volume', '', '--volumes', 'v1', '--lease-ttl', '3s'],
        { cwd: tmp, env: fx.env },
      );
      try {
        await writeFile(file('small.img'), randomBytes(MiB));
        const refused = await hf('import', file('small.img'), 'v1', '--force');
        assertExit(refused, EXIT.locked, 'import into a served volume');
        assert.match(refused.stderr, /volume v1 is served by gateway/);
        const exported = await hf('export', 'v1', file('v1.img'));
        assertExit(exported, 0, 'export of a served volume');
        assert.equal((await stat(file('v1.img'))).size, 96 * MiB);
        assert.deepEqual((await inspect('v1')).snapshots, [], 'the temporary snapshot is gone');
      } finally {
        const { code, signal } = await gateway.stop('SIGTERM');
        assert.equal(signal, null);
        assert.equal(code, 0, `gateway exit code\n${gateway.output().stderr}`);
      }
      assert.equal((await inspect('v1')).baseExtents, 0, 'the refused import wrote nothing');
    });

    it('stops serve with exit code 2 when a setting in the environment is invalid', async () => {
      const r = await runCli(['serve', ...fx.args, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'], {
        cwd: tmp,
        env: { ...fx.env, HOLDFAST_CACHE_SIZE: 'lots' },
      });
      assertExit(r, EXIT.usage, 'serve with HOLDFAST_CACHE_SIZE=lots');
      assert.match(r.stderr, /HOLDFAST_CACHE_SIZE/);
    });
  });
}

/** Writes through a Volume and closes it without uploading, as a gateway stopped with a backlog would. */
async function leaveBacklog(store: ObjectStore, journalRoot: string, name: string, offset: number, data: Buffer): Promise<void> {
  const volume = await openVolume(store, journalRoot, name);
  await volume.write(offset, data, true);
  await volume.close();
}

async function pendingJournalRecords(store: ObjectStore, journalRoot: string, name: string): Promise<number> {
  const volume = await openVolume(store, journalRoot, name);
  const n = volume.stats().pendingEntries;
  await volume.close();
  return n;
}

async function openVolume(store: ObjectStore, journalRoot: string, name: string): Promise<Volume> {
  return openTestVolume(store, Volume.journalDirFor(journalRoot, name), {
    name,
    cacheBytes: 16 * MiB,
    segmentBytes: 8 * MiB,
    // Long enough that nothing is uploaded before close: the backlog must stay in the journal.
    uploadDelayMs: 3_600_000,
    // The CLI must see the journal as its own: the same journal identity the CLI finds in the directory.
    owner: await cliOwner(journalRoot),
  });
}

async function cliOwner(journalRoot: string) {
  const { journalIdentity } = await import('../../gateway/volume/journal-identity.js');
  const { testOwner } = await import('../helpers/volume-fixture.js');
  return { ...testOwner(await journalIdentity(journalRoot)), pid: 1 << 22 };
}

cliSuite('local directory', localFixture);
cliSuite('S3', s3Fixture);
