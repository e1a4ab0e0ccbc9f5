/**
 * Snapshots and clones of a served volume on the real S3 server: a snapshot taken while fio writes
 * with verify and a second client writes stamped blocks is the volume as of one instant; a clone holds
 * the snapshot and diverges without changing its parent; once snapshots and clones are deleted,
 * garbage collection returns the store to what the volume refers to.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { collectGarbage } from '../../gateway/image/gc.js';
import { isDataObjectKey } from '../../gateway/image/layout.js';
import { openStore } from '../../gateway/store/open-store.js';
import { type CliResult, runCli } from '../helpers/cli-process.js';
import { type GatewayProcess, type Stores, type StoreTarget, startGateway, startStores } from '../helpers/gateway-process.js';
import { NbdClient } from '../helpers/nbd-client.js';
import { runTool } from '../helpers/run-tool.js';
import { prefixMismatch, stampedWrite, type Write } from '../helpers/stamped-writes.js';

const MiB = 2 ** 20;
const VOLUME = 'snap';
const SIZE = 64 * MiB;
/** fio owns the first half, the stamped writer the second. */
const STAMPED = { start: 32 * MiB, end: 64 * MiB };
const ARGS = ['--extent-size', '1MiB', '--cache-size', '96MiB', '--upload-delay', '200ms', '--lease-ttl', '6s', '--gc-interval', '0'];

