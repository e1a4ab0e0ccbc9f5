import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it, type TestContext } from 'node:test';
import { readHead } from '../../gateway/image/take-volume.js';
import { VolumeImage } from '../../gateway/image/volume-image.js';
import { openStore } from '../../gateway/store/open-store.js';
import {
  type GatewayProcess,
  GatewayStartError,
  type StoreKind,
  type Stores,
  type StoreTarget,
  STORE_KINDS,
  startGateway,
  startStores,
  waitForJournalDrained,
} from '../helpers/gateway-process.js';
import { NbdClient, NbdConnectionError } from '../helpers/nbd-client.js';
import { seededRandom } from '../helpers/seeded-random.js';
import { describeWord, prefixMismatch, stampedWrite, type Write } from '../helpers/stamped-writes.js';

/**
 * SIGKILLs the gateway at random moments under a stream of overlapping writes — half the time at a
 * random step of compaction or garbage collection, through a test-only failpoint — and checks after
 * every kill that (1) the store alone, journal thrown away, holds exactly the writes up to some point
 * of their order, never a mix, and (2) the gateway restarted on the same journal reads back each write
 * it acknowledged.
 */

const VOLUME = 'crash';
/** Small extents so that a few MiB of random writes keep many extents dirty; a short last extent. */
const EXTENT_SIZE = 256 * 1024;
const VOLUME_SIZE = 16 * EXTENT_SIZE + 96 * 1024;
const MAX_WRITE = 64 * 1024;
const IN_FLIGHT = 16;
const CYCLES: Record<StoreKind, number> = { local: 20, s3: 12 };
/** Steps the gateway kills itself at in the odd cycles, on a random hit (`@N`) of the step. */
const KILL_POINTS = ['compact.after-put', 'compact.before-commit', 'compact.after-commit', 'gc.before-delete'] as const;
const KILL_AFTER_MS = { min: 50, max: 1500 };
const READ_CHUNK = 1024 * 1024;
/** How long a gateway whose connection broke while starting is given to exit (a failpoint crash is at once). */
const EXIT_WAIT_MS = 10_000;

/** What the volume holds according to the writes the gateway acknowledged. */
class DiskModel {
  readonly bytes = Buffer.alloc(VOLUME_SIZE);

  apply(w: Write): void {
    w.data.copy(this.bytes, w.offset);
  }

  /**
   * Returns the first difference between `actual` and the model, or undefined. Bytes under a write
   * that had no reply when the gateway died may hold the old or the new content.
   */
  mismatch(actual: Buffer, unacked: readonly Write[]): string | undefined {
    const sorted = [...unacked].sort((a, b) => a.offset - b.offset);
    let pos = 0;
    for (const w of [...sorted, undefined]) {
      const end = w === undefined ? VOLUME_SIZE : w.offset;
      if (pos < end && !actual.subarray(pos, end).equals(this.bytes.subarray(pos, end))) {
        let at = pos;
        while (actual[at] === this.bytes[at]) at++;
        return `byte ${at}: expected ${describeWord(this.bytes, at)}, read ${describeWord(actual, at)}`;
      }
      if (w === undefined) break;
      for (let i = 0; i < w.data.length; i++) {
        const at = w.offset + i;
        if (actual[at] !== this.bytes[at] && actual[at] !== w.data[i]) {
          return `byte ${at} (under unacknowledged write #${w.seq}): read ${describeWord(actual, at)}, neither the old ${describeWord(this.bytes, at)} nor the new content`;
        }
      }
      pos = w.offset + w.data.length;
    }
    return undefined;
  }

  /** After a check, what was read is what the journal now holds: it becomes the model. */
  adopt(actual: Buffer): void {
    actual.copy(this.bytes);
  }
}

async function readVolume(client: NbdClient): Promise<Buffer> {
  const out = Buffer.alloc(VOLUME_SIZE);
  const chunks: Promise<void>[] = [];
  for (let offset = 0; offset < VOLUME_SIZE; offset += READ_CHUNK) {
    const length = Math.min(READ_CHUNK, VOLUME_SIZE - offset);
    chunks.push(client.read(offset, length).then((data) => void data.copy(out, offset)));
  }
  await Promise.all(chunks);
  return out;
}

function overlaps(a: Write, b: Write): boolean {
  return a.offset < b.offset + b.data.length && b.offset < a.offset + a.data.length;
}

interface WriterState {
  readonly model: DiskModel;
  readonly random: () => number;
  nextSeq: number;
  acknowledged: number;
  /** Every write sent, in the order it was sent. */
  readonly log: Write[];
  /** Writes that never got a reply. */
  readonly unacked: Set<number>;
}

/**
 * Keeps IN_FLIGHT writes (and now and then a flush) going until the connection breaks, and returns
 * the writes that never got a reply. Two overlapping writes are never in flight together: their
 * relative order would be undefined, and the model applies acknowledged writes in acknowledgement
 * order.
 */
