import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { z } from 'zod';
import type { HoldfastEvent } from '../../shared/events.js';
import { loggedEvents, scrapeMetrics, setHangPolicy, volumeAction, volumeStatus, type VolumeStatus } from '../helpers/admin-api.js';
import { type GatewayProcess, type StoreTarget, startGateway, waitForJournalDrained } from '../helpers/gateway-process.js';
import { mountFailingDisk, mountTmpfs, type FailingDisk, type Unmount } from '../helpers/journal-disks.js';
import { NbdClient, NbdConnectionError, NbdReplyError } from '../helpers/nbd-client.js';
import { runTool } from '../helpers/run-tool.js';
import { startS3FaultProxy, type S3FaultProxy } from '../helpers/s3-fault-proxy.js';
import { type S3Server, startS3Server } from '../helpers/s3-server.js';
import { seededRandom } from '../helpers/seeded-random.js';

/**
 * I/O hang against real outages: the S3-protocol server behind the gateway is killed, frozen with
 * SIGSTOP, or made to answer with S3 errors through a fault proxy, while a raw NBD client records
 * which request got which answer and when. The only timings asserted are the feature's documented
 * bounds: held requests complete within 1.5 s of the store's return, and a hang timeout fails
 * held requests within 100 ms of its deadline.
 */

const MiB = 1024 * 1024;
const KiB = 1024;
const VOLUME = 'vol';
const VOLUME_SIZE = 48 * MiB;
const VOLUME_ARG = `${VOLUME}=${VOLUME_SIZE}`;
/** Extents 0..15 are written and uploaded first; with a 2-extent cache, reading them in turn always needs the store. */
const COLD_EXTENTS = 16;
/** Writes go above the cold extents, so that no read is served from the journal by accident. */
const WRITE_BASE = 24 * MiB;
const BASE_ARGS = ['--extent-size', '1MiB', '--cache-size', '2MiB', '--upload-delay', '0'];
const EIO = 5;

/** The documented bounds. */
const RECOVERY_BOUND_MS = 1500;
const TIMEOUT_ACCURACY_MS = 100;
/**
 * What the client's own view of a failure adds to the gateway's: the reply crosses a loopback socket
 * and waits for this test process's event loop, which is busy parsing the gateway's logs.
 */
const CLIENT_MEASUREMENT_ALLOWANCE_MS = 150;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** Wall-clock milliseconds with sub-millisecond resolution, comparable with the gateway's timestamps. */
const now = (): number => performance.timeOrigin + performance.now();

/**
 * The bytes the test expects at [offset, offset+length): every 4-byte word is a function of its
 * position in the volume and of `tag`, so a read that returns another place's or another write's
 * bytes is caught.
 */
function pattern(offset: number, length: number, tag: number): Buffer {
  assert.ok(offset % 4 === 0 && length % 4 === 0, 'patterns are whole words');
  const out = Buffer.allocUnsafe(length);
  const first = offset / 4;
  for (let i = 0; i < length / 4; i++) out.writeUInt32LE((Math.imul(first + i, 0x9e3779b1) ^ Math.imul(tag, 0x85ebca77)) >>> 0, i * 4);
  return out;
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** One NBD request as the client saw it. */
interface Outcome {
  readonly op: 'read' | 'write';
  readonly offset: number;
  readonly length: number;
  readonly issuedAt: number;
  doneAt: number | undefined;
  /** undefined: success; else the NBD errno, 'closed' for a lost connection, or what else went wrong. */
  error: number | string | undefined;
  readonly done: Promise<void>;
}

function describeError(err: unknown): number | string {
  if (err instanceof NbdReplyError) return err.errno;
  if (err instanceof NbdConnectionError) return 'closed';
  return err instanceof Error ? err.message : String(err);
}

/** Issues a request and records when and how it was answered; never rejects. */
function track(
  op: 'read' | 'write',
  offset: number,
  length: number,
  request: Promise<unknown>,
  check?: (value: unknown) => string | undefined,
): Outcome {
  const outcome: Outcome = {
    op,
    offset,
    length,
    issuedAt: now(),
    doneAt: undefined,
    error: undefined,
    done: request.then(
      (value) => {
        outcome.doneAt = now();
        outcome.error = check?.(value);
      },
      (err: unknown) => {
        outcome.doneAt = now();
        outcome.error = describeError(err);
      },
    ),
  };
  return outcome;
}

function coldRead(client: NbdClient, extent: number, at: number, length: number): Outcome {
  const offset = extent * MiB + at;
  return track('read', offset, length, client.read(offset, length), (value) =>
    Buffer.isBuffer(value) && value.equals(pattern(offset, length, 0)) ? undefined : `read ${offset}+${length} returned the wrong bytes`,
  );
}

function isSettled(outcome: Outcome): boolean {
  return outcome.doneAt !== undefined;
}

/**
 * Readers that keep one cold read each in flight (extents in turn, so each read misses the cache)
 * and writers that keep writing 64 KiB blocks to a region of their own, remembering the last
 * acknowledged bytes of each block.
 */
class Workload {
  readonly outcomes: Outcome[] = [];
  /** Offset → the last acknowledged write there. */
  readonly written = new Map<number, Buffer>();
  private running = true;
  private readonly lanes: Promise<void>[] = [];

  constructor(
    private readonly client: NbdClient,
    readonly readers: number,
    readonly writers: number,
  ) {
    for (let r = 0; r < readers; r++) this.lanes.push(this.readLane(r));
    for (let w = 0; w < writers; w++) this.lanes.push(this.writeLane(w));
  }

  private async readLane(lane: number): Promise<void> {
    for (let i = 0; this.running; i++) {
      const extent = (lane + i * this.readers) % COLD_EXTENTS;
      const at = ((i * 7 + lane * 3) % 15) * 64 * KiB;
      const o = coldRead(this.client, extent, at, 64 * KiB);
      this.outcomes.push(o);
      await o.done;
    }
  }

  private async writeLane(lane: number): Promise<void> {
    const base = WRITE_BASE + lane * 2 * MiB;
    for (let i = 0; this.running; i++) {
      const offset = base + (i % 32) * 64 * KiB;
      const data = pattern(offset, 64 * KiB, 1000 * lane + i + 1);
      const o = track('write', offset, data.length, this.client.write(offset, data));
      this.outcomes.push(o);
      await o.done;
      if (o.error === undefined) this.written.set(offset, data);
      // Paced, so that a 10 s outage builds a backlog of some MiB, not of everything the disk takes.
      await sleep(20);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.lanes);
  }

  /**
   * Requests unanswered at `at` that had been waiting for a second or more by then: those held
   * through the outage, not those that happened to be in flight when it ended.
   */
  heldAt(at: number): Outcome[] {
    return this.outcomes.filter((o) => o.issuedAt <= at - 1000 && (o.doneAt === undefined || o.doneAt > at));
  }

  errors(): Outcome[] {
    return this.outcomes.filter((o) => o.doneAt !== undefined && o.error !== undefined);
  }

  /** Reads every acknowledged block back and returns the offsets whose bytes differ. */
  async lostWrites(client: NbdClient): Promise<number[]> {
    const lost: number[] = [];
    for (const [offset, data] of this.written) if (!(await client.read(offset, data.length)).equals(data)) lost.push(offset);
    return lost;
  }
}

/** `promise`, or a failure naming `what` after `ms`: a step that never ends fails the test with the gateway's logs. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what}: not done after ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits up to `ms` for the outcome; a request still unanswered then was held where it should not have been. */
async function settledWithin(o: Outcome, ms: number, what: string): Promise<void> {
  await Promise.race([o.done, sleep(ms)]);
  assert.ok(isSettled(o), `${what}: ${o.op} ${o.offset}+${o.length} got no answer within ${ms} ms (held instead of failed?)`);
}

function assertEio(o: Outcome, what: string): void {
  assert.equal(
    o.error,
    EIO,
    `${what}: ${o.op} ${o.offset}+${o.length} answered ${o.error === undefined ? 'success' : o.error}, expected EIO`,
  );
}

function assertOk(o: Outcome, what: string): void {
  assert.equal(o.error, undefined, `${what}: ${o.op} ${o.offset}+${o.length} failed: ${o.error}`);
}

async function heldCount(rig: Rig): Promise<number> {
  return (await rig.status()).held.requests;
}

/** Writes `count` blocks of `size` from `base` all at once (a deep queue) and tracks each. */
function burst(client: NbdClient, base: number, count: number, size: number, tag: number): { outcomes: Outcome[]; data: Buffer[] } {
  const outcomes: Outcome[] = [];
  const data: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const offset = base + i * size;
    const d = pattern(offset, size, tag);
    data.push(d);
    outcomes.push(track('write', offset, size, client.write(offset, d)));
  }
  return { outcomes, data };
}

