import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { StoreError } from '../../gateway/store/object-store.js';
import type { Volume } from '../../gateway/volume/volume.js';
import { VolumeCatalog } from '../../gateway/volume/catalog.js';
import { StorageFailedError } from '../../gateway/hang/errors.js';
import { MemoryStore } from '../helpers/memory-store.js';
import { openTestVolume } from '../helpers/volume-fixture.js';

const EXTENT = 64 * 1024;
const SIZE = 8 * EXTENT + 4096 * 3; // a short last extent on purpose

type Op =
  | { kind: 'write'; offset: number; length: number; fill: number }
  | { kind: 'zero'; offset: number; length: number }
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'drain' }
  | { kind: 'reopen' }
  | { kind: 'outage'; on: boolean };

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 3 * EXTENT }))
  .map(([offset, length]) => ({ offset, length: Math.min(length, SIZE - offset) }));

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 255 })).map(([r, fill]) => ({ kind: 'write' as const, ...r, fill })) },
  { weight: 2, arbitrary: range.map((r) => ({ kind: 'zero' as const, ...r })) },
  { weight: 5, arbitrary: range.map((r) => ({ kind: 'read' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'drain' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.boolean().map((on) => ({ kind: 'outage' as const, on })) },
);

async function openVolume(store: MemoryStore, dir: string, cacheBytes: number): Promise<Volume> {
  if (!(await new VolumeCatalog(store).exists('model')))
    await new VolumeCatalog(store).create({ name: 'model', size: SIZE, extentSize: EXTENT });
  // Reads that need the unreachable store fail at once instead of being held: the model test is
  // about contents; holding is tested in tests/unit/hang-monitor.test.ts and the outage tests.
  return openTestVolume(store, dir, { cacheBytes });
}

/**
 * Random operation sequences against the volume (journal + pending changes + extent cache +
 * uploader + replay) compared with a plain Buffer. Writes and reads run concurrently in small
 * groups, as NBD clients issue them; each group touches disjoint ranges only when the model
 * could not otherwise tell which concurrent write wins.
 */
for (const cacheBytes of [0, 2 * EXTENT, 64 * EXTENT]) {
  test(`volume matches an in-memory disk (cache ${cacheBytes / EXTENT} extents)`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40 }), async (ops) => {
        const dir = await mkdtemp(join(tmpdir(), 'hf-model-'));
        const store = new MemoryStore();
        const model = Buffer.alloc(SIZE);
        let volume = await openVolume(store, dir, cacheBytes);
        try {
          let inFlight: Promise<void>[] = [];
          const settle = async () => {
            await Promise.all(inFlight);
            inFlight = [];
          };
          for (const o of ops) {
            switch (o.kind) {
              case 'write': {
                // Applied to the model in issue order: the volume must keep that order too.
                const data = Buffer.alloc(o.length, o.fill);
                data.copy(model, o.offset);
                inFlight.push(volume.write(o.offset, data, false));
                break;
              }
              case 'zero':
                model.fill(0, o.offset, o.offset + o.length);
                inFlight.push(volume.writeZeroes(o.offset, o.length, { fua: false, noHole: false }));
                break;
              case 'read': {
                await settle();
                // With holding off, a read that needs the unreachable store fails; one that
                // succeeds must be right (the journal alone can serve what it fully covers).
                const got = await volume.read(o.offset, o.length).catch((err: unknown) => {
                  if (store.failing && err instanceof StorageFailedError && err.cause instanceof StoreError) return undefined;
                  throw err;
                });
                if (got !== undefined)
                  assert.ok(got.equals(model.subarray(o.offset, o.offset + o.length)), `read ${o.offset}+${o.length} differs`);
                break;
              }
              case 'drain':
                await settle();
                if (!store.failing) await volume.drain();
                break;
              case 'reopen':
                await settle();
                await volume.close();
                // A volume is taken by reading and writing its head: the store must answer by then.
                store.failing = false;
                volume = await openVolume(store, dir, cacheBytes);
                break;
              case 'outage':
                store.failing = o.on;
                break;
            }
          }
          await settle();
          store.failing = false;
          assert.ok((await volume.read(0, SIZE)).equals(model), 'final contents differ');
          await volume.drain();
          await volume.close();
          // A fresh gateway with an empty journal must see the same bytes from the store alone.
          await rm(dir, { recursive: true });
          const fresh = await openVolume(store, dir, cacheBytes);
          assert.ok((await fresh.read(0, SIZE)).equals(model), 'store contents differ after drain');
          assert.equal(fresh.stats().journalSegments, 0);
          await fresh.close();
        } finally {
          store.failing = false;
          await volume.close();
          await rm(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 150 },
    );
  });
}
