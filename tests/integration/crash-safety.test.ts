import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { type GatewayProcess, type StoreKind, type Stores, type StoreTarget, STORE_KINDS, startGateway, startStores, waitForJournalDrained } from '../helpers/gateway-process.js';
import { NbdClient, NbdConnectionError } from '../helpers/nbd-client.js';
import { seededRandom } from '../helpers/seeded-random.js';

/**
 * SIGKILLs the gateway at random moments under a stream of overlapping writes and checks, after
 * every restart on the same journal, that each write the gateway acknowledged reads back.
 */

const VOLUME = 'crash';
/** Small extents so that a few MiB of random writes keep many extents dirty; a short last extent. */
const EXTENT_SIZE = 256 * 1024;
const VOLUME_SIZE = 16 * EXTENT_SIZE + 96 * 1024;
const MAX_WRITE = 64 * 1024;
const IN_FLIGHT = 16;
const CYCLES: Record<StoreKind, number> = { local: 12, s3: 10 };
const KILL_AFTER_MS = { min: 50, max: 1500 };
const READ_CHUNK = 1024 * 1024;


interface Write {
  readonly seq: number;
  readonly offset: number;
  readonly data: Buffer;
}

/**
 * Every 8-byte word a write covers holds its sequence number and the word's position in the volume,
 * so each write's bytes are unique and a mismatch names the write that left the bytes found.
 */
function stampedWrite(seq: number, offset: number, length: number): Write {
  const first = Math.floor(offset / 8) * 8;
  const words = Buffer.allocUnsafe(Math.ceil((offset + length - first) / 8) * 8);
  for (let at = 0; at < words.length; at += 8) {
    words.writeUInt32LE(seq, at);
    words.writeUInt32LE((first + at) / 8, at + 4);
  }
  return { seq, offset, data: words.subarray(offset - first, offset - first + length) };
}

/** The stamp of the volume word holding byte `at` (a write that starts mid-word leaves part of it older). */
function describeWord(volume: Buffer, at: number): string {
  const word = Math.floor(at / 8) * 8;
  return `write #${volume.readUInt32LE(word)} word ${volume.readUInt32LE(word + 4)} (${volume.subarray(word, word + 8).toString('hex')})`;
}

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
  if (!(broken instanceof NbdConnectionError)) throw broken;
  return unacked;
}

async function connect(gw: GatewayProcess): Promise<NbdClient> {
  const client = await NbdClient.connect({ host: '127.0.0.1', port: gw.port, exportName: VOLUME });
  assert.equal(client.size, VOLUME_SIZE);
  return client;
}

function gatewayArgs(uploadDelay: string): string[] {
  return ['--extent-size', '256KiB', '--cache-size', '512KiB', '--segment-size', '1MiB', '--upload-delay', uploadDelay];
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

    it(`keeps every acknowledged write through ${CYCLES[kind]} SIGKILLs`, { timeout: 120_000 }, async (t: TestContext) => {
      const seed = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 32));
      t.diagnostic(`seed ${seed} (CRASH_SEED=${seed} repeats these writes)`);
      const store: StoreTarget = await stores.fresh();
      const journalDir = await stores.tempDir('journal');
      const state: WriterState = { model: new DiskModel(), random: seededRandom(seed), nextSeq: 1, acknowledged: 0 };
      let unacked: Write[] = [];
      let gw: GatewayProcess | undefined;
      try {
        for (let cycle = 0; cycle < CYCLES[kind]; cycle++) {
          // Every other cycle uploads at once, so that kills land in the middle of uploads.
          const uploadDelay = cycle % 2 === 0 ? '0' : '300ms';
          gw = await startGateway({ store, journalDir, createVolume: `${VOLUME}=${VOLUME_SIZE}`, args: gatewayArgs(uploadDelay) });
          const client = await connect(gw);
          const actual = await readVolume(client);
          const diff = state.model.mismatch(actual, unacked);
          assert.equal(diff, undefined, `cycle ${cycle}, seed ${seed}: ${diff}`);
          state.model.adopt(actual);

          const victim = gw;
          const killAfter = KILL_AFTER_MS.min + Math.floor(state.random() * (KILL_AFTER_MS.max - KILL_AFTER_MS.min));
          const killed = new Promise((resolve) => setTimeout(resolve, killAfter)).then(() => victim.kill('SIGKILL'));
          const ackedBefore = state.acknowledged;
          unacked = await writeUntilConnectionLost(client, state);
          const status = await killed;
          assert.equal(status.signal, 'SIGKILL', `the gateway died by itself (${JSON.stringify(status)}): ${victim.otherStderr.join('\n')}`);
          t.diagnostic(`cycle ${cycle} (upload delay ${uploadDelay}): ${state.acknowledged - ackedBefore} writes acknowledged, ${unacked.length} in flight at the kill after ${killAfter} ms`);
          gw = undefined;
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
        t.diagnostic(`${state.acknowledged} writes acknowledged in all`);
      } catch (err) {
        for (const line of gw?.logs.filter((l) => l.level >= 40) ?? []) t.diagnostic(`gateway: ${JSON.stringify(line)}`);
        throw err;
      } finally {
        await gw?.kill('SIGKILL');
      }
    });
  });
}