async function writeUntilConnectionLost(client: NbdClient, state: WriterState): Promise<Write[]> {
  const inFlight = new Map<Write, Promise<void>>();
  const flushes: Promise<void>[] = [];
  const unacked: Write[] = [];
  let broken: unknown;
  const pick = (): Write | undefined => {
    for (let attempt = 0; attempt < 8; attempt++) {
      const length = 1 + Math.floor(state.random() * MAX_WRITE);
      const offset = Math.floor(state.random() * (VOLUME_SIZE - length + 1));
      const w = stampedWrite(state.nextSeq, offset, length);
      if ([...inFlight.keys()].every((other) => !overlaps(w, other))) {
        state.nextSeq++;
        state.log.push(w);
        return w;
      }
    }
    return undefined;
  };
  while (broken === undefined) {
    const w = inFlight.size < IN_FLIGHT ? pick() : undefined;
    if (w === undefined) {
      await Promise.race(inFlight.values());
      continue;
    }
    const done = client
      .write(w.offset, w.data, { fua: state.random() < 0.1 })
      .then(
        () => {
          state.model.apply(w);
          state.acknowledged++;
        },
        (err: unknown) => {
          unacked.push(w);
          state.unacked.add(w.seq);
          broken ??= err;
        },
      )
      .finally(() => inFlight.delete(w));
    inFlight.set(w, done);
    if (w.seq % 64 === 0) {
      flushes.push(
        client.flush().catch((err: unknown) => {
          broken ??= err;
        }),
      );
    }
  }
  await Promise.all([...inFlight.values(), ...flushes]);
  // Anything but the lost connection (an error reply to a valid request) is a gateway failure.
  // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrows whatever else the connection failed with, as is
  if (!(broken instanceof NbdConnectionError)) throw broken;
  return unacked;
}

async function connect(gw: GatewayProcess): Promise<NbdClient> {
  const client = await NbdClient.connect({ host: '127.0.0.1', port: gw.port, exportName: VOLUME });
  assert.equal(client.size, VOLUME_SIZE);
  return client;
}

function gatewayArgs(uploadDelay: string): string[] {
  return [
    '--extent-size',
    '256KiB',
    '--cache-size',
    '512KiB',
    '--segment-size',
    '1MiB',
    '--upload-delay',
    uploadDelay,
    // Tiny budgets and a short GC period: compaction and garbage collection run all the time.
    '--delta-budget',
    '512KiB',
    '--index-memory',
    '64KiB',
    '--gc-interval',
    '500ms',
    '--gc-grace',
    '3s',
    '--lease-ttl',
    '6s',
  ];
}

async function storeAlone(target: StoreTarget): Promise<Buffer> {
  const arg = (flag: string) => target.args[target.args.indexOf(flag) + 1];
  // The store opened here finds its credentials where the gateway's does: in the environment.
  Object.assign(process.env, target.env);
  const store = openStore({
    storeUrl: arg('--store')!,
    ...(target.args.includes('--s3-endpoint') ? { s3Endpoint: arg('--s3-endpoint')! } : {}),
  });
  try {
    const { head } = await readHead(store, VOLUME);
    const image = await VolumeImage.load(store, head);
    const out = Buffer.alloc(VOLUME_SIZE);
    await image.read(0, VOLUME_SIZE, out, 0);
    return out;
  } finally {
    await store.close();
  }
}

