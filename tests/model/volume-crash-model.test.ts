import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { FAILPOINTS, type FailpointName, Failpoints } from '../../gateway/failpoints.js';
import { readHead } from '../../gateway/image/take-volume.js';
import { VolumeImage } from '../../gateway/image/volume-image.js';
import { VolumeCatalog } from '../../gateway/volume/catalog.js';
import type { Volume } from '../../gateway/volume/volume.js';
import { CrashSwitch, SimulatedCrash } from '../helpers/crashable.js';
import { MemoryStore } from '../helpers/memory-store.js';
import { openTestVolume } from '../helpers/volume-fixture.js';

const EXTENT = 64 * 1024;
const SIZE = 6 * EXTENT + 4096 * 3;

type Op =
  | { kind: 'write'; offset: number; length: number; fill: number }
  | { kind: 'zero'; offset: number; length: number }
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'drain' }
  | { kind: 'compact' }
  | { kind: 'reopen' }
  | { kind: 'crash'; at: FailpointName };

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 2 * EXTENT }))
  .map(([offset, length]) => ({ offset, length: Math.min(length, SIZE - offset) }));

// GC and the format 1 upgrade run outside a volume: their steps are crashed in the integration tests.
const CRASH_POINTS = FAILPOINTS.filter((f) => !f.startsWith('gc.') && !f.startsWith('upgrade.'));

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 255 })).map(([r, fill]) => ({ kind: 'write' as const, ...r, fill })) },
  { weight: 2, arbitrary: range.map((r) => ({ kind: 'zero' as const, ...r })) },
  { weight: 3, arbitrary: range.map((r) => ({ kind: 'read' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'drain' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'compact' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 2, arbitrary: fc.constantFrom(...CRASH_POINTS).map((at) => ({ kind: 'crash' as const, at })) },
);

interface Change {
  readonly seq: number;
  readonly offset: number;
  readonly length: number;
  /** 0 for zeros. */
  readonly fill: number;
}

function imageAt(history: readonly Change[], seq: number): Buffer {
  const img = Buffer.alloc(SIZE);
  for (const c of history) if (c.seq <= seq) img.fill(c.fill, c.offset, c.offset + c.length);
  return img;
}

/**
 * Random operations with crashes injected at every step of the storage protocol (upload, commit,
 * compaction, takeover), against a plain Buffer. After every crash two things must hold: the store
 * alone (journal thrown away) is exactly the writes up to its head's sequence — never a mix — and the
 * volume reopened from store and journal holds every acknowledged write.
 */
test('crashes at every step: the store alone is always a prefix of the writes, and nothing acknowledged is lost', async (t) => {
  const crashes = new Map<string, number>();
  let compactedExtents = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), fc.constantFrom(0, 2 * EXTENT), async (ops, cacheBytes) => {
      const dir = await mkdtemp(join(tmpdir(), 'hf-crash-model-'));
      const store = new MemoryStore();
      await new VolumeCatalog(store).create({ name: 'model', size: SIZE, extentSize: EXTENT });
      const model = Buffer.alloc(SIZE);
      const history: Change[] = [];
      let crash = new CrashSwitch();
      let failpoints: Failpoints;
      const open = async (): Promise<Volume> => {
        for (;;) {
          crash = new CrashSwitch();
          const sw = crash;
          failpoints = new Failpoints((name) => {
            sw.dead = true;
            throw new SimulatedCrash(name);
          });
          try {
            return await openTestVolume(crash.store(store), dir, {
              cacheBytes,
              fileOps: crash.fileOps(),
              failpoints,
              // Small budgets: compaction runs all the time.
              compaction: { indexMemoryBytes: 8 * 1024, deltaBytes: 256 * 1024, deltaCount: 3 },
            });
          } catch (err) {
            if (!(err instanceof SimulatedCrash)) throw err;
          }
        }
      };
      const checkStoreAlone = async (): Promise<void> => {
        const { head } = await readHead(store, 'model');
        const image = await VolumeImage.load(store, head);
        const got = Buffer.alloc(SIZE);
        await image.read(0, SIZE, got, 0);
        assert.ok(got.equals(imageAt(history, head.seq)), `the store alone is not the writes up to sequence ${head.seq}`);
      };
      const openAfterCrashAtTakeover = async (): Promise<Volume> => {
        const sw = new CrashSwitch();
        const fp = new Failpoints((name) => {
          sw.dead = true;
          throw new SimulatedCrash(name);
        });
        fp.arm('takeover.after-head', 'crash');
        await assert.rejects(openTestVolume(sw.store(store), dir, { cacheBytes, fileOps: sw.fileOps(), failpoints: fp }), SimulatedCrash);
        await checkStoreAlone();
        return open();
      };
      let volume = await open();
      let inFlight: Promise<void>[] = [];
      const settle = async (): Promise<void> => {
        await Promise.all(inFlight);
        inFlight = [];
      };
      const record = (offset: number, length: number, fill: number): void => {
        history.push({ seq: volume.stats().lastSeq + 1, offset, length, fill });
        model.fill(fill, offset, offset + length);
      };
      try {
        for (const o of ops) {
          switch (o.kind) {
            case 'write':
              record(o.offset, o.length, o.fill);
              inFlight.push(volume.write(o.offset, Buffer.alloc(o.length, o.fill), false));
              break;
            case 'zero':
              record(o.offset, o.length, 0);
              inFlight.push(volume.writeZeroes(o.offset, o.length, { fua: false, noHole: false }));
              break;
            case 'read': {
              await settle();
              const got = await volume.read(o.offset, o.length);
              assert.ok(got.equals(model.subarray(o.offset, o.offset + o.length)), `read ${o.offset}+${o.length} differs`);
              break;
            }
            case 'drain':
              await settle();
              await volume.drain();
              break;
            case 'compact':
              await settle();
              await volume.compact();
              break;
            case 'reopen':
              await settle();
              await volume.close();
              volume = await open();
              break;
            case 'crash': {
              // Every write is acknowledged first, so after the crash the volume must hold all of them.
              await settle();
              failpoints!.arm(o.at, 'crash');
              const sw = crash;
              if (o.at === 'takeover.after-head') {
                // The crash hits the next open; open() retries it as a restarted process would.
                await volume.close();
                crashes.set(o.at, (crashes.get(o.at) ?? 0) + 1);
                volume = await openAfterCrashAtTakeover();
                break;
              }
              const work = Promise.allSettled([volume.drain(), volume.compact()]);
              const dead = new Promise<void>((resolve) => {
                const poll = setInterval(() => {
                  if (sw.dead) {
                    clearInterval(poll);
                    resolve();
                  }
                }, 1);
                void work.then(() => {
                  clearInterval(poll);
                  resolve();
                });
              });
              await dead;
              if (!sw.dead) {
                failpoints!.disarm();
                break;
              }
              crashes.set(o.at, (crashes.get(o.at) ?? 0) + 1);
              compactedExtents += volume.stats().compactedExtents;
              await checkStoreAlone();
              volume = await open();
              break;
            }
          }
        }
        await settle();
        assert.ok((await volume.read(0, SIZE)).equals(model), 'final contents differ');
        await volume.drain();
        await checkStoreAlone();
        await volume.compact();
        await checkStoreAlone();
        compactedExtents += volume.stats().compactedExtents;
        await volume.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: 300 },
  );
  t.diagnostic(`crashes by step: ${JSON.stringify(Object.fromEntries(crashes))}; extents compacted: ${compactedExtents}`);
  // The test is only worth something if the crashes really happened at each step.
  for (const point of CRASH_POINTS) assert.ok((crashes.get(point) ?? 0) > 0, `no crash was injected at ${point}`);
});
