import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, readlink, rm, truncate, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { DiskCache } from '../../gateway/disk-cache/disk-cache.js';
import { readHead } from '../../gateway/image/take-volume.js';
import type { ObjectRef } from '../../gateway/image/object-reader.js';
import { VolumeCatalog } from '../../gateway/volume/catalog.js';
import type { Volume } from '../../gateway/volume/volume.js';
import { mountTmpfs } from '../helpers/journal-disks.js';
import { CountingStore } from '../helpers/counting-store.js';
import { openTestVolume, testOwner } from '../helpers/volume-fixture.js';

const logger = pino({ level: 'silent' });
const MiB = 1024 * 1024;
const NAME = 'cached';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hf-disk-cache-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let serial = 0;
function place(what: string): string {
  return join(dir, `${what}-${++serial}`);
}

function openCache(cacheDir: string, limitBytes = 256 * MiB, maxOpenFiles?: number): Promise<DiskCache> {
  return DiskCache.open({ dir: cacheDir, limitBytes, storeLocation: 'memory://', logger, keepFreeBytes: 0, maxOpenFiles });
}

async function newStore(size = 8 * MiB): Promise<CountingStore> {
  const store = new CountingStore();
  await new VolumeCatalog(store).create({ name: NAME, size, extentSize: MiB });
  return store;
}

/** No RAM cache: every read goes to the disk cache or the store. */
function openVolume(
  store: CountingStore,
  journal: string,
  diskCache: DiskCache | undefined,
  journalId = 'journal-a',
  leaseMs = 60_000,
): Promise<Volume> {
  return openTestVolume(store, journal, { name: NAME, cacheBytes: 0, diskCache, owner: testOwner(journalId), leaseMs });
}

async function cacheFiles(cacheDir: string): Promise<string[]> {
  const files: string[] = [];
  for (const sub of await readdir(join(cacheDir, 'objects')))
    for (const f of await readdir(join(cacheDir, 'objects', sub))) files.push(join(cacheDir, 'objects', sub, f));
  return files;
}

/**
 * Writes `data` at 0 through a fresh volume with a disk cache, and stops both: a warm cache on disk.
 * With a lease, the volume is not handed back: another gateway must wait the lease out and take it over.
 */
async function warmCache(data: Buffer, leaseMs?: number): Promise<{ store: CountingStore; journal: string; cacheDir: string }> {
  const store = await newStore();
  const journal = place('journal');
  const cacheDir = place('cache');
  const cache = await openCache(cacheDir);
  const volume = await openVolume(store, journal, cache, 'journal-a', leaseMs);
  await volume.write(0, data, false);
  await volume.drain();
  await volume.close({ release: leaseMs === undefined });
  await cache.close();
  return { store, journal, cacheDir };
}

