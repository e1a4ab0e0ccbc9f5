import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { collectGarbage } from '../../gateway/image/gc.js';
import { isDataObjectKey } from '../../gateway/image/layout.js';
import { cloneFromSnapshot, deleteSnapshot, listSnapshots, readSnapshot, storeSnapshot } from '../../gateway/image/snapshots.js';
import { readHead } from '../../gateway/image/take-volume.js';
import { VolumeImage } from '../../gateway/image/volume-image.js';
import { StorageFailedError } from '../../gateway/hang/errors.js';
import { Journal } from '../../gateway/journal/journal.js';
import { RecordKind } from '../../gateway/journal/record.js';
import { VolumeCatalog } from '../../gateway/volume/catalog.js';
import type { Volume } from '../../gateway/volume/volume.js';
import type { HoldfastEvent } from '../../shared/events.js';
import { DataCorruptError, InvalidArgumentError, RequestAbortedError, VolumeBusyError } from '../../shared/errors.js';
import type { StorePutOptions } from '../../gateway/store/object-store.js';
import { MemoryStore } from '../helpers/memory-store.js';
import { openTestVolume } from '../helpers/volume-fixture.js';
import { uncommittedDeltasMax } from '../../gateway/volume/uploader.js';

const logger = pino({ level: 'silent' });
const MiB = 1024 * 1024;

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hf-format2-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function appendAll(journal: Journal, n: number, at = 0): Promise<void> {
  for (let i = 0; i < n; i++) {
    void journal.reserve(4);
    journal.append(RecordKind.Write, at + i * 4, 4, Buffer.alloc(4, i + 1));
  }
  await journal.sync();
}

describe('journal epochs and seals', () => {
  const open = (sub: string, epoch: number, committedSeq: number, adoptFromEpoch: number) =>
    Journal.open({
      dir: join(dir, sub),
      segmentBytes: 1 << 20,
      limitBytes: 1 << 26,
      maxPayload: 1 << 20,
      logger,
      epoch,
      committedSeq,
      adoptFromEpoch,
    });

  it('adopts the previous epoch above the committed sequence, seals it, and ignores what a zombie appends after', async () => {
    const first = await open('seal', 1, 0, 0);
    await appendAll(first.journal, 5);
    // The next owner (epoch 2) takes the directory: records 3..5 are not in the store yet.
    const second = await open('seal', 2, 2, 1);
    assert.deepEqual(
      second.entries.map((e) => e.seq),
      [3, 4, 5],
    );
    assert.ok((await readdir(join(dir, 'seal'))).includes('seal-00000001'));
    // The deposed epoch-1 writer goes on appending to its segment.
    await appendAll(first.journal, 2, 100);
    await first.journal.close();
    await second.journal.close();
    const third = await open('seal', 3, 2, 1);
    assert.deepEqual(
      third.entries.map((e) => e.seq),
      [3, 4, 5],
      "the zombie's records are never replayed",
    );
    await third.journal.close();
  });

  it('replays nothing of an older lineage', async () => {
    const first = await open('lineage', 1, 0, 0);
    await appendAll(first.journal, 3);
    await first.journal.close();
    // Epoch 4's lineage began at 4: epoch 1's records predate a takeover by another journal.
    const later = await open('lineage', 4, 0, 4);
    assert.deepEqual(later.entries, []);
    await later.journal.close();
  });
});

async function newVolume(name: string, size = 8 * MiB): Promise<{ store: MemoryStore; volume: Volume }> {
  const store = new MemoryStore();
  await new VolumeCatalog(store).create({ name, size, extentSize: MiB });
  return { store, volume: await openTestVolume(store, join(dir, `j-${name}-${Date.now()}`), { name, cacheBytes: 0 }) };
}

async function storeAlone(store: MemoryStore, name: string, snapshot?: string): Promise<Buffer> {
  const head = snapshot === undefined ? (await readHead(store, name)).head : await readSnapshot(store, name, snapshot);
  const image = await VolumeImage.load(store, head);
  const out = Buffer.alloc(head.size);
  await image.read(0, head.size, out, 0);
  return out;
}