for (const kind of STORE_KINDS) {
  describe(`crash safety (${kind} store)`, () => {
    let stores: Stores;
    before(async () => {
      stores = await startStores(kind);
    });
    after(async () => {
      await stores.dispose();
    });

    it(
      `keeps every acknowledged write through ${CYCLES[kind]} SIGKILLs, half of them in compaction or GC, and the store alone is always a prefix of the writes`,
      { timeout: 300_000 },
      async (t: TestContext) => {
        const seed = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 32));
        t.diagnostic(`seed ${seed} (CRASH_SEED=${seed} repeats these writes)`);
        const store: StoreTarget = await stores.fresh();
        const journalDir = await stores.tempDir('journal');
        const state: WriterState = {
          model: new DiskModel(),
          random: seededRandom(seed),
          nextSeq: 1,
          acknowledged: 0,
          log: [],
          unacked: new Set(),
        };
        let killedAtStep = 0;
        let unacked: Write[] = [];
        let gw: GatewayProcess | undefined;
        try {
          for (let cycle = 0; cycle < CYCLES[kind]; cycle++) {
            // One cycle in three is killed from outside at a random moment (uploads in flight); the others
            // kill the gateway from inside, at a random hit of a compaction or GC step.
            const uploadDelay = cycle % 2 === 0 ? '0' : '300ms';
            const point = KILL_POINTS[Math.floor(state.random() * KILL_POINTS.length)]!;
            const env = cycle % 3 !== 0 ? { HOLDFAST_FAILPOINTS: `${point}=crash@${1 + Math.floor(state.random() * 3)}` } : undefined;
            let client: NbdClient;
            let actual: Buffer;
            try {
              gw = await startGateway({
                store,
                journalDir,
                createVolume: `${VOLUME}=${VOLUME_SIZE}`,
                args: gatewayArgs(uploadDelay),
                ...(env ? { env } : {}),
              });
              client = await connect(gw);
              actual = await readVolume(client);
            } catch (err) {
              // Compaction of the backlog starts at once: the failpoint may kill the gateway before the check.
              // Its stderr can arrive after the connection broke: it is complete once the process has closed.
              if (gw !== undefined) await Promise.race([gw.exited, delay(EXIT_WAIT_MS, undefined, { ref: false })]);
              const said = err instanceof GatewayStartError ? err.stderr : (gw?.otherStderr.join('\n') ?? '');
              if (env === undefined || !said.includes(`failpoint ${point}: crashing`)) throw err;
              await gw?.exited;
              gw = undefined;
              killedAtStep++;
              t.diagnostic(`cycle ${cycle}: killed at ${env.HOLDFAST_FAILPOINTS} while starting`);
              const alone = prefixMismatch(await storeAlone(store), state.log, state.unacked).mismatch;
              assert.equal(alone, undefined, `cycle ${cycle}, seed ${seed}: ${alone}`);
              continue;
            }
            const diff = state.model.mismatch(actual, unacked);
            assert.equal(diff, undefined, `cycle ${cycle}, seed ${seed}: ${diff}`);
            state.model.adopt(actual);

            const victim = gw;
            // A failpoint kill comes from inside; the timer is the fallback when its step is not reached.
            const killAfter =
              env === undefined
                ? KILL_AFTER_MS.min + Math.floor(state.random() * (KILL_AFTER_MS.max - KILL_AFTER_MS.min))
                : 4 * KILL_AFTER_MS.max;
            let timer: NodeJS.Timeout | undefined;
            const killed = Promise.race([
              victim.exited,
              new Promise<void>((resolve) => (timer = setTimeout(resolve, killAfter))).then(() => victim.kill('SIGKILL')),
            ]);
            const ackedBefore = state.acknowledged;
            unacked = await writeUntilConnectionLost(client, state);
            const status = await killed;
            clearTimeout(timer);
            assert.equal(
              status.signal,
              'SIGKILL',
              `the gateway died by itself (${JSON.stringify(status)}): ${victim.otherStderr.join('\n')}`,
            );
            const fromStep = env !== undefined && victim.otherStderr.some((l) => l.includes(`failpoint ${point}: crashing`));
            if (fromStep) killedAtStep++;
            t.diagnostic(
              `cycle ${cycle} (upload delay ${uploadDelay}): ${state.acknowledged - ackedBefore} writes acknowledged, ${unacked.length} in flight at the kill ${fromStep ? `at ${env.HOLDFAST_FAILPOINTS}` : `after ${killAfter} ms${env !== undefined ? ` (${env.HOLDFAST_FAILPOINTS} not reached)` : ''}`}`,
            );
            gw = undefined;
            const alone = prefixMismatch(await storeAlone(store), state.log, state.unacked).mismatch;
            assert.equal(alone, undefined, `cycle ${cycle}, seed ${seed}: ${alone}`);
          }

          // Last restart: check once more, then let the uploader empty the journal.
          gw = await startGateway({ store, journalDir, createVolume: '', args: gatewayArgs('0') });
          let client = await connect(gw);
          let actual = await readVolume(client);
          assert.equal(state.model.mismatch(actual, unacked), undefined, `after the last kill, seed ${seed}`);
          state.model.adopt(actual);
          await client.disconnect();
          await waitForJournalDrained(journalDir, VOLUME);
          assert.equal(await gw.stop(), 0);

          // A gateway with an empty journal sees only the store: it must hold everything.
          gw = await startGateway({ store, journalDir: await stores.tempDir('empty-journal'), createVolume: '', args: gatewayArgs('0') });
          client = await connect(gw);
          actual = await readVolume(client);
          assert.equal(state.model.mismatch(actual, []), undefined, `from the store alone, seed ${seed}`);
          await client.disconnect();
          assert.equal(await gw.stop(), 0);
          gw = undefined;
          t.diagnostic(`${state.acknowledged} writes acknowledged in all; ${killedAtStep} kills at a compaction or GC step`);
          assert.ok(killedAtStep >= CYCLES[kind] / 2, `only ${killedAtStep} of ${CYCLES[kind]} kills happened inside compaction or GC`);
        } catch (err) {
          for (const line of gw?.logs.filter((l) => l.level >= 40) ?? []) t.diagnostic(`gateway: ${JSON.stringify(line)}`);
          throw err;
        } finally {
          await gw?.kill('SIGKILL');
        }
      },
    );
  });
}