describe('disk cache tier', () => {
  it('survives a restart warm: the reads after it come from the disk cache, not the store', async () => {
    const data = randomBytes(3 * MiB);
    const { store, journal, cacheDir } = await warmCache(data);
    const cache = await openCache(cacheDir);
    assert.ok(cache.stats().objects > 0, 'the index brought the cached objects back');
    const volume = await openVolume(store, journal, cache);
    const readsBefore = store.dataReads;
    assert.ok((await volume.read(0, data.length)).equals(data));
    assert.ok((await volume.read(5000, 4096)).equals(data.subarray(5000, 9096)));
    assert.equal(store.dataReads, readsBefore, 'no data object was read from the store');
    const s = volume.stats().diskCache;
    assert.ok(s !== undefined && s.hits > 0 && s.misses === 0, `disk cache hits ${s?.hits}, misses ${s?.misses}`);
    assert.ok(cache.stats().hits > 0);
    await volume.close({ release: true });
    await cache.close();
  });

  for (const damage of ['a flipped byte', 'a truncated file'] as const) {
    it(`detects ${damage} behind the gateway's back, drops it and fetches the bytes again`, async () => {
      const data = randomBytes(2 * MiB);
      const { store, journal, cacheDir } = await warmCache(data);
      const files = await cacheFiles(cacheDir);
      assert.ok(files.length > 0);
      for (const file of files) {
        if (damage === 'a truncated file') await truncate(file, 1000);
        else {
          const fh = await open(file, 'r+');
          const b = Buffer.alloc(1);
          await fh.read(b, 0, 1, 4200);
          b[0] = b[0]! ^ 0x40;
          await fh.write(b, 0, 1, 4200);
          await fh.close();
        }
      }
      const cache = await openCache(cacheDir);
      const volume = await openVolume(store, journal, cache);
      const readsBefore = store.dataReads;
      assert.ok((await volume.read(0, data.length)).equals(data), 'the damaged copy is never served');
      assert.ok(cache.stats().corrupt > 0, 'the damage was detected');
      assert.ok(store.dataReads > readsBefore, 'the bytes came from the store again');
      // The refetched bytes went back into the cache: the next read is a hit again.
      await cache.settled();
      const again = store.dataReads;
      assert.ok((await volume.read(4096, 8192)).equals(data.subarray(4096, 12288)));
      assert.equal(store.dataReads, again);
      await volume.close({ release: true });
      await cache.close();
    });
  }

  it('never reads old content after another gateway took the volume over and changed it', async () => {
    const LEASE_MS = 300;
    const first = randomBytes(3 * MiB);
    // Gateway A stops without handing the volume back: its lease must run out before anyone takes it.
    const { store, journal, cacheDir } = await warmCache(first, LEASE_MS);
    const epochA = (await readHead(store, NAME)).head.epoch;
    // Gateway B, with its own journal and no disk cache, takes the volume over once A's lease is over,
    // rewrites its first MiB and a piece of its third, and stops without handing it back either.
    const changed = randomBytes(MiB);
    const patch = randomBytes(8192);
    const other = await openVolume(store, place('journal-b'), undefined, 'journal-b', LEASE_MS);
    assert.ok(other.head.epoch > epochA, `B took the volume over (epoch ${epochA} -> ${other.head.epoch})`);
    await other.write(0, changed, false);
    await other.write(2 * MiB + 4096, patch, false);
    await other.drain();
    await other.close();
    // Gateway A comes back with its cache, which still holds the old bytes of what B changed, and takes
    // the volume over from B in turn.
    const cache = await openCache(cacheDir);
    const cachedBefore = cache.stats().bytes;
    assert.ok(cachedBefore >= first.length, 'the old content is still in the cache');
    const volume = await openVolume(store, journal, cache, 'journal-a', LEASE_MS);
    assert.ok(volume.head.epoch > other.head.epoch, 'A took it back over');
    const expected = Buffer.from(first);
    changed.copy(expected, 0);
    patch.copy(expected, 2 * MiB + 4096);
    const read = await volume.read(0, first.length);
    assert.ok(read.subarray(0, MiB).equals(changed), "the other gateway's write is read, not the cached old bytes");
    assert.ok(read.equals(expected), "every byte is the volume's current content: B's writes, and A's where B wrote nothing");
    const small = await volume.read(2 * MiB, 16384);
    assert.ok(small.equals(expected.subarray(2 * MiB, 2 * MiB + 16384)), 'a small read across the patch is current too');
    const s = volume.stats().diskCache;
    assert.ok(s !== undefined && s.hits > 0, 'the unchanged rest came from the disk cache');
    assert.ok(s.misses > 0, "B's deltas were not in it: fetched from the store");
    assert.equal(cache.stats().corrupt, 0, 'no cached copy was even read for content it does not hold');
    await volume.close({ release: true });
    await cache.close();
  });

  it('a cache smaller than the data evicts, stays within its bound and serves every read', async () => {
    const store = await newStore();
    const cache = await openCache(place('cache'), 2 * MiB);
    const volume = await openVolume(store, place('journal'), cache);
    const data = randomBytes(6 * MiB);
    for (let at = 0; at < data.length; at += MiB) {
      await volume.write(at, data.subarray(at, at + MiB), false);
      await volume.drain();
    }
    for (let round = 0; round < 2; round++) {
      for (let at = 0; at < data.length; at += 256 * 1024) {
        assert.ok((await volume.read(at, 65536)).equals(data.subarray(at, at + 65536)));
        await cache.settled();
        assert.ok(cache.stats().bytes <= 2 * MiB, `${cache.stats().bytes} bytes in a 2 MiB cache`);
      }
    }
    assert.ok(cache.stats().evictions > 0);
    await volume.close({ release: true });
    await cache.close();
  });

  it('holds no more files open than its bound, and serves reads of more files than that from disk', async () => {
    const store = await newStore();
    const cacheDir = place('cache');
    const cache = await openCache(cacheDir, 256 * MiB, 2);
    const volume = await openVolume(store, place('journal'), cache);
    const data = randomBytes(8 * MiB);
    // One delta per MiB: eight objects, eight cache files.
    for (let at = 0; at < data.length; at += MiB) {
      await volume.write(at, data.subarray(at, at + MiB), false);
      await volume.drain();
    }
    await cache.settled();
    const openInCache = async (): Promise<number> => {
      let n = 0;
      for (const fd of await readdir('/proc/self/fd')) {
        const target = await readlink(join('/proc/self/fd', fd)).catch(() => '');
        if (target.startsWith(join(cacheDir, 'objects'))) n++;
      }
      return n;
    };
    const readsBefore = store.dataReads;
    for (let round = 0; round < 2; round++)
      for (let at = 0; at < data.length; at += MiB) {
        assert.ok((await volume.read(at + 4096, 4096)).equals(data.subarray(at + 4096, at + 8192)));
        assert.ok((await openInCache()) <= 2, `${await openInCache()} cache files open, bound 2`);
      }
    assert.equal(store.dataReads, readsBefore, 'every read came from the disk cache');
    assert.ok(cache.stats().hits >= 16);
    await volume.close({ release: true });
    await cache.close();
  });

  it('a full disk is not an error: writes are skipped and counted, reads come from the store', async () => {
    const cacheDir = place('cache-tmpfs');
    const unmount = await mountTmpfs(cacheDir, 3 * MiB);
    let cache: DiskCache | undefined;
    let volume: Volume | undefined;
    try {
      const store = await newStore();
      cache = await openCache(cacheDir, 64 * MiB);
      // Something else on the disk takes most of it after the cache measured its room.
      await writeFile(join(cacheDir, 'filler'), Buffer.alloc(2 * MiB + 512 * 1024));
      volume = await openVolume(store, place('journal'), cache);
      const data = randomBytes(8 * MiB);
      for (let at = 0; at < data.length; at += 2 * MiB) {
        await volume.write(at, data.subarray(at, at + 2 * MiB), false);
        await volume.drain();
      }
      await cache.settled();
      assert.ok((await volume.read(0, data.length)).equals(data));
      await cache.settled();
      const s = cache.stats();
      assert.ok(s.full > 0, 'the filesystem ran out of room');
      assert.equal(s.errors, 0, 'a full disk is not an error');
      assert.ok(s.effectiveLimitBytes < 3 * MiB, `the bound shrank to what fits (${s.effectiveLimitBytes})`);
      assert.ok((await volume.read(MiB, 4096)).equals(data.subarray(MiB, MiB + 4096)));
    } finally {
      await volume?.close({ release: true });
      await cache?.close();
      await unmount();
    }
  });

  it('evicts by cost, then by recency: what many small reads filled outlives what one large read filled later', async () => {
    // Room for three of the four 512 KiB objects below.
    const cache = await openCache(place('cache'), 1792 * 1024);
    const ref = (key: string): ObjectRef => ({ key, size: MiB + 4096, metaOffset: MiB, metaCrc: 1 });
    const whole = Buffer.alloc(512 * 1024, 1);
    const block = Buffer.alloc(4096, 2);
    const out = Buffer.alloc(4096);
    const held = (key: string): Promise<boolean> => cache.read(ref(key), 0, 4096, out, 0);
    const keep = async (key: string, pieces: 'whole' | 'blocks'): Promise<void> => {
      if (pieces === 'whole') cache.keep(ref(key), 0, whole);
      else for (let at = 0; at < whole.length; at += 4096) cache.keep(ref(key), at, block);
      await cache.settled();
    };
    // "costly": a block at a time, and filled first; "cheap": one large range, after it.
    await keep('costly', 'blocks');
    await keep('cheap', 'whole');
    await keep('third', 'whole');
    await keep('fourth', 'whole');
    assert.equal(await held('cheap'), false, 'the cheap object made room, though the costly one is older');
    assert.equal(await held('costly'), true);
    // Recency: "third" and "fourth" were filled alike, and "third" is read after "fourth" was filled.
    assert.equal(await held('third'), true);
    await keep('fifth', 'whole');
    assert.equal(await held('fourth'), false, 'the object used longest ago made room');
    assert.equal(await held('third'), true);
    assert.equal(await held('costly'), true);
    await cache.close();
  });

  it('keeps a copy: the buffer it was given may change as soon as keep returns', async () => {
    const cache = await openCache(place('cache'));
    const ref: ObjectRef = { key: 'copied', size: 3 * MiB + 4096, metaOffset: 3 * MiB, metaCrc: 1 };
    const bytes = randomBytes(3 * MiB);
    const original = Buffer.from(bytes);
    cache.keep(ref, 0, bytes);
    // What a pooled extent or delta body is used for next, before the cache's write has run.
    bytes.fill(0xee);
    await cache.settled();
    const out = Buffer.alloc(3 * MiB);
    assert.equal(await cache.read(ref, 0, 3 * MiB, out, 0), true);
    assert.ok(out.equals(original), 'the bytes as they were when kept');
    await cache.close();
  });

  it('takes bytes handed over with a release as they are, and gives them back once written, or at once when not kept', async () => {
    const cache = await openCache(place('cache'), 4 * MiB);
    const ref = (key: string): ObjectRef => ({ key, size: 3 * MiB + 4096, metaOffset: 3 * MiB, metaCrc: 1 });
    const bytes = randomBytes(3 * MiB);
    let released = 0;
    cache.keep(ref('handed'), 0, bytes, () => released++);
    assert.equal(released, 0, 'not before the write');
    await cache.settled();
    assert.equal(released, 1);
    const out = Buffer.alloc(3 * MiB);
    assert.equal(await cache.read(ref('handed'), 0, 3 * MiB, out, 0), true);
    assert.ok(out.equals(bytes));

    cache.keep(ref('handed'), 0, bytes, () => released++);
    assert.equal(released, 2, 'already held: nothing to write, given back at once');
    await cache.close();
    cache.keep(ref('after-close'), 0, bytes, () => released++);
    assert.equal(released, 3, 'a closed cache keeps nothing and gives back at once');
  });

  it('refuses a cache directory another live process uses', async () => {
    const cacheDir = place('cache');
    await (await openCache(cacheDir)).close();
    // The test runner's parent is alive and is not this process.
    await writeFile(join(cacheDir, 'LOCK'), JSON.stringify({ host: hostname(), pid: process.ppid }));
    await assert.rejects(openCache(cacheDir), /in use by process/);
  });
});