describe('snapshots, clones and garbage collection', () => {
  it('a snapshot is the volume as of the request; a clone starts there and diverges without touching its parent', async () => {
    const { store, volume } = await newVolume('parent');
    await volume.write(0, Buffer.alloc(MiB, 1), false);
    await volume.write(3 * MiB, Buffer.alloc(4096, 2), false);
    const snap = await storeSnapshot(store, await volume.committedHead(), 's1');
    assert.equal(snap.name, 's1');
    await volume.write(0, Buffer.alloc(4096, 9), false);
    await volume.drain();
    const atSnapshot = await storeAlone(store, 'parent', 's1');
    assert.equal(atSnapshot[0], 1, 'the snapshot does not see a later write');
    assert.equal(atSnapshot[3 * MiB], 2);
    assert.equal((await storeAlone(store, 'parent'))[0], 9);

    await cloneFromSnapshot(store, await readSnapshot(store, 'parent', 's1'), 'child');
    const child = await openTestVolume(store, join(dir, 'j-child'), { name: 'child', cacheBytes: 0 });
    assert.ok((await child.read(0, 8 * MiB)).equals(atSnapshot));
    await child.write(3 * MiB, Buffer.alloc(4096, 7), false);
    await child.drain();
    await child.compact();
    assert.equal((await child.read(3 * MiB, 1))[0], 7);
    assert.equal((await storeAlone(store, 'parent'))[3 * MiB], 2, 'the parent is unchanged');
    assert.deepEqual(
      (await listSnapshots(store, 'parent')).map((s) => s.name),
      ['s1'],
    );
    await child.close();
    await volume.close();
  });

  it('collects nothing still referenced, and everything else once the grace period is over', async () => {
    const { store, volume } = await newVolume('gcv');
    for (let i = 0; i < 6; i++) {
      await volume.write(i * 512 * 1024, Buffer.alloc(512 * 1024, i + 1), false);
      await volume.drain();
    }
    await storeSnapshot(store, await volume.committedHead(), 'keep');
    await volume.write(0, Buffer.alloc(2 * MiB, 0x55), false);
    await volume.drain();
    await volume.compact();
    const before = await storeAlone(store, 'gcv');
    const snapBefore = await storeAlone(store, 'gcv', 'keep');
    // With a grace period nothing young goes, referenced or not.
    const young = await collectGarbage(store, { graceMs: 3_600_000 });
    assert.equal(young.deletedObjects, 0);
    const report = await collectGarbage(store, { graceMs: 0 });
    assert.ok(report.deletedObjects > 0, 'compaction left unreferenced objects');
    assert.ok((await storeAlone(store, 'gcv')).equals(before));
    assert.ok((await storeAlone(store, 'gcv', 'keep')).equals(snapBefore), 'the snapshot keeps its objects');
    await deleteSnapshot(store, 'gcv', 'keep');
    // A clock a second ahead: the deleted snapshot's trash entry is past the grace period, whatever the timer resolution.
    const later = () => new Date(Date.now() + 1000);
    await collectGarbage(store, { graceMs: 0, now: later });
    let stored = 0;
    for (const [key, body] of store.objects) if (isDataObjectKey(key)) stored += body.length;
    const after = await collectGarbage(store, { graceMs: 0, dryRun: true, now: later });
    assert.equal(after.referencedBytes, stored, 'what is left is exactly what is referenced');
    assert.ok((await storeAlone(store, 'gcv')).equals(before));
    await volume.close();
  });
});

describe('corruption', () => {
  it('a flipped byte in a stored object fails the read that needs it with EIO, is reported, and the rest is still served', async () => {
    const events: HoldfastEvent[] = [];
    const store = new MemoryStore();
    await new VolumeCatalog(store).create({ name: 'c', size: 8 * MiB, extentSize: MiB });
    const volume = await openTestVolume(store, join(dir, 'j-c'), {
      name: 'c',
      cacheBytes: 0,
      events: { publish: (e) => events.push(e), close: async () => undefined },
    });
    await volume.write(0, Buffer.alloc(64 * 1024, 3), false);
    await volume.write(5 * MiB, Buffer.alloc(64 * 1024, 4), false);
    await volume.drain();
    const delta = [...store.objects.keys()].find((k) => k.includes('/deltas/'))!;
    store.objects.get(delta)![1000]! ^= 0x10;
    await assert.rejects(
      volume.read(0, 4096),
      (err: unknown) => err instanceof StorageFailedError && err.cause instanceof DataCorruptError,
    );
    assert.ok((await volume.read(5 * MiB, 4096)).equals(Buffer.alloc(4096, 4)), 'the rest of the volume is served');
    assert.equal(volume.stats().corruptReads, 1);
    assert.deepEqual(
      events.filter((e) => e.kind === 'data-corrupt').map((e) => e.volume),
      ['c'],
    );
    await volume.close();
  });
});

