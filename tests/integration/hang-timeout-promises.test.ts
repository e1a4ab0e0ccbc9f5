import assert from 'node:assert/strict';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import type { HoldfastEvent } from '../../shared/events.js';
import { loggedEvents, scrapeMetrics, volumeStatus } from '../helpers/admin-api.js';
import { type GatewayProcess, type StoreTarget, startGateway } from '../helpers/gateway-process.js';
import { mountTmpfs } from '../helpers/journal-disks.js';
import { NbdClient, NbdReplyError } from '../helpers/nbd-client.js';
import { startS3FaultProxy } from '../helpers/s3-fault-proxy.js';
import { startS3Server } from '../helpers/s3-server.js';

/**
 * The hang timeout when uploads fail but the store still answers the probe: a full local store
 * (PUT fails with ENOSPC, `stat` answers) and an S3 store throttling writes (PUT answered 503
 * SlowDown through a fault proxy, LIST and GET answered). Writes past the journal limit wait for
 * uploads and are held; the probe keeps answering. The held writes must fail with EIO within 100 ms
 * of the timeout, after one episode, with the volume in `hang` all along — a probe answer must not
 * end the episode and restart its clock.
 */

const MiB = 1024 * 1024;
const KiB = 1024;
const VOLUME = 'vol';
const HANG_TIMEOUT_MS = 3000;
const ARGS = [
  '--extent-size',
  '1MiB',
  '--cache-size',
  '2MiB',
  '--upload-delay',
  '0',
  '--journal-limit',
  '2MiB',
  '--segment-size',
  '1MiB',
  '--hang-timeout',
  `${HANG_TIMEOUT_MS / 1000}s`,
];
/** The behaviour's documented bound. */
const TIMEOUT_ACCURACY_MS = 100;
/** What the client's view adds: the reply crosses a loopback socket to this busy test process. */
const CLIENT_MEASUREMENT_ALLOWANCE_MS = 150;
const EIO = 5;

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Write {
  readonly offset: number;
  doneAt: number | undefined;
  error: number | string | undefined;
}

function write(client: NbdClient, offset: number, length: number): Write {
  const w: Write = { offset, doneAt: undefined, error: undefined };
  client.write(offset, Buffer.alloc(length, (offset / length) % 251)).then(
    () => {
      w.doneAt = now();
    },
    (err: unknown) => {
      w.doneAt = now();
      w.error = err instanceof NbdReplyError ? err.errno : String(err);
    },
  );
  return w;
}

function ioHangEvents(gw: GatewayProcess): Extract<HoldfastEvent, { kind: 'io-hang' }>[] {
  return loggedEvents(gw.logs).filter((e): e is Extract<HoldfastEvent, { kind: 'io-hang' }> => e.kind === 'io-hang');
}

/**
 * Fills the journal while uploads fail, watches the status until the held writes are answered, and
 * checks the promise: one episode, `hang` throughout, EIO within the bound of the deadline.
 */
async function timeoutKeptWhileProbeAnswers(t: TestContext, gw: GatewayProcess, breakUploads: () => Promise<void>): Promise<void> {
  const client = await NbdClient.connect({ host: '127.0.0.1', port: gw.port, exportName: VOLUME });
  try {
    await breakUploads();
    // 2 MiB of journal takes fewer than eight 256 KiB writes; the rest wait for uploads that fail.
    const writes = Array.from({ length: 16 }, (_, i) => write(client, 8 * MiB + i * 256 * KiB, 256 * KiB));
    let episode: { id: string; deadline: number } | undefined;
    const states = new Set<string>();
    const episodes = new Set<string>();
    for (;;) {
      const s = await volumeStatus(gw.adminUrl, VOLUME);
      const unanswered = writes.filter((w) => w.doneAt === undefined).length;
      if (s.episode !== null) {
        episodes.add(s.episode.id);
        episode ??= { id: s.episode.id, deadline: Date.parse(s.episode.deadline ?? '') };
      }
      if (episode !== undefined && unanswered > 0) states.add(s.state);
      if (unanswered === 0) break;
      assert.ok(episode === undefined || now() < episode.deadline + 5000, 'held writes still unanswered 5 s after the deadline');
      await sleep(100);
    }
    assert.ok(episode !== undefined, 'the writes past the journal limit were held');
    const held = writes.filter((w) => w.error !== undefined);
    assert.ok(held.length > 0, 'some writes were held and failed at the timeout');
    for (const w of held) assert.equal(w.error, EIO, `write at ${w.offset}`);
    const lateness = held.map((w) => w.doneAt! - episode.deadline);
    t.diagnostic(
      `${writes.length - held.length} writes fit in the journal; ${held.length} held, answered EIO ${lateness.map((l) => l.toFixed(1)).join(', ')} ms after the deadline`,
    );
    assert.ok(
      Math.max(...lateness.map(Math.abs)) <= TIMEOUT_ACCURACY_MS + CLIENT_MEASUREMENT_ALLOWANCE_MS,
      'EIO within the bound of the deadline',
    );
    assert.deepEqual([...states], ['hang'], 'the volume was in hang all along while writes were held');
    assert.deepEqual([...episodes], [episode.id], 'one episode');

    // The EIO replies can overtake the event's log line on its way through the gateway's buffered stderr.
    await waitFor('io-hang-timeout set in the log', () => loggedEvents(gw.logs).some((e) => e.kind === 'io-hang-timeout' && e.set));
    const events = loggedEvents(gw.logs);
    const timeout = events.find((e) => e.kind === 'io-hang-timeout' && e.set);
    assert.ok(timeout !== undefined, 'io-hang-timeout set');
    const fired = Date.parse(timeout.time) - episode.deadline;
    t.diagnostic(`io-hang-timeout ${fired} ms after the deadline`);
    assert.ok(Math.abs(fired) <= TIMEOUT_ACCURACY_MS, `the timeout fired ${fired} ms from its deadline`);
    assert.equal(ioHangEvents(gw).filter((e) => e.set).length, 1, 'one io-hang episode began');
    assert.equal(
      events.filter((e) => e.kind === 'storage-unavailable' && !e.set).length,
      0,
      'storage-unavailable was never cleared by a probe answer',
    );
    const metrics = await scrapeMetrics(gw.adminUrl);
    assert.equal(metrics.value('holdfast_hang_episodes_total', { volume: VOLUME }), 1);
    assert.equal(metrics.value('holdfast_hang_timeouts_total', { volume: VOLUME }), 1);
    assert.equal((await volumeStatus(gw.adminUrl, VOLUME)).state, 'timed-out');
  } finally {
    client.destroy();
  }
}

