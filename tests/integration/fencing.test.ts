/**
 * Fencing with real gateway processes (docs/volume-format-2.md, "Fencing"): a zombie gateway frozen
 * past its lease and then continued, two gateways started at the same instant, a gateway whose store
 * does not answer at start. Every check reads the volume back through the new owner and from the
 * store alone.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { readHead } from '../../gateway/image/take-volume.js';
import { VolumeImage } from '../../gateway/image/volume-image.js';
import { openStore } from '../../gateway/store/open-store.js';
import {
  type GatewayProcess,
  GatewayStartError,
  type Stores,
  type StoreTarget,
  startGateway,
  startStores,
} from '../helpers/gateway-process.js';
import { NbdClient, NbdConnectionError } from '../helpers/nbd-client.js';
import { startS3Server } from '../helpers/s3-server.js';

const VOLUME = 'fenced';
const SIZE = 16 * 1024 * 1024;
const LEASE_MS = 3000;
/** Short leases, so that a zombie's lease runs out within seconds; uploads wait, so writes stay pending. */
const ARGS = ['--lease-ttl', `${LEASE_MS}ms`, '--extent-size', '1MiB', '--cache-size', '4MiB', '--upload-delay', '2s'];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The store as the gateway opens it; its S3 credentials are found where the gateway's are: in the environment. */
function openTarget(target: StoreTarget): ReturnType<typeof openStore> {
  const arg = (flag: string): string => target.args[target.args.indexOf(flag) + 1] ?? '';
  Object.assign(process.env, target.env);
  return openStore({ storeUrl: arg('--store'), ...(target.args.includes('--s3-endpoint') ? { s3Endpoint: arg('--s3-endpoint') } : {}) });
}

async function storeAlone(target: StoreTarget): Promise<Buffer> {
  const store = openTarget(target);
  try {
    const { head } = await readHead(store, VOLUME);
    const image = await VolumeImage.load(store, head);
    const out = Buffer.alloc(head.size);
    await image.read(0, head.size, out, 0);
    return out;
  } finally {
    await store.close();
  }
}

async function headEpoch(target: StoreTarget): Promise<number> {
  const store = openTarget(target);
  try {
    return (await readHead(store, VOLUME)).head.epoch;
  } finally {
    await store.close();
  }
}

/** A gateway that exited cannot be continued; one that is frozen must be, or it never dies. */
function continueIfStopped(gw: GatewayProcess): void {
  try {
    process.kill(gw.pid, 'SIGCONT');
  } catch {
    // Already gone.
  }
}

const connect = (gw: GatewayProcess) => NbdClient.connect({ host: '127.0.0.1', port: gw.port, exportName: VOLUME });