describe('resize', () => {
  /** Random bytes at random places, written to the volume and to a plain Buffer alike. */
  async function scribble(volume: Volume, model: Buffer, seed: number, count: number): Promise<void> {
    let x = seed;
    const next = (n: number): number => {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      return x % n;
    };
    for (let i = 0; i < count; i++) {
      const length = 512 * (1 + next(256));
      const offset = 512 * next((model.length - length) / 512);
      const data = Buffer.alloc(length, 1 + next(255));
      await volume.write(offset, data, false);
      data.copy(model, offset);
    }
  }

  it('grows and shrinks to sizes inside an extent: the volume, a reopened volume and the store alone all equal a Buffer', async () => {
    const { store, volume: first } = await newVolume('resized');
    let volume = first;
    const reopen = async (): Promise<void> => {
      await volume.close({ release: true });
      volume = await openTestVolume(store, join(dir, `j-resized-${Date.now()}`), { name: 'resized', cacheBytes: 64 * MiB });
    };
    await reopen();
    let model = Buffer.alloc(8 * MiB);
    const check = async (what: string): Promise<void> => {
      assert.equal(volume.size, model.length, `${what}: size`);
      assert.ok((await volume.read(0, model.length)).equals(model), `${what}: the volume reads as the model`);
      await volume.drain();
      assert.ok((await storeAlone(store, 'resized')).equals(model), `${what}: the store alone is the model`);
    };
    await scribble(volume, model, 1, 40);
    await volume.read(0, model.length); // every extent cached at its old length
    await volume.resize(8.5 * MiB);
    model = Buffer.concat([model, Buffer.alloc(MiB / 2)]);
    await check('grown into a partial extent');
    await scribble(volume, model, 2, 40);
    await volume.resize(10 * MiB);
    model = Buffer.concat([model, Buffer.alloc(1.5 * MiB)]);
    await scribble(volume, model, 3, 40);
    await check('grown past it');
    await volume.compact();
    await reopen();
    await check('grown, compacted and reopened');

    volume.attach();
    await assert.rejects(volume.resize(5.5 * MiB), VolumeBusyError, 'a shrink with a client attached is refused');
    volume.detach();
    await volume.resize(5.5 * MiB);
    model = model.subarray(0, 5.5 * MiB);
    await check('shrunk');
    assert.ok((await readHead(store, 'resized')).head.released.length > 0, 'the base extents past the new end are released for GC');
    await volume.resize(9 * MiB);
    model = Buffer.concat([model, Buffer.alloc(3.5 * MiB)]);
    await check('grown again: the cut part reads as zeros');
    await reopen();
    await check('reopened');
    await assert.rejects(volume.resize(1000), InvalidArgumentError);
    await volume.close();
  });
});

describe('compaction of trimmed extents', () => {
  it('an extent that reads as zeros loses its base and its runs without an object written for it', async () => {
    const { store, volume } = await newVolume('trimmed', 16 * MiB);
    await volume.write(0, Buffer.alloc(4 * MiB, 5), false);
    await volume.drain();
    await volume.compact();
    const before = (await readHead(store, 'trimmed')).head;
    assert.equal(before.pages.length > 0, true, 'the written extents have bases');
    await volume.trim(0, 16 * MiB, false);
    await volume.write(8 * MiB, Buffer.alloc(4096, 6), false);
    await volume.drain();
    const puts = store.puts;
    await volume.compact();
    const stats = volume.stats();
    assert.equal(stats.deltas, 0, 'every delta folded');
    assert.equal(stats.indexBytes < 64 * 1024, true, `index ${stats.indexBytes} bytes after compaction`);
    const expected = Buffer.alloc(16 * MiB);
    expected.fill(6, 8 * MiB, 8 * MiB + 4096);
    assert.ok((await storeAlone(store, 'trimmed')).equals(expected));
    assert.ok((await volume.read(0, 16 * MiB)).equals(expected));
    const head = (await readHead(store, 'trimmed')).head;
    assert.ok(head.released.length >= 4, 'the bases of the trimmed extents are released');
    // One base (extent 8), the index page and the head: the 15 zero extents cost no object.
    assert.ok(store.puts - puts <= 4, `${store.puts - puts} objects written by the compaction`);
    await volume.close();
  });
});