async function readRange(client: NbdClient, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length);
  for (let at = 0; at < length; at += MiB) {
    const n = Math.min(MiB, length - at);
    (await client.read(offset + at, n)).copy(out, at);
  }
  return out;
}

function firstDifference(a: Buffer, b: Buffer): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** The bytes of [base, base+length) as the acknowledged writes left them, applied in acknowledgement order. */
class RegionModel {
  readonly bytes: Buffer;

  constructor(
    readonly base: number,
    readonly length: number,
  ) {
    this.bytes = Buffer.alloc(length);
  }

  apply(offset: number, data: Buffer): void {
    data.copy(this.bytes, offset - this.base);
  }

  /** A random whole-word range inside the region, up to `max` bytes. */
  pick(random: () => number, max: number): { offset: number; length: number } {
    const length = 4 * (1 + Math.floor((random() * max) / 4));
    const offset = this.base + 4 * Math.floor((random() * (this.length - length)) / 4);
    return { offset, length };
  }

  async check(client: NbdClient, what: string): Promise<void> {
    const actual = await readRange(client, this.base, this.length);
    const at = firstDifference(actual, this.bytes);
    assert.equal(at, -1, `${what}: byte ${this.base + at} differs from the last acknowledged write there`);
  }
}

interface RigOptions {
  /** Put the fault proxy between the gateway and the S3 server. */
  readonly proxy?: boolean;
  /** Mounts a disk of its own on the journal directory before the gateway starts; `work` is scratch space. */
  readonly journalDisk?: (journalDir: string, work: string) => Promise<Unmount>;
  /** `serve` flags beyond BASE_ARGS. */
  readonly args?: readonly string[];
}

/**
 * The S3 server of the whole file, Ceph's RADOS Gateway: one start of its cluster instead of one per
 * test. Each test's rig has its own prefix in its bucket, and leaves it answering.
 */
let s3: S3Server;
let rigs = 0;
before(async () => {
  s3 = await startS3Server();
});
after(async () => {
  await s3.close();
});

/**
 * One test's world: its own prefix on the S3 server (and a proxy), journal directory and gateway.
 * Everything it started is killed and removed by `dispose`, and the S3 server is running and
 * thawed again, whatever state the test left it in.
 */
class Rig {
  private readonly gateways: GatewayProcess[] = [];
  private readonly clients: NbdClient[] = [];
  private readonly cleanups: (() => Promise<void>)[] = [];
  gw!: GatewayProcess;

  private constructor(
    readonly root: string,
    readonly s3: S3Server,
    readonly prefix: string,
    readonly proxy: S3FaultProxy | undefined,
    readonly journalDir: string,
    readonly args: readonly string[],
  ) {}

  static async start(opts: RigOptions = {}): Promise<Rig> {
    const root = await mkdtemp(path.join(os.tmpdir(), 'holdfast-io-hang-'));
    const proxy = opts.proxy === true ? await startS3FaultProxy({ host: '127.0.0.1', port: s3.port }) : undefined;
    const rig = new Rig(root, s3, `io-hang-${++rigs}`, proxy, path.join(root, 'journal'), [...BASE_ARGS, ...(opts.args ?? [])]);
    try {
      if (opts.journalDisk !== undefined) rig.onDispose(await opts.journalDisk(rig.journalDir, root));
      rig.gw = await rig.startGateway({ createVolume: VOLUME_ARG });
    } catch (err) {
      await rig.dispose();
      throw err;
    }
    return rig;
  }

  get store(): StoreTarget {
    return {
      kind: 's3',
      args: ['--store', `s3://${this.s3.bucket}/${this.prefix}`, '--s3-endpoint', (this.proxy ?? this.s3).endpoint],
      env: this.s3.env,
    };
  }

  async startGateway(opts: { journalDir?: string; createVolume?: string; args?: readonly string[] } = {}): Promise<GatewayProcess> {
    const gw = await startGateway({
      store: this.store,
      journalDir: opts.journalDir ?? this.journalDir,
      createVolume: opts.createVolume ?? '',
      args: opts.args ?? this.args,
    });
    this.gateways.push(gw);
    return gw;
  }

  async connect(gw: GatewayProcess = this.gw): Promise<NbdClient> {
    const client = await NbdClient.connect({ host: '127.0.0.1', port: gw.port, exportName: VOLUME });
    this.clients.push(client);
    assert.equal(client.size, VOLUME_SIZE);
    return client;
  }

  tempDir(label: string): Promise<string> {
    return mkdtemp(path.join(this.root, `${label}-`));
  }

  /** Runs `fn` at dispose, before the temp tree is removed (unmounts, for instance). */
  onDispose(fn: () => Promise<void>): void {
    this.cleanups.push(fn);
  }

  status(): Promise<VolumeStatus> {
    return volumeStatus(this.gw.adminUrl, VOLUME);
  }

  events(gw: GatewayProcess = this.gw): HoldfastEvent[] {
    return loggedEvents(gw.logs).filter((e) => e.volume === VOLUME);
  }

  /** Writes the cold extents and waits until they are in the store and out of the journal. */
  async preload(client: NbdClient): Promise<void> {
    await this.storeExtents(
      client,
      Array.from({ length: COLD_EXTENTS }, (_, e) => e),
    );
  }