// On the real S3 server (conditional writes enforced by RGW) and on the local directory store (by its own compare-and-swap).
for (const kind of ['s3', 'local'] as const)
  describe(`fencing (${kind === 's3' ? 'S3' : 'local'} store)`, () => {
    let stores: Stores;
    before(async () => {
      stores = await startStores(kind);
    });
    after(async () => {
      await stores.dispose();
    });

    it(
      'a zombie continued after another gateway took its volume acknowledges nothing, changes nothing and loses its clients',
      { timeout: 120_000 },
      async (t: TestContext) => {
        const store = await stores.fresh();
        const journalDir = await stores.tempDir('journal');
        const a = await startGateway({ store, journalDir, createVolume: `${VOLUME}=${SIZE}`, args: ARGS });
        let b: GatewayProcess | undefined;
        try {
          const ca = await connect(a);
          const early = Buffer.alloc(64 * 1024, 0xa1);
          await ca.write(0, early);
          await ca.write(1024 * 1024, Buffer.alloc(4096, 0xa2));
          // Frozen with its writes still pending in the journal, and kept frozen past its lease.
          process.kill(a.pid, 'SIGSTOP');
          await sleep(LEASE_MS + 500);
          const started = performance.now();
          b = await startGateway({ store, journalDir, createVolume: '', args: ARGS });
          t.diagnostic(`B served ${Math.round(performance.now() - started)} ms after it started (the lease is ${LEASE_MS} ms)`);
          const cb = await connect(b);
          assert.ok((await cb.read(0, early.length)).equals(early), "B replays A's acknowledged writes from the shared journal");
          const fromB = Buffer.alloc(8192, 0xb1);
          await cb.write(4096, fromB);
          await cb.write(1024 * 1024, Buffer.alloc(4096, 0xb2));

          process.kill(a.pid, 'SIGCONT');
          // A's client goes on writing: none of it may be acknowledged.
          let acked = 0;
          let dropped: unknown;
          for (let i = 0; i < 20 && dropped === undefined; i++) {
            await ca.write(8 * 1024 * 1024 + i * 4096, Buffer.alloc(4096, 0xee)).then(
              () => acked++,
              (err: unknown) => {
                dropped = err;
              },
            );
          }
          assert.equal(acked, 0, 'the deposed gateway acknowledged a write');
          assert.ok(dropped instanceof NbdConnectionError, `A's client is disconnected, not answered: ${String(dropped)}`);
          await sleep(500);
          assert.ok(
            a.logs.some((l) => /deposed/.test(l.msg)),
            'A knows it was deposed',
          );
          assert.equal(await headEpoch(store), 2, "A's late commits were refused: the head is still B's");

          const expected = Buffer.alloc(SIZE);
          early.copy(expected, 0);
          fromB.copy(expected, 4096);
          expected.fill(0xb2, 1024 * 1024, 1024 * 1024 + 4096);
          assert.ok((await cb.read(0, SIZE)).equals(expected), "B holds B's data and every write either acknowledged");
          await cb.disconnect();
          assert.equal(await a.stop(), 0);
          assert.equal(await b.stop(), 0);
          b = undefined;
          assert.ok((await storeAlone(store)).equals(expected), 'the store alone holds the same, and nothing of A after its lease');
        } finally {
          continueIfStopped(a);
          await a.kill('SIGKILL');
          await b?.kill('SIGKILL');
        }
      },
    );

    it(
      'refuses to take a volume whose frozen owner has acknowledged writes only in its own journal, unless forced',
      { timeout: 120_000 },
      async () => {
        const store = await stores.fresh();
        // A cannot upload at all (a test-only failpoint): its acknowledged writes are only in its journal.
        const a = await startGateway({
          store,
          journalDir: await stores.tempDir('ja'),
          createVolume: `${VOLUME}=${SIZE}`,
          args: ARGS,
          env: { HOLDFAST_FAILPOINTS: 'upload.before-put=error*1000000' },
        });
        try {
          const ca = await connect(a);
          await ca.write(0, Buffer.alloc(4096, 0xa1));
          // The next renewal records how far A acknowledged.
          await sleep(LEASE_MS / 3 + 500);
          process.kill(a.pid, 'SIGSTOP');
          const bJournal = await stores.tempDir('jb');
          await assert.rejects(startGateway({ store, journalDir: bJournal, createVolume: '', args: ARGS }), (err: unknown) => {
            assert.ok(err instanceof GatewayStartError, String(err));
            assert.equal(err.exitCode, 3, err.stderr);
            assert.match(err.stderr, /had acknowledged 1 writes .* --force-takeover fenced/);
            return true;
          });
          const b = await startGateway({ store, journalDir: bJournal, createVolume: '', args: [...ARGS, '--force-takeover', VOLUME] });
          const cb = await connect(b);
          assert.ok((await cb.read(0, 4096)).equals(Buffer.alloc(4096)), "forced: A's write is lost, as the operator was told");
          await cb.disconnect();
          assert.equal(await b.stop(), 0);
        } finally {
          continueIfStopped(a);
          await a.kill('SIGKILL');
        }
      },
    );

    it(
      'of two gateways started at the same instant on one volume exactly one serves it, 20 times out of 20',
      { timeout: 600_000 },
      async (t: TestContext) => {
        const outcomes: string[] = [];
        for (let round = 0; round < 20; round++) {
          const store = await stores.fresh();
          const [x, y] = await Promise.allSettled([
            startGateway({
              store,
              journalDir: await stores.tempDir('jx'),
              createVolume: `${VOLUME}=${SIZE}`,
              args: [...ARGS, '--volumes', VOLUME],
            }),
            startGateway({
              store,
              journalDir: await stores.tempDir('jy'),
              createVolume: `${VOLUME}=${SIZE}`,
              args: [...ARGS, '--volumes', VOLUME],
            }),
          ]);
          const served = [x, y].filter((r) => r.status === 'fulfilled').map((r) => r.value);
          const refused = [x, y].filter((r) => r.status === 'rejected').map((r) => r.reason as unknown);
          outcomes.push(`${served.length}/${refused.length}`);
          try {
            assert.equal(served.length, 1, `round ${round}: ${served.length} gateways serve the volume`);
            for (const err of refused) {
              assert.ok(
                err instanceof GatewayStartError && err.exitCode === 3,
                `round ${round}: the loser must refuse with exit 3: ${String(err)}`,
              );
            }
          } finally {
            for (const gw of served) assert.equal(await gw.stop(), 0);
          }
        }
        t.diagnostic(`served/refused per round: ${outcomes.join(' ')}`);
      },
    );
  });