describe('close while the store is down', () => {
  it('ends even though the head commit under way fails after the stop, and loses nothing acknowledged', async () => {
    // The head write is held until the volume is closing, then fails as an unreachable store would.
    const store = new (class extends MemoryStore {
      holdHead: { reached: () => void; release: Promise<void> } | undefined;
      override async putIfMatch(key: string, body: Buffer, etag: string): Promise<string> {
        const hold = this.holdHead;
        if (hold !== undefined && key.endsWith('/head')) {
          this.holdHead = undefined;
          hold.reached();
          await hold.release;
          this.failing = true;
        }
        return super.putIfMatch(key, body, etag);
      }
    })();
    await new VolumeCatalog(store).create({ name: 'down', size: 8 * MiB, extentSize: MiB });
    const journal = join(dir, 'j-down');
    const volume = await openTestVolume(store, journal, { name: 'down' });
    let release = (): void => undefined;
    const reached = new Promise<void>((resolve) => {
      store.holdHead = { reached: resolve, release: new Promise<void>((r) => (release = r)) };
    });
    await volume.write(MiB, Buffer.alloc(8192, 7), false);
    const drained = volume.drain().then(
      () => 'drained',
      (err: unknown) => (err instanceof RequestAbortedError ? 'aborted' : err),
    );
    await reached;
    const closed = volume.close();
    release();
    const outcome = await Promise.race([
      closed.then(() => 'closed'),
      new Promise((resolve) => setTimeout(resolve, 10_000, 'still closing after 10 s').unref()),
    ]);
    assert.equal(outcome, 'closed');
    assert.equal(await drained, 'aborted', 'a drain under way is told the change was not committed');
    store.failing = false;
    const reopened = await openTestVolume(store, journal, { name: 'down' });
    assert.ok((await reopened.read(MiB, 8192)).equals(Buffer.alloc(8192, 7)), 'the acknowledged write is replayed');
    await reopened.drain();
    await reopened.close();
  });
});

describe('upload pipeline', () => {
  it('PUTs later deltas while a head commit is under way, never more at once than the concurrency', async () => {
    // Head writes and delta PUTs each wait at a gate the test opens.
    const store = new (class extends MemoryStore {
      holdHeads: Promise<void> | undefined;
      holdDeltas: Promise<void> | undefined;
      headsHeld = 0;
      deltasPut = 0;
      deltasInFlight = 0;
      mostInFlight = 0;
      override async putIfMatch(key: string, body: Buffer, etag: string): Promise<string> {
        if (this.holdHeads !== undefined && key.endsWith('/head')) {
          this.headsHeld++;
          await this.holdHeads;
        }
        return super.putIfMatch(key, body, etag);
      }
      override async put(key: string, body: Buffer, opts?: StorePutOptions): Promise<void> {
        if (!key.includes('/deltas/')) return super.put(key, body, opts);
        this.deltasInFlight++;
        this.mostInFlight = Math.max(this.mostInFlight, this.deltasInFlight);
        try {
          await this.holdDeltas;
          await super.put(key, body, opts);
          this.deltasPut++;
        } finally {
          this.deltasInFlight--;
        }
      }
    })();
    const until = async (what: string, done: () => boolean): Promise<void> => {
      const deadline = Date.now() + 10_000;
      while (!done()) {
        if (Date.now() > deadline) assert.fail(`${what}: not within 10 s`);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    };
    await new VolumeCatalog(store).create({ name: 'pipe', size: 16 * MiB, extentSize: MiB });
    const concurrency = 2;
    const volume = await openTestVolume(store, join(dir, 'j-pipe'), { name: 'pipe', uploadConcurrency: concurrency });
    const expected = Buffer.alloc(16 * MiB);
    const write = async (i: number): Promise<void> => {
      const data = Buffer.alloc(64 * 1024, i + 1);
      await volume.write(i * data.length, data, false);
      data.copy(expected, i * data.length);
    };
    let releaseHeads = (): void => undefined;
    store.holdHeads = new Promise<void>((resolve) => (releaseHeads = resolve));
    await write(0);
    await until('the first head write', () => store.headsHeld === 1);
    const putBefore = store.deltasPut;
    let releaseDeltas = (): void => undefined;
    store.holdDeltas = new Promise<void>((resolve) => (releaseDeltas = resolve));
    // Each write is its own delta (no upload delay). Were slots held until the commit, the first
    // delta would keep one and only one PUT could go.
    for (let i = 1; i <= 2 * concurrency; i++) await write(i);
    await until(`${concurrency} delta PUTs at once while the head write is held`, () => store.deltasInFlight === concurrency);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(store.deltasInFlight, concurrency, 'no more PUTs than the concurrency');
    releaseDeltas();
    await until('every delta PUT while the first commit is held', () => store.deltasPut === putBefore + 2 * concurrency);
    assert.equal(store.headsHeld, 1, 'one head write at a time');
    // Beyond the bound on deltas not committed, writes are still acknowledged; their deltas wait.
    const bound = uncommittedDeltasMax(concurrency);
    for (let i = 2 * concurrency + 1; i < bound + 8; i++) await write(i);
    await until('the bound on deltas not committed', () => store.deltasPut - putBefore + 1 === bound);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(store.deltasPut - putBefore + 1, bound, 'no delta beyond the bound is PUT');
    store.holdHeads = undefined;
    releaseHeads();
    await volume.drain();
    assert.equal(store.mostInFlight, concurrency);
    assert.ok((await volume.read(0, 16 * MiB)).equals(expected));
    await volume.close();
  });
});