  /** Writes these extents (as `coldRead` expects them) and waits until they are in the store and out of the journal. */
  async storeExtents(client: NbdClient, extents: readonly number[]): Promise<void> {
    for (let i = 0; i < extents.length; i += 4) {
      await Promise.all(extents.slice(i, i + 4).map((e) => client.write(e * MiB, pattern(e * MiB, MiB, 0))));
    }
    await waitForJournalDrained(this.journalDir, VOLUME, 30_000);
  }

  /** The gateway's warnings and errors, for the diagnosis of a failed test. */
  diagnose(t: TestContext): void {
    for (const gw of this.gateways) {
      const lines = gw.logs.filter((l) => l.level >= 40 || l.event !== undefined);
      for (const line of lines.slice(-60)) t.diagnostic(`gateway ${gw.pid}: ${JSON.stringify(line)}`);
      for (const line of gw.otherStderr.slice(-20)) t.diagnostic(`gateway ${gw.pid} stderr: ${line}`);
    }
  }

  /** Every step runs even if an earlier one fails; the first failure is reported. */
  async dispose(): Promise<void> {
    const failures: unknown[] = [];
    const step = async (fn: () => Promise<unknown>): Promise<void> => {
      await fn().catch((err: unknown) => failures.push(err));
    };
    for (const c of this.clients) c.destroy();
    await step(() => Promise.all(this.gateways.map((gw) => gw.kill('SIGKILL'))));
    if (this.proxy !== undefined) await step(() => this.proxy!.close());
    // The next test needs the server as it found it: thawed, and started again if it was killed.
    this.s3.thaw();
    await step(() => this.s3.restart());
    for (const fn of this.cleanups.reverse()) await step(fn);
    // A journal that could not be unmounted must not be deleted through: rm would empty the mount.
    if (failures.length === 0) await step(() => rm(this.root, { recursive: true, force: true }));
    if (failures.length > 0) throw failures[0];
  }
}

async function withRig(t: TestContext, opts: RigOptions, body: (rig: Rig) => Promise<void>): Promise<void> {
  const rig = await Rig.start(opts);
  try {
    await body(rig);
  } catch (err) {
    rig.diagnose(t);
    throw err;
  } finally {
    await rig.dispose();
  }
}

function conditionEvents(
  events: readonly HoldfastEvent[],
  kind: 'io-hang' | 'io-hang-timeout' | 'storage-unavailable',
): Extract<HoldfastEvent, { set: boolean }>[] {
  return events.filter((e): e is Extract<HoldfastEvent, { set: boolean }> => e.kind === kind);
}

/** The first episode of `kind` that began at or after `after` and has ended: its set and clear events. */
function episodeOf(events: readonly HoldfastEvent[], kind: 'io-hang' | 'io-hang-timeout' | 'storage-unavailable', after: number) {
  const list = conditionEvents(events, kind);
  const begin = list.find((e) => e.set && Date.parse(e.time) >= after);
  const end = begin === undefined ? undefined : list.find((e) => !e.set && e.episode === begin.episode);
  return { begin, end: end !== undefined && !end.set ? end : undefined };
}

const FioReportSchema = z.object({
  jobs: z
    .array(z.object({ error: z.number(), read: z.object({ io_bytes: z.number(), clat_ns: z.object({ max: z.number() }) }) }))
    .length(1),
});

/** fio prints "fio: connected to NBD server" on stdout before its JSON report. */
function fioReport(stdout: string): z.infer<typeof FioReportSchema>['jobs'][number] {
  return FioReportSchema.parse(JSON.parse(stdout.slice(stdout.indexOf('{')))).jobs[0]!;
}

const OUTAGE_MS = 10_000;
const READERS = 4;
const WRITERS = 2;

/**
 * The store goes away for 10 s under a read-and-write workload and comes back; `how` is a crash
 * (connections refused) or SIGSTOP (connections accepted and never answered).
 */