describe('a store that does not answer at start', () => {
  it(
    'answers nothing before it has read the head, holds the requests, and serves them once the store answers',
    { timeout: 120_000 },
    async (t: TestContext) => {
      const s3 = await startS3Server();
      const root = await mkdtemp(path.join(os.tmpdir(), 'hf-unreachable-'));
      const store: StoreTarget = { kind: 's3', args: ['--store', `s3://${s3.bucket}/u`, '--s3-endpoint', s3.endpoint], env: s3.env };
      const journalDir = path.join(root, 'journal');
      let gw: GatewayProcess | undefined;
      try {
        const first = await startGateway({ store, journalDir, createVolume: `${VOLUME}=${SIZE}`, args: ARGS });
        const c = await connect(first);
        await c.write(0, Buffer.alloc(4096, 0x5a));
        await c.disconnect();
        assert.equal((await first.kill('SIGKILL')).signal, 'SIGKILL');
        await s3.kill();
        gw = await startGateway({ store, journalDir, createVolume: '', args: [...ARGS, '--volumes', VOLUME] });
        assert.ok(
          gw.logs.some((l) => /unreachable/.test(l.msg)),
          'the gateway says why',
        );
        // Served here before, the volume is offered with its size, but nothing is read or answered
        // before its head is read and taken: requests wait, held, as in any outage.
        const c2 = await connect(gw);
        let answered = false;
        const read = c2.read(0, 4096).finally(() => (answered = true));
        const write = c2.write(8192, Buffer.alloc(4096, 0x6b)).finally(() => (answered = true));
        await sleep(1500);
        assert.equal(answered, false, 'no request is answered while the head cannot be read');
        await s3.restart();
        const back = performance.now();
        assert.ok((await read).equals(Buffer.alloc(4096, 0x5a)), 'with the journal replayed');
        await write;
        t.diagnostic(`held requests answered ${Math.round(performance.now() - back)} ms after the store came back`);
        assert.ok((await c2.read(8192, 4096)).equals(Buffer.alloc(4096, 0x6b)));
        await c2.disconnect();
        assert.equal(await gw.stop(), 0);
        gw = undefined;
      } finally {
        await gw?.kill('SIGKILL');
        await s3.close();
        await rm(root, { recursive: true, force: true });
      }
    },
  );
});