function assertExit(r: CliResult, code: number, what: string): void {
  assert.equal(r.code, code, `${what}: exit ${r.code}, expected ${code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
}

describe('snapshots and clones (S3 store)', () => {
  let stores: Stores;
  let store: StoreTarget;
  let work = '';
  let gw: GatewayProcess | undefined;
  const cli = (...args: string[]) =>
    runCli([...args, ...store.args, '--journal-dir', path.join(work, 'cli-journal')], { cwd: work, env: store.env });

  before(async () => {
    stores = await startStores('s3');
    store = await stores.fresh();
    // The store this test opens itself finds the credentials where the gateway's does.
    Object.assign(process.env, store.env);
    work = await stores.tempDir('work');
  });
  after(async () => {
    await gw?.kill('SIGKILL');
    await stores.dispose();
  });

  it('a snapshot taken under load is the volume as of one instant', { timeout: 900_000 }, async (t: TestContext) => {
    // Only this volume: the clone below is served by a gateway of its own.
    gw = await startGateway({
      store,
      journalDir: path.join(work, 'journal'),
      createVolume: `${VOLUME}=${SIZE}`,
      args: [...ARGS, '--volumes', VOLUME],
    });
    const fio = runTool('fio', [
      '--name=load',
      '--ioengine=nbd',
      `--uri=${gw.uri(VOLUME)}`,
      '--rw=randwrite',
      '--bs=4k',
      '--iodepth=16',
      '--size=16M',
      '--offset=0',
      '--loops=2',
      '--verify=crc32c',
      '--do_verify=1',
      '--output-format=json',
    ]);
    const client = await NbdClient.connect({ host: '127.0.0.1', port: gw.port, exportName: VOLUME });
    const log: Write[] = [];
    let ackedBeforeSnapshot = 0;
    let snapshotAsked = false;
    let seq = 0;
    let at = STAMPED.start;
    const inFlight = new Set<Promise<void>>();
    const writer = (async () => {
      while (seq < 3000) {
        const length = 512 + ((seq * 7919) % (64 * 1024));
        if (at + length > STAMPED.end) at = STAMPED.start;
        const w = stampedWrite(++seq, at, length);
        at += length;
        log.push(w);
        const p = client.write(w.offset, w.data).then(() => {
          if (!snapshotAsked) ackedBeforeSnapshot = Math.max(ackedBeforeSnapshot, w.seq);
        });
        const tracked = p.finally(() => inFlight.delete(tracked));
        inFlight.add(tracked);
        if (inFlight.size >= 16) await Promise.race(inFlight);
        // Consecutive writes never overlap while in flight: each starts where the last ended.
      }
      await Promise.all(inFlight);
    })();
    // Mid-way through the stamped writes, whatever the machine's speed.
    while (seq < 1200) await new Promise((r) => setTimeout(r, 50));
    snapshotAsked = true;
    const created = await cli('snapshot', 'create', VOLUME, 's1');
    assertExit(created, 0, 'snapshot create');
    t.diagnostic(created.stdout.trim());
    await writer;
    const fioResult = await fio;
    assert.equal(fioResult.code, 0, `fio with verify: ${fioResult.stderr}`);
    await client.disconnect();

    assertExit(await cli('export', `${VOLUME}@s1`, path.join(work, 's1.img')), 0, 'export the snapshot');
    const image = await readFile(path.join(work, 's1.img'));
    const { k, mismatch } = prefixMismatch(image, log, new Set(), STAMPED);
    assert.equal(mismatch, undefined, 'the snapshot holds the stamped writes up to one of them, and nothing after it');
    assert.ok(
      k >= ackedBeforeSnapshot,
      `every write acknowledged before the snapshot was asked for is in it (${k} ≥ ${ackedBeforeSnapshot})`,
    );
    assert.ok(k < seq, 'writes after the snapshot are not in it');
    t.diagnostic(`snapshot holds stamped writes 1..${k} of ${seq}; ${ackedBeforeSnapshot} were acknowledged before it was asked for`);
  });

  it('a clone holds the snapshot and diverges without changing its parent', { timeout: 120_000 }, async () => {
    assertExit(await cli('volume', 'clone', `${VOLUME}@s1`, 'c1'), 0, 'clone');
    assertExit(await cli('export', 'c1', path.join(work, 'c1.img')), 0, 'export the clone');
    assert.ok(
      (await readFile(path.join(work, 'c1.img'))).equals(await readFile(path.join(work, 's1.img'))),
      'the clone starts as the snapshot',
    );
    const other = await startGateway({
      store,
      journalDir: path.join(work, 'journal-c1'),
      createVolume: '',
      args: [...ARGS, '--volumes', 'c1'],
    });
    try {
      const c = await NbdClient.connect({ host: '127.0.0.1', port: other.port, exportName: 'c1' });
      await c.write(40 * MiB, Buffer.alloc(MiB, 0xc1));
      await c.disconnect();
    } finally {
      assert.equal(await other.stop(), 0);
    }
    assertExit(await cli('export', `${VOLUME}@s1`, path.join(work, 's1-again.img')), 0, 'export the snapshot again');
    assert.ok(
      (await readFile(path.join(work, 's1-again.img'))).equals(await readFile(path.join(work, 's1.img'))),
      'the parent snapshot is unchanged',
    );
    assertExit(await cli('export', 'c1', path.join(work, 'c1-after.img')), 0, 'export the clone again');
    const after = await readFile(path.join(work, 'c1-after.img'));
    assert.ok(after.subarray(40 * MiB, 41 * MiB).equals(Buffer.alloc(MiB, 0xc1)), 'the clone has its own write');
  });

  it(
    'after snapshots and clones are deleted, garbage collection returns the store to the bytes the volume refers to',
    { timeout: 120_000 },
    async (t: TestContext) => {
      assert.equal(await gw!.stop(), 0);
      gw = undefined;
      assertExit(await cli('snapshot', 'delete', VOLUME, 's1'), 0, 'delete the snapshot');
      assertExit(await cli('volume', 'delete', 'c1'), 0, 'delete the clone');
      const gc = await cli('gc', '--gc-grace', '0');
      assertExit(gc, 0, 'gc');
      t.diagnostic(gc.stdout.trim());
      const arg = (flag: string) => store.args[store.args.indexOf(flag) + 1]!;
      const s3 = openStore({ storeUrl: arg('--store'), s3Endpoint: arg('--s3-endpoint') });
      try {
        let stored = 0;
        for await (const info of s3.listDetailed('volumes/')) if (isDataObjectKey(info.key)) stored += info.size;
        const report = await collectGarbage(s3, { graceMs: 0, dryRun: true });
        t.diagnostic(`stored ${stored} bytes, referenced ${report.referencedBytes}`);
        assert.ok(report.referencedBytes > 0);
        assert.ok(
          Math.abs(stored - report.referencedBytes) <= 0.05 * report.referencedBytes,
          `stored ${stored} bytes, the volume refers to ${report.referencedBytes}`,
        );
      } finally {
        await s3.close();
      }
    },
  );
});