async function outageUnderWorkload(t: TestContext, how: 'kill' | 'freeze'): Promise<void> {
  await withRig(t, {}, async (rig) => {
    const client = await rig.connect();
    await rig.preload(client);
    const workload = new Workload(client, READERS, WRITERS);
    // A real NBD client alongside: fio's nbd engine (libnbd) reading the cold extents throughout.
    const fio = runTool('fio', [
      '--name=cold-reads',
      '--ioengine=nbd',
      `--uri=${rig.gw.uri(VOLUME)}`,
      '--rw=randread',
      '--bs=64k',
      '--iodepth=4',
      `--size=${COLD_EXTENTS}M`,
      '--time_based',
      `--runtime=${Math.round(OUTAGE_MS / 1000) + 3}s`,
      '--output-format=json',
    ]);
    await sleep(1000);
    assert.deepEqual(workload.errors(), [], 'errors before the outage');

    const downAt = now();
    if (how === 'kill') await rig.s3.kill();
    else rig.s3.freeze();
    await sleep(OUTAGE_MS);
    // The S3 server answers a moment before its restart returns (RGW checks itself first): what was
    // held is what waited when the restart began, since nothing could be answered before that.
    const restartAt = now();
    if (how === 'kill') await rig.s3.restart();
    else rig.s3.thaw();
    const backAt = now();

    const held = workload.heldAt(restartAt);
    await Promise.all(held.map((o) => o.done));
    await sleep(1000);
    await workload.stop();

    assert.deepEqual(
      workload.errors().map((o) => `${o.op} ${o.offset}+${o.length}: ${o.error}`),
      [],
      'no error reaches the client',
    );
    assert.deepEqual(
      held.map((o) => o.op),
      Array<string>(READERS).fill('read'),
      'each reader, and no writer (the journal had room), was held when the store came back',
    );
    const latencies = held.map((o) => Math.max(0, o.doneAt! - backAt));
    const recovery = Math.max(...latencies);
    const longest = Math.max(...held.map((o) => o.doneAt! - o.issuedAt));
    const writes = workload.outcomes.filter((o) => o.op === 'write' && o.issuedAt >= downAt && o.issuedAt < backAt).length;
    t.diagnostic(
      `${how}: store away ${Math.round(backAt - downAt)} ms; ${held.length} held reads completed ` +
        `${latencies.map((l) => Math.round(l)).join(', ')} ms after it was back (recovery ${Math.round(recovery)} ms, longest request ${Math.round(longest)} ms); ` +
        `${writes} writes acknowledged during the outage; ${workload.outcomes.length} requests in all, none failed`,
    );
    assert.ok(
      recovery <= RECOVERY_BOUND_MS,
      `held requests completed ${Math.round(recovery)} ms after the store came back (bound ${RECOVERY_BOUND_MS} ms)`,
    );
    assert.deepEqual(await workload.lostWrites(client), [], 'every acknowledged write reads back');
    const fioRun = await fio;
    assert.equal(fioRun.code, 0, `fio failed:\n${fioRun.stdout}\n${fioRun.stderr}`);
    const fioJob = fioReport(fioRun.stdout);
    assert.equal(fioJob.error, 0, `fio saw an error: ${fioRun.stderr}`);
    t.diagnostic(
      `fio: ${fioJob.read.io_bytes / MiB} MiB of cold 64 KiB reads, no error, longest ${(fioJob.read.clat_ns.max / 1e9).toFixed(2)} s`,
    );
    assert.ok(fioJob.read.clat_ns.max > (OUTAGE_MS / 2) * 1e6, 'fio had reads waiting through the outage');

    await waitFor('the hang episode to end', () => episodeOf(rig.events(), 'io-hang', downAt).end !== undefined);
    const events = rig.events();
    const hang = episodeOf(events, 'io-hang', downAt);
    const unavailable = episodeOf(events, 'storage-unavailable', downAt);
    assert.ok(hang.begin !== undefined && hang.end !== undefined);
    assert.ok(unavailable.begin !== undefined && unavailable.end !== undefined, 'storage-unavailable set and cleared');
    assert.equal(hang.begin.errorClass, 'transient');
    assert.ok(hang.begin.held.requests >= 1, 'the set event counts the held request');
    assert.equal(hang.end.held.requests, 0);
    const outage = backAt - downAt;
    t.diagnostic(
      `events: storage-unavailable after ${Math.round(Date.parse(unavailable.begin.time) - downAt)} ms (lasted ${unavailable.end.durationMs} ms), ` +
        `io-hang after ${Math.round(Date.parse(hang.begin.time) - downAt)} ms, durationMs ${hang.end.durationMs} (outage ${Math.round(outage)} ms)`,
    );
    assert.ok(
      hang.end.durationMs >= 8000 && hang.end.durationMs <= 14_000,
      `io-hang lasted ${hang.end.durationMs} ms for a ${Math.round(outage)} ms outage`,
    );

    const metrics = await scrapeMetrics(rig.gw.adminUrl);
    const v = { volume: VOLUME };
    const transient = metrics.value('holdfast_storage_errors_total', { ...v, class: 'transient' });
    t.diagnostic(
      `metrics: ${metrics.value('holdfast_hang_episodes_total', v)} episode(s), ${metrics.value('holdfast_hang_seconds_total', v).toFixed(1)} s of hang, ` +
        `${transient} transient storage errors, ${metrics.value('holdfast_hang_retries_total', v)} retries`,
    );
    assert.ok(metrics.value('holdfast_hang_episodes_total', v) >= 1);
    assert.equal(metrics.value('holdfast_held_requests', v), 0);
    assert.equal(metrics.value('holdfast_held_bytes', v), 0);
    assert.ok(metrics.value('holdfast_hang_seconds_total', v) >= 8);
    assert.equal(metrics.value('holdfast_hang_state', { ...v, state: 'normal' }), 1);
    assert.equal(metrics.value('holdfast_nbd_error_replies_total'), 0);
    // A refused connection is an error at once; a frozen server's requests may all be answered at
    // the thaw without one failing, and the hang is then begun by the stall, not by an error.
    if (how === 'kill') assert.ok(transient > 0, 'refused connections are counted as transient storage errors');
    else assert.match(hang.begin.lastError ?? '', /has not answered/);
  });
}