describe('the hang timeout while the probe answers and uploads fail', { concurrency: false }, () => {
  it('a full local store: held writes fail at the timeout, one episode, hang throughout', { timeout: 60_000 }, async (t) => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'holdfast-full-store-'));
    const storeDir = path.join(root, 'store');
    const unmount = await mountTmpfs(storeDir, 8 * MiB);
    let gw: GatewayProcess | undefined;
    try {
      const store: StoreTarget = { kind: 'local', args: ['--store', storeDir], env: {} };
      gw = await startGateway({ store, journalDir: path.join(root, 'journal'), createVolume: `${VOLUME}=48MiB`, args: ARGS });
      const filler = path.join(storeDir, 'filler');
      await timeoutKeptWhileProbeAnswers(t, gw, async () => {
        const file = await open(filler, 'w');
        try {
          const chunk = Buffer.alloc(256 * KiB, 1);
          for (;;) await file.write(chunk);
        } catch (err) {
          assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC', 'the store disk filled up');
        } finally {
          await file.close();
        }
      });
      const status = await volumeStatus(gw.adminUrl, VOLUME);
      assert.equal(status.errorClass, 'no-space');
      await rm(filler);
      await waitFor('the timeout to clear once uploads succeed', () =>
        loggedEvents(gw!.logs).some((e) => e.kind === 'io-hang-timeout' && !e.set),
      );
    } finally {
      await gw?.kill('SIGKILL');
      await unmount();
      await rm(root, { recursive: true, force: true });
    }
  });

  it(
    'S3 answering PUT with 503 SlowDown while LIST succeeds: held writes fail at the timeout, one episode, hang throughout',
    { timeout: 60_000 },
    async (t) => {
      const root = await mkdtemp(path.join(os.tmpdir(), 'holdfast-slow-puts-'));
      const s3 = await startS3Server();
      const proxy = await startS3FaultProxy({ host: '127.0.0.1', port: s3.port });
      let gw: GatewayProcess | undefined;
      try {
        const store: StoreTarget = {
          kind: 's3',
          args: ['--store', `s3://${s3.bucket}/slow-puts`, '--s3-endpoint', proxy.endpoint],
          env: s3.env,
        };
        gw = await startGateway({ store, journalDir: path.join(root, 'journal'), createVolume: `${VOLUME}=48MiB`, args: ARGS });
        await timeoutKeptWhileProbeAnswers(t, gw, async () => {
          proxy.setMode({ kind: 'slow-down-puts' });
        });
        const status = await volumeStatus(gw.adminUrl, VOLUME);
        assert.equal(status.errorClass, 'transient');
        assert.ok(
          (proxy.counts.injected.SlowDown ?? 0) > 0 && proxy.counts.forwarded > 0,
          'PUTs were refused while other requests went through',
        );
        t.diagnostic(
          `the proxy answered ${proxy.counts.injected.SlowDown} PUTs with SlowDown and forwarded ${proxy.counts.forwarded} requests`,
        );
        proxy.setMode({ kind: 'pass' });
        await waitFor('the timeout to clear once uploads succeed', () =>
          loggedEvents(gw!.logs).some((e) => e.kind === 'io-hang-timeout' && !e.set),
        );
      } finally {
        await gw?.kill('SIGKILL');
        await proxy.close();
        await s3.close();
        await rm(root, { recursive: true, force: true });
      }
    },
  );
});

async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}