describe('I/O hang through real storage outages', { concurrency: false }, () => {
  it('holds reads and writes while the S3 server is killed for 10 s, and completes them when it is back', { timeout: 90_000 }, (t) =>
    outageUnderWorkload(t, 'kill'),
  );

  it(
    'holds reads and writes while the S3 server is frozen with SIGSTOP for 10 s, and completes them when it is back',
    { timeout: 90_000 },
    (t) => outageUnderWorkload(t, 'freeze'),
  );

  for (const how of ['kill', 'freeze'] as const) {
    it(
      `fails held reads with EIO at the hang timeout, fails fast while timed out, and serves again once the store is back (${how})`,
      { timeout: 60_000 },
      (t) =>
        withRig(t, { args: ['--hang-timeout', '3s'] }, async (rig) => {
          const client = await rig.connect();
          await rig.preload(client);
          const downAt = now();
          if (how === 'kill') await rig.s3.kill();
          else rig.s3.freeze();
          const held = [0, 4, 8, 12].map((extent) => coldRead(client, extent, 0, 64 * KiB));
          await waitFor('the reads to be held', async () => (await heldCount(rig)) === held.length);
          const status = await rig.status();
          assert.equal(status.state, 'hang');
          assert.ok(status.episode !== null && status.episode.deadline !== null);
          const deadline = Date.parse(status.episode.deadline);
          assert.equal(deadline - Date.parse(status.episode.startedAt), 3000, 'the deadline is the episode start plus the timeout');

          await Promise.all(held.map((o) => o.done));
          for (const o of held) assertEio(o, 'a read held past the timeout');
          const offsets = held.map((o) => o.doneAt! - deadline);
          const worst = Math.max(...offsets.map(Math.abs));
          // The EIO replies can overtake the event's log line on its way through the gateway's stderr.
          await waitFor('io-hang-timeout set:true', () => conditionEvents(rig.events(), 'io-hang-timeout').some((e) => e.set));
          const timeoutEvent = conditionEvents(rig.events(), 'io-hang-timeout').find((e) => e.set)!;
          const fired = Date.parse(timeoutEvent.time) - deadline;
          t.diagnostic(
            `${how}: timeout accuracy: io-hang-timeout event ${fired} ms after the deadline; EIO seen by the client ${offsets.map((o) => o.toFixed(1)).join(', ')} ms after it`,
          );
          assert.ok(Math.abs(fired) <= TIMEOUT_ACCURACY_MS, `the timeout fired ${fired} ms from its deadline`);
          assert.ok(
            worst <= TIMEOUT_ACCURACY_MS + CLIENT_MEASUREMENT_ALLOWANCE_MS,
            `held reads failed up to ${worst.toFixed(1)} ms from the deadline`,
          );
          assert.equal((await rig.status()).state, 'timed-out');

          const fast = coldRead(client, 1, 0, 64 * KiB);
          await settledWithin(fast, 3000, 'a read needing the store while timed out');
          assertEio(fast, 'a read needing the store while timed out');
          const write = track('write', WRITE_BASE, 64 * KiB, client.write(WRITE_BASE, pattern(WRITE_BASE, 64 * KiB, 5)));
          await write.done;
          assertOk(write, 'a write with journal room while timed out');
          let metrics = await scrapeMetrics(rig.gw.adminUrl);
          assert.ok(metrics.value('holdfast_failed_fast_total', { volume: VOLUME }) >= 1);
          assert.equal(metrics.value('holdfast_hang_timeouts_total', { volume: VOLUME }), 1);
          t.diagnostic(`while timed out: a cold read failed after ${(fast.doneAt! - fast.issuedAt).toFixed(1)} ms, a write succeeded`);

          await sleep(Math.max(0, downAt + 8000 - now()));
          if (how === 'kill') await rig.s3.restart();
          else rig.s3.thaw();
          const backAt = now();
          await waitFor('io-hang-timeout to clear', () => conditionEvents(rig.events(), 'io-hang-timeout').some((e) => !e.set));
          const cleared = conditionEvents(rig.events(), 'io-hang-timeout').find((e) => !e.set)!;
          assert.equal(cleared.episode, timeoutEvent.episode);
          const again = coldRead(client, 2, 0, 64 * KiB);
          await again.done;
          assertOk(again, 'a cold read after the store returned');
          assert.equal((await rig.status()).state, 'normal');
          assert.deepEqual(await readRange(client, WRITE_BASE, 64 * KiB), pattern(WRITE_BASE, 64 * KiB, 5));
          metrics = await scrapeMetrics(rig.gw.adminUrl);
          assert.equal(metrics.value('holdfast_hang_state', { volume: VOLUME, state: 'normal' }), 1);
          t.diagnostic(
            `${how}: store down ${Math.round(backAt - downAt)} ms; timeout cleared ${Math.round(Date.parse(cleared.time) - backAt)} ms after it was back; reads served again`,
          );
        }),
    );
  }

  it(
    'hides 503 SlowDown and 500 InternalError answers to 30% of the store requests from the client, and counts them',
    { timeout: 90_000 },
    (t) =>
      withRig(t, { proxy: true }, async (rig) => {
        const proxy = rig.proxy!;
        const client = await rig.connect();
        await rig.preload(client);
        proxy.setMode({ kind: 'flaky', share: 0.3 });
        const workload = new Workload(client, READERS, WRITERS);
        await sleep(6000);
        await workload.stop();
        assert.deepEqual(
          workload.errors().map((o) => `${o.op} ${o.offset}+${o.length}: ${o.error}`),
          [],
          'no error reaches the client',
        );
        assert.deepEqual(await workload.lostWrites(client), [], 'every acknowledged write reads back');
        await waitForJournalDrained(rig.journalDir, VOLUME, 30_000);
        proxy.setMode({ kind: 'pass' });

        const metrics = await scrapeMetrics(rig.gw.adminUrl);
        const v = { volume: VOLUME };
        const transient = metrics.value('holdfast_storage_errors_total', { ...v, class: 'transient' });
        const retries = metrics.value('holdfast_hang_retries_total', v);
        const injected = Object.values(proxy.counts.injected).reduce((a, b) => a + b, 0);
        t.diagnostic(
          `${workload.outcomes.length} requests, none failed; the proxy forwarded ${proxy.counts.forwarded} (${proxy.counts.upstreamErrors} failed upstream) and injected ${JSON.stringify(proxy.counts.injected)}; ` +
            `metrics: ${transient} transient storage errors, ${retries} retries of held reads, ${metrics.value('holdfast_hang_episodes_total', v)} hang episodes, ${metrics.value('holdfast_upload_failures_total', v)} failed uploads`,
        );
        assert.ok(
          injected > 0 && (proxy.counts.injected.SlowDown ?? 0) > 0 && (proxy.counts.injected.InternalError ?? 0) > 0,
          'both kinds of error were injected',
        );
        assert.ok(transient > 0, 'storage errors are counted');
        assert.ok(transient <= injected + proxy.counts.upstreamErrors, 'no more storage errors than the proxy caused');
        assert.ok(retries > 0, 'retries are counted');
        for (const cls of ['denied', 'missing', 'invalid', 'no-space', 'io'])
          assert.equal(metrics.value('holdfast_storage_errors_total', { ...v, class: cls }), 0, `${cls} errors`);
      }),
  );

  for (const { mode, errorClass, code } of [
    { mode: 'deny', errorClass: 'denied', code: '403 AccessDenied' },
    { mode: 'no-such-bucket', errorClass: 'missing', code: '404 NoSuchBucket' },
  ] as const) {
    it(
      `fails reads fast with EIO when the store answers ${code}, and holds them once the policy says ${errorClass}=hold`,
      { timeout: 60_000 },
      (t) =>
        withRig(t, { proxy: true }, async (rig) => {
          const proxy = rig.proxy!;
          const client = await rig.connect();
          await rig.preload(client);
          proxy.setMode({ kind: mode });
          const refused = coldRead(client, 0, 0, 64 * KiB);
          await settledWithin(refused, 5000, `a read while the store answers ${code}`);
          assertEio(refused, `a read while the store answers ${code}`);
          const metrics = await scrapeMetrics(rig.gw.adminUrl);
          assert.ok(metrics.value('holdfast_storage_errors_total', { volume: VOLUME, class: errorClass }) >= 1);
          assert.equal(metrics.value('holdfast_hang_episodes_total', { volume: VOLUME }), 0, 'nothing was held');
          t.diagnostic(`default policy: EIO after ${(refused.doneAt! - refused.issuedAt).toFixed(1)} ms`);

          await setHangPolicy(rig.gw.adminUrl, VOLUME, { classes: { [errorClass]: 'hold' } });
          const held = coldRead(client, 1, 0, 64 * KiB);
          await waitFor('the read to be held', async () => (await heldCount(rig)) === 1);
          const status = await rig.status();
          assert.equal(status.state, 'hang');
          assert.equal(status.errorClass, errorClass);
          // The store keeps refusing for a while; the read must stay unanswered all along.
          await sleep(1000);
          assert.ok(!isSettled(held), `the read was answered (${held.error}) while the store still answered ${code}`);
          proxy.setMode({ kind: 'pass' });
          const backAt = now();
          await held.done;
          assertOk(held, 'the held read once the store answers');
          await waitFor('the hang to end', () => conditionEvents(rig.events(), 'io-hang').some((e) => !e.set));
          const begin = conditionEvents(rig.events(), 'io-hang').find((e) => e.set)!;
          assert.equal(begin.errorClass, errorClass);
          t.diagnostic(
            `${errorClass}=hold: the read was held ${Math.round(backAt - held.issuedAt)} ms and completed ${Math.round(held.doneAt! - backAt)} ms after the store answered again`,
          );
        }),
    );
  }

  it('holds writes while the journal is full and the store is down, and completes them once uploads drain it', { timeout: 60_000 }, (t) =>
    withRig(t, { args: ['--journal-limit', '8MiB', '--segment-size', '1MiB'] }, async (rig) => {
      const client = await rig.connect();
      const downAt = now();
      await rig.s3.kill();
      const base = 4 * MiB;
      const { outcomes, data } = burst(client, base, 48, 256 * KiB, 3);
      await waitFor('writes to be held on a full journal', async () => {
        const s = await rig.status();
        const unanswered = outcomes.filter((o) => !isSettled(o)).length;
        return unanswered > 0 && s.held.requests === unanswered && s.journal.pressure === 'full';
      });
      await sleep(1000);
      const status = await rig.status();
      const unanswered = outcomes.filter((o) => !isSettled(o));
      assert.deepEqual(
        outcomes.filter((o) => isSettled(o) && o.error !== undefined).map((o) => o.error),
        [],
        'no write failed',
      );
      assert.equal(status.held.requests, unanswered.length, 'every unanswered write is held');
      assert.equal(status.journal.pressure, 'full');
      assert.equal(status.state, 'hang');
      t.diagnostic(
        `${outcomes.length - unanswered.length} writes fit in the 8 MiB journal; ${unanswered.length} held (${status.held.bytes} bytes), journal ${status.journal.bytes} bytes`,
      );

      await rig.s3.restart();
      const backAt = now();
      await within(Promise.all(outcomes.map((o) => o.done)), 20_000, 'the writes held on the full journal');
      for (const o of outcomes) assertOk(o, 'a write held on the full journal');
      t.diagnostic(
        `the last held write completed ${Math.round(Math.max(...unanswered.map((o) => o.doneAt!)) - backAt)} ms after the store was back (after ${Math.round(backAt - downAt)} ms down)`,
      );
      assert.ok((await readRange(client, base, 48 * 256 * KiB)).equals(Buffer.concat(data)), 'the writes read back');
      await waitForJournalDrained(rig.journalDir, VOLUME, 30_000);
      const pressureLevels = () => rig.events().flatMap((e) => (e.kind === 'journal-pressure' ? [e.level] : []));
      // Pressure is sampled every 250 ms, so its return to normal follows the drain by up to that.
      await waitFor('journal pressure back to normal', () => pressureLevels().at(-1) === 'normal');
      assert.ok(pressureLevels().includes('full'), `journal-pressure events: ${pressureLevels().join(', ')}`);
      const hang = episodeOf(rig.events(), 'io-hang', downAt);
      assert.ok(hang.begin !== undefined && hang.end !== undefined, 'io-hang set and cleared');
    }),
  );

  it(
    'holds writes when the journal disk (a 6 MiB tmpfs) is full while the store is down, and completes them once uploads free it',
    { timeout: 60_000 },
    (t) =>
      withRig(t, { journalDisk: (dir) => mountTmpfs(dir, 6 * MiB), args: ['--segment-size', '1MiB'] }, async (rig) => {
        const client = await rig.connect();
        const downAt = now();
        await rig.s3.kill();
        const base = 4 * MiB;
        const model = new RegionModel(base, 40 * 256 * KiB);
        const first = burst(client, base, 40, 256 * KiB, 4);
        const outcomes = [...first.outcomes];
        await waitFor('writes to be held on a full disk', async () => {
          const s = await rig.status();
          const unanswered = outcomes.filter((o) => !isSettled(o)).length;
          return unanswered > 0 && s.held.requests === unanswered && s.errorClass === 'no-space';
        });
        for (const [i, o] of first.outcomes.entries()) if (isSettled(o)) model.apply(o.offset, first.data[i]!);
        // Blocks already on disk are written again, as a filesystem rewrites its hot blocks: their
        // extents now hold records on disk and records that cannot get there until space is freed.
        const rewritten = first.outcomes.filter(isSettled).slice(0, 4);
        for (const o of rewritten) {
          const data = pattern(o.offset, o.length, 5);
          outcomes.push(track('write', o.offset, o.length, client.write(o.offset, data)));
          model.apply(o.offset, data);
        }
        await waitFor('the rewrites to be held too', async () => (await heldCount(rig)) === outcomes.filter((o) => !isSettled(o)).length);
        await sleep(1000);
        const status = await rig.status();
        const unanswered = outcomes.filter((o) => !isSettled(o));
        assert.deepEqual(
          outcomes.filter((o) => isSettled(o) && o.error !== undefined).map((o) => o.error),
          [],
          'no write failed',
        );
        assert.equal(status.held.requests, unanswered.length, 'every unanswered write is held');
        assert.equal(status.state, 'hang');
        const begin = conditionEvents(rig.events(), 'io-hang').find((e) => e.set);
        assert.equal(begin?.errorClass, 'no-space');
        const metrics = await scrapeMetrics(rig.gw.adminUrl);
        assert.ok(metrics.value('holdfast_storage_errors_total', { volume: VOLUME, class: 'no-space' }) >= 1);
        t.diagnostic(
          `${first.outcomes.length - first.outcomes.filter((o) => !isSettled(o)).length} of 40 writes fit on the 6 MiB tmpfs; ${unanswered.length} held with class no-space, ${rewritten.length} of them rewrites`,
        );
        for (const [i, o] of first.outcomes.entries()) if (!isSettled(o)) model.apply(o.offset, first.data[i]!);

        await rig.s3.restart();
        const backAt = now();
        await within(Promise.all(outcomes.map((o) => o.done)), 20_000, 'the writes held on the full disk');
        for (const o of outcomes) assertOk(o, 'a write held on the full disk');
        t.diagnostic(
          `the last held write completed ${Math.round(Math.max(...unanswered.map((o) => o.doneAt!)) - backAt)} ms after the store was back (after ${Math.round(backAt - downAt)} ms down)`,
        );
        await model.check(client, 'through the gateway');
        await waitForJournalDrained(rig.journalDir, VOLUME, 30_000);
        assert.equal(await rig.gw.stop(), 0);
        const fresh = await rig.startGateway({ journalDir: await rig.tempDir('empty-journal') });
        await model.check(await rig.connect(fresh), 'from the store alone');
      }),
  );

  it('holds writes while the journal disk answers EIO, and completes them once it recovers', { timeout: 60_000 }, async (t) => {
    let disk: FailingDisk | undefined;
    const journalDisk = async (dir: string, work: string): Promise<Unmount> => {
      disk = await mountFailingDisk(dir, work);
      return disk.unmount;
    };
    await withRig(t, { journalDisk, args: ['--segment-size', '1MiB'] }, async (rig) => {
      const client = await rig.connect();
      const base = 4 * MiB;
      const model = new RegionModel(base, 4 * MiB);
      const before = burst(client, base, 8, 256 * KiB, 11);
      await Promise.all(before.outcomes.map((o) => o.done));
      for (const [i, o] of before.outcomes.entries()) {
        assertOk(o, 'a write before the disk fails');
        model.apply(o.offset, before.data[i]!);
      }

      await disk!.setFailing(true);
      const failedAt = now();
      const during = burst(client, base + 2 * MiB, 8, 256 * KiB, 12);
      const outcomes = [...during.outcomes];
      for (const [i, o] of during.outcomes.entries()) model.apply(o.offset, during.data[i]!);
      // Blocks already on disk written again: their extents mix durable and unwritable records.
      for (const o of before.outcomes.slice(0, 2)) {
        const data = pattern(o.offset, o.length, 13);
        outcomes.push(track('write', o.offset, o.length, client.write(o.offset, data)));
        model.apply(o.offset, data);
      }
      await waitFor('the writes to be held on the failing disk', async () => {
        const s = await rig.status();
        return s.held.requests === outcomes.length && s.errorClass === 'io';
      });
      await sleep(1000);
      assert.deepEqual(
        outcomes.filter(isSettled).map((o) => `${o.offset}: ${o.error ?? 'ok'}`),
        [],
        'no write was answered while the disk fails',
      );
      const status = await rig.status();
      assert.equal(status.state, 'hang');
      assert.equal(status.held.requests, outcomes.length);
      assert.equal(conditionEvents(rig.events(), 'io-hang').find((e) => e.set)?.errorClass, 'io');
      const metrics = await scrapeMetrics(rig.gw.adminUrl);
      const ioErrors = metrics.value('holdfast_storage_errors_total', { volume: VOLUME, class: 'io' });
      assert.ok(ioErrors >= 1);

      await disk!.setFailing(false);
      const backAt = now();
      await within(Promise.all(outcomes.map((o) => o.done)), 20_000, 'the writes held on the failing disk');
      for (const o of outcomes) assertOk(o, 'a write held on the failing disk');
      t.diagnostic(
        `${outcomes.length} writes held for ${Math.round(backAt - failedAt)} ms of EIO (${ioErrors} failed journal attempts by then); ` +
          `all completed ${Math.round(Math.max(...outcomes.map((o) => o.doneAt!)) - backAt)} ms after the disk recovered`,
      );
      await model.check(client, 'through the gateway');
      await waitForJournalDrained(rig.journalDir, VOLUME, 30_000);
      assert.equal(await rig.gw.stop(), 0);
      const fresh = await rig.startGateway({ journalDir: await rig.tempDir('empty-journal') });
      await model.check(await rig.connect(fresh), 'from the store alone');
    });
  });

  it('pause fails held reads at once and refuses new ones until resume; release fails the held ones once', { timeout: 60_000 }, (t) =>
    withRig(t, {}, async (rig) => {
      const client = await rig.connect();
      await rig.preload(client);
      await rig.s3.kill();
      const first = coldRead(client, 0, 0, 64 * KiB);
      await waitFor('the read to be held', async () => (await heldCount(rig)) === 1);

      const pauseAt = now();
      assert.equal(await volumeAction(rig.gw.adminUrl, VOLUME, 'pause'), 1, 'pause failed the one held read');
      await settledWithin(first, 1000, 'a held read at pause');
      assertEio(first, 'a held read at pause');
      const status = await rig.status();
      assert.equal(status.paused, true);
      assert.equal(status.held.requests, 0);
      const whilePaused = coldRead(client, 1, 0, 64 * KiB);
      await settledWithin(whilePaused, 3000, 'a read needing the store while paused');
      assertEio(whilePaused, 'a read needing the store while paused');
      t.diagnostic(
        `pause: the held read got EIO ${(first.doneAt! - pauseAt).toFixed(1)} ms after the pause request; a new read failed after ${(whilePaused.doneAt! - whilePaused.issuedAt).toFixed(1)} ms`,
      );

      await volumeAction(rig.gw.adminUrl, VOLUME, 'resume');
      assert.equal((await rig.status()).paused, false);
      const afterResume = coldRead(client, 2, 0, 64 * KiB);
      await waitFor('the read after resume to be held', async () => (await heldCount(rig)) === 1);
      assert.ok(!isSettled(afterResume));

      const releaseAt = now();
      assert.equal(await volumeAction(rig.gw.adminUrl, VOLUME, 'release'), 1, 'release failed the one held read');
      await settledWithin(afterResume, 1000, 'a held read at release');
      assertEio(afterResume, 'a held read at release');
      const afterRelease = coldRead(client, 3, 0, 64 * KiB);
      await waitFor('the read after release to be held', async () => (await heldCount(rig)) === 1);
      assert.ok(!isSettled(afterRelease), 'release does not change the policy: new reads are held');

      await rig.s3.restart();
      const backAt = now();
      await afterRelease.done;
      assertOk(afterRelease, 'the read held after release');
      t.diagnostic(
        `release: EIO ${(afterResume.doneAt! - releaseAt).toFixed(1)} ms after the request; the next held read completed ${Math.round(afterRelease.doneAt! - backAt)} ms after the store was back`,
      );
      // Three episodes, each ended by pause, release and recovery in turn.
      await waitFor('three io-hang episodes to end', () => conditionEvents(rig.events(), 'io-hang').filter((e) => !e.set).length === 3);
      const hangs = conditionEvents(rig.events(), 'io-hang');
      assert.deepEqual(
        hangs.map((e) => e.set),
        [true, false, true, false, true, false],
      );
    }),
  );

  it('drops the held write of a client that disconnects: it never reaches the store', { timeout: 60_000 }, (t) =>
    withRig(t, { args: ['--journal-limit', '2MiB', '--segment-size', '1MiB'] }, async (rig) => {
      const victimOffset = 30 * MiB + 4096;
      const old = pattern(victimOffset, 64 * KiB, 7);
      const keeper = await rig.connect();
      await keeper.write(victimOffset, old);
      await waitForJournalDrained(rig.journalDir, VOLUME, 30_000);
      await rig.s3.kill();

      const fill = burst(keeper, 4 * MiB, 12, 256 * KiB, 6);
      await waitFor('a filler write to be held', async () => (await heldCount(rig)) > 0);
      const leaver = await rig.connect();
      const victim = track('write', victimOffset, 64 * KiB, leaver.write(victimOffset, pattern(victimOffset, 64 * KiB, 8)));
      const fillersHeld = (): number => fill.outcomes.filter((o) => !isSettled(o)).length;
      await waitFor('the write of the leaving client to be held', async () => (await heldCount(rig)) === fillersHeld() + 1);
      leaver.destroy();
      await victim.done;
      assert.equal(victim.error, 'closed', 'the leaving client never got an answer');
      await waitFor('the dropped write to leave the hold', async () => (await heldCount(rig)) === fillersHeld());
      t.diagnostic(`${fillersHeld()} filler writes held with the leaving client's write; after the disconnect only they are`);

      await rig.s3.restart();
      await Promise.all(fill.outcomes.map((o) => o.done));
      for (const o of fill.outcomes) assertOk(o, 'a filler write of the client that stayed');
      await waitForJournalDrained(rig.journalDir, VOLUME, 30_000);
      const again = await rig.connect();
      assert.ok((await again.read(victimOffset, 64 * KiB)).equals(old), 'the dropped write reached the volume');
      assert.equal(await rig.gw.stop(), 0);
      const fresh = await rig.startGateway({ journalDir: await rig.tempDir('empty-journal') });
      const check = await rig.connect(fresh);
      assert.ok((await check.read(victimOffset, 64 * KiB)).equals(old), 'the dropped write reached the store');
      assert.ok((await readRange(check, 4 * MiB, 12 * 256 * KiB)).equals(Buffer.concat(fill.data)), 'the filler writes are in the store');
    }),
  );

  it('keeps the last acknowledged of overlapping writes from two connections made during a hang', { timeout: 60_000 }, async (t) => {
    const seed = Number(process.env.IO_HANG_SEED ?? Math.floor(Math.random() * 2 ** 32));
    t.diagnostic(`seed ${seed} (IO_HANG_SEED=${seed} repeats these writes)`);
    const random = seededRandom(seed);
    await withRig(t, {}, async (rig) => {
      const a = await rig.connect();
      const b = await rig.connect();
      const model = new RegionModel(8 * MiB, 4 * MiB);
      await rig.storeExtents(a, [13]);
      await rig.s3.kill();
      // A stored extent the cache does not hold: its read needs the store (a hole would need nothing).
      const heldRead = coldRead(a, 13, 0, 64 * KiB);
      await waitFor('a read to be held', async () => (await heldCount(rig)) === 1);
      let seq = 1;
      const writePairs = async (pairs: number): Promise<void> => {
        for (let i = 0; i < pairs; i++) {
          const { offset, length } = model.pick(random, 192 * KiB);
          // A writes, is acknowledged; then B overwrites exactly those bytes, and sometimes A a part of them again.
          for (const client of random() < 0.3 ? [a, b, a] : [a, b]) {
            const data = pattern(offset, length, seq++);
            await client.write(offset, data);
            model.apply(offset, data);
          }
        }
      };
      await writePairs(150);
      assert.equal((await rig.status()).state, 'hang', 'the writes were made during a hang');
      await rig.s3.restart();
      // More pairs while the backlog uploads: a late upload of older bytes would show here.
      await writePairs(60);
      await heldRead.done;
      assertOk(heldRead, 'the read held during the writes');
      await waitForJournalDrained(rig.journalDir, VOLUME, 30_000);
      await model.check(a, 'through the gateway that took the writes');
      assert.equal(await rig.gw.stop(), 0);
      const fresh = await rig.startGateway({ journalDir: await rig.tempDir('empty-journal') });
      await model.check(await rig.connect(fresh), 'from the store alone');
      t.diagnostic(`${seq - 1} acknowledged writes from two connections, overlapping in pairs; the store holds the last of each`);
    });
  });

  it(
    'keeps every acknowledged write when the gateway is SIGKILLed during a hang and restarted while the store is still down',
    { timeout: 60_000 },
    async (t) => {
      const seed = Number(process.env.IO_HANG_SEED ?? Math.floor(Math.random() * 2 ** 32));
      t.diagnostic(`seed ${seed} (IO_HANG_SEED=${seed} repeats these writes)`);
      const random = seededRandom(seed);
      await withRig(t, {}, async (rig) => {
        const model = new RegionModel(0, 8 * MiB);
        let client = await rig.connect();
        await rig.storeExtents(client, [13, 14]);
        await rig.s3.kill();
        const heldRead = coldRead(client, 13, 0, 64 * KiB);
        await waitFor('a read to be held', async () => (await heldCount(rig)) === 1);
        for (let seq = 1; seq <= 200; seq++) {
          const { offset, length } = model.pick(random, 128 * KiB);
          const data = pattern(offset, length, seq);
          await client.write(offset, data);
          model.apply(offset, data);
        }
        // Writes in flight at the kill, outside the model's region: each may land or not, but whole.
        const inFlight = burst(client, 24 * MiB, 8, 128 * KiB, 9);
        assert.equal((await rig.gw.kill('SIGKILL')).signal, 'SIGKILL');
        await heldRead.done;
        assert.equal(heldRead.error, 'closed');
        await Promise.all(inFlight.outcomes.map((o) => o.done));

        rig.gw = await rig.startGateway();
        assert.ok(
          rig.gw.logs.some((l) => /object store unreachable at start/.test(l.msg)),
          'it started while the store was down',
        );
        client = await rig.connect();
        // The volume cannot be taken before its head is read: every request waits for it, held.
        const replayedRead = coldRead(client, 14, 0, 64 * KiB);
        await waitFor('a read to be held by the restarted gateway', async () => (await heldCount(rig)) === 1);
        await rig.s3.restart();
        await replayedRead.done;
        assertOk(replayedRead, 'the read held by the restarted gateway');
        assert.ok(
          rig.gw.logs.some((l) => l.msg.startsWith('journal replayed')),
          'the restarted gateway replayed its journal once it took the volume',
        );
        await waitForJournalDrained(rig.journalDir, VOLUME, 30_000);
        assert.equal(await rig.gw.stop(), 0);

        const fresh = await rig.startGateway({ journalDir: await rig.tempDir('empty-journal') });
        const check = await rig.connect(fresh);
        await model.check(check, 'from the store after the crash and the outage');
        let landed = 0;
        for (const [i, o] of inFlight.outcomes.entries()) {
          const back = await check.read(o.offset, o.length);
          const whole = back.equals(inFlight.data[i]!);
          if (whole) landed++;
          assert.ok(
            whole || back.equals(Buffer.alloc(o.length)) || o.error !== undefined,
            `write ${o.offset} in flight at the kill is neither old nor new`,
          );
          if (o.error === undefined) assert.ok(whole, `write ${o.offset} was acknowledged before the kill and is lost`);
        }
        t.diagnostic(`200 acknowledged writes survived the SIGKILL and the outage; of 8 writes in flight at the kill ${landed} landed`);
      });
    },
  );

  it(
    'on SIGTERM during a hang drops held reads with the connection, exits 0 within the grace period and keeps every acknowledged write',
    { timeout: 60_000 },
    (t) =>
      withRig(t, { args: ['--shutdown-grace', '5s'] }, async (rig) => {
        const client = await rig.connect();
        await rig.storeExtents(client, [10, 11, 12]);
        await rig.s3.kill();
        const writes = burst(client, 8 * MiB, 32, 64 * KiB, 10);
        await Promise.all(writes.outcomes.map((o) => o.done));
        for (const o of writes.outcomes) assertOk(o, 'a write with journal room during the outage');
        const held = [10, 11, 12].map((extent) => coldRead(client, extent, 0, 64 * KiB));
        await waitFor('the reads to be held', async () => (await heldCount(rig)) === held.length);

        const stopAt = now();
        const code = await rig.gw.stop();
        const took = now() - stopAt;
        assert.equal(code, 0, `exit code after SIGTERM; stderr: ${rig.gw.otherStderr.join('\n')}`);
        assert.ok(took < 5000, `SIGTERM took ${Math.round(took)} ms, over the 5 s grace period`);
        await Promise.all(held.map((o) => o.done));
        assert.deepEqual(
          held.map((o) => o.error),
          held.map(() => 'closed'),
          'held reads are dropped with the connection, not answered',
        );
        t.diagnostic(`exited 0 ${Math.round(took)} ms after SIGTERM; the 3 held reads saw the connection close`);

        await rig.s3.restart();
        rig.gw = await rig.startGateway();
        await waitForJournalDrained(rig.journalDir, VOLUME, 30_000);
        assert.equal(await rig.gw.stop(), 0);
        const fresh = await rig.startGateway({ journalDir: await rig.tempDir('empty-journal') });
        const check = await rig.connect(fresh);
        assert.ok(
          (await readRange(check, 8 * MiB, 32 * 64 * KiB)).equals(Buffer.concat(writes.data)),
          'every acknowledged write is in the store',
        );
      }),
  );
});
