import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { setImmediate as nextTurn, setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { BufferBudget } from '../../gateway/nbd/buffer-budget.js';
import { Cmd, REQUEST_MAGIC } from '../../gateway/nbd/constants.js';
import { NbdStats } from '../../gateway/nbd/stats.js';
import { Transmission } from '../../gateway/nbd/transmission.js';
import { ExtentBuffers } from '../../gateway/volume/extent-buffers.js';
import { ExtentCache } from '../../gateway/volume/extent-cache.js';
import { VolumeCatalog } from '../../gateway/volume/catalog.js';
import { MemoryStore } from '../helpers/memory-store.js';
import { detached } from '../helpers/detached.js';
import { openTestVolume } from '../helpers/volume-fixture.js';
import { waitFor } from '../helpers/wait-for.js';

const SIZE = 64 * 1024;
const MiB = 1024 * 1024;

describe('extent buffers', () => {
  it('a released buffer is taken again after the turn it was released in, not before', async () => {
    const pool = new ExtentBuffers(SIZE, 4);
    const a = pool.take();
    pool.release(a.subarray(0, 100));
    const during = pool.take();
    assert.notEqual(during.buffer, a.buffer, 'a continuation queued in the same turn may still read it');
    await nextTurn();
    assert.equal(pool.take().buffer, a.buffer);
    assert.equal(pool.reused, 1);
    assert.equal(pool.allocated, 2);
  });

  it('a buffer released with a view lent out is taken again only once the view comes back', async () => {
    const pool = new ExtentBuffers(SIZE, 4);
    const a = pool.take();
    const view = a.subarray(4096, 8192);
    pool.lend(view);
    pool.release(a);
    await nextTurn();
    assert.notEqual(pool.take().buffer, a.buffer, 'lent when released: not free yet');
    pool.returned(view);
    pool.returned(view);
    assert.notEqual(pool.take().buffer, a.buffer, 'free only after the turn it came back in');
    await nextTurn();
    assert.equal(pool.take().buffer, a.buffer, 'free once its last view came back');
    assert.equal(pool.freeBytes, 0, 'a second return of the same view did not free it twice');
    // Two views lent: the first one back does not free it.
    const b = pool.take();
    pool.lend(b.subarray(0, 10));
    pool.lend(b.subarray(10, 20));
    pool.release(b);
    await nextTurn();
    pool.returned(b.subarray(0, 10));
    await nextTurn();
    assert.equal(pool.freeBytes, 0);
    pool.returned(b.subarray(10, 20));
    await nextTurn();
    assert.equal(pool.take().buffer, b.buffer);
    // A view lent and returned before the release does not keep the buffer from being reused.
    const c = pool.take();
    pool.lend(c.subarray(0, 10));
    pool.returned(c.subarray(0, 10));
    pool.release(c);
    await nextTurn();
    assert.equal(pool.take().buffer, c.buffer);
  });

  it('a caller that awaits settled takes the buffers released in its turn, beyond the free list', async () => {
    const pool = new ExtentBuffers(SIZE, 1);
    const evicted = [pool.take(), pool.take(), pool.take()];
    const before = pool.allocated;
    for (const b of evicted) pool.release(b);
    await pool.settled(3);
    const taken = [pool.take(), pool.take(), pool.take()];
    assert.equal(pool.allocated, before, 'no new buffer: the three released ones were kept for the caller');
    assert.deepEqual(new Set(taken.map((b) => b.buffer)), new Set(evicted.map((b) => b.buffer)));
    // Kept for a caller that took fewer than it asked for: back to the free list's room at the next settle.
    for (const b of taken) pool.release(b);
    await pool.settled(3);
    pool.take();
    assert.equal(pool.freeBytes, 2 * SIZE);
    pool.release(pool.take());
    await nextTurn();
    assert.equal(pool.freeBytes, SIZE, 'the free list holds its room, one buffer');
    // Nothing released: settled resolves at once, and keeps nothing.
    await pool.settled(5);
    assert.equal(pool.freeBytes, SIZE);
  });

  it('ignores buffers it did not make, releases twice, keeps at most its free list and frees the rest at once', async () => {
    const pool = new ExtentBuffers(SIZE, 2);
    const foreign = Buffer.alloc(SIZE);
    pool.release(foreign);
    const taken = [pool.take(), pool.take(), pool.take()];
    for (const b of taken) pool.release(b);
    pool.release(taken[0]!);
    await nextTurn();
    assert.equal(pool.freeBytes, 2 * SIZE, 'two kept');
    assert.equal(pool.freed, 1, 'the third freed');
    assert.deepEqual(
      taken.map((b) => detached(b)),
      [false, false, true],
      'its memory went back to the allocator, not to the collector',
    );
    assert.equal(detached(foreign), false, 'a buffer it did not make is never freed');
    const again = [pool.take(), pool.take(), pool.take()];
    assert.equal(new Set(again.map((b) => b.buffer)).size, 3, 'no buffer handed out twice');
  });

  it('the extent cache gives back what it evicts and drops, not what it puts back', async () => {
    const pool = new ExtentBuffers(SIZE, 4);
    const cache = new ExtentCache(2 * SIZE, pool);
    const extents = [0, 1, 2].map(() => ({ data: pool.take(), seq: 0 }));
    cache.set(0, extents[0]!);
    cache.set(1, extents[1]!);
    // Re-inserting an entry (its size changed) keeps its buffer its own.
    cache.set(0, extents[0]!);
    await nextTurn();
    assert.equal(pool.freeBytes, 0);
    cache.set(2, extents[2]!);
    await nextTurn();
    assert.equal(cache.peek(1), undefined, 'the least recently used extent was evicted');
    assert.equal(pool.take().buffer, extents[1]!.data.buffer, "the evicted extent's buffer is used again");
    cache.clear();
    await nextTurn();
    assert.equal(pool.freeBytes, 2 * SIZE, 'clearing gives every buffer back');
  });

  it('keeps as many free buffers as the cache bound has room for, and gives the excess up when that room is taken', async () => {
    let cache: ExtentCache | undefined;
    const pool = new ExtentBuffers(SIZE, () => Math.floor((cache?.unusedBytes ?? 0) / SIZE));
    cache = new ExtentCache(8 * SIZE, pool);
    // A compaction batch: six extents read at once, then given back together.
    const batch = Array.from({ length: 6 }, () => pool.take());
    for (const b of batch) pool.release(b);
    await nextTurn();
    assert.equal(pool.freeBytes, 6 * SIZE, 'the bound has room for all six: none left to the collector');
    cache.set(0, { data: pool.take(), seq: 0 });
    cache.set(1, { data: pool.take(), seq: 0 });
    const reservation = cache.reserve(3 * SIZE);
    assert.equal(pool.freeBytes, 3 * SIZE, 'two cached and three reserved: room for three free, not four');
    assert.equal(pool.freed, 1, 'the one given up was freed at once');
    reservation.release();
  });
});

describe('extent buffers in a volume', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hf-extent-buffers-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a zero-copy read keeps its bytes while its extent is evicted and other loads reuse buffers', async () => {
    const store = new MemoryStore();
    await new VolumeCatalog(store).create({ name: 'pooled', size: 8 * MiB, extentSize: MiB });
    const volume = await openTestVolume(store, join(dir, 'journal'), { name: 'pooled', cacheBytes: 2 * MiB });
    const data = randomBytes(8 * MiB);
    await volume.write(0, data, false);
    await volume.drain();
    // Whole-extent reads load extents 0 and 1 into the two-extent cache; the 4 KiB read is a view of extent 0.
    await volume.read(0, MiB);
    const view = await volume.read(4096, 4096);
    const kept = Buffer.from(view);
    for (let round = 0; round < 3; round++) {
      for (let e = 2; e < 8; e++) assert.ok((await volume.read(e * MiB, MiB)).equals(data.subarray(e * MiB, (e + 1) * MiB)));
      await nextTurn();
    }
    assert.ok(view.equals(kept), 'the lent view was not overwritten by a load that reused buffers');
    assert.ok(view.equals(data.subarray(4096, 8192)));
    volume.readDone(view);
    await volume.close({ release: true });
  });

  it('a read that waits for a load is answered with a view of the loaded extent, kept until the reply is done', async () => {
    const store = new MemoryStore();
    await new VolumeCatalog(store).create({ name: 'loaded', size: 8 * MiB, extentSize: MiB });
    const data = randomBytes(8 * MiB);
    const writer = await openTestVolume(store, join(dir, 'journal-loaded'), { name: 'loaded' });
    await writer.write(0, data, false);
    await writer.drain();
    await writer.close({ release: true });
    const volume = await openTestVolume(store, join(dir, 'journal-loaded'), { name: 'loaded', cacheBytes: 2 * MiB });
    const view = await volume.read(MiB + 4096, MiB - 8192);
    assert.ok(view.buffer.byteLength > MiB, "a view of the extent's buffer, not a copy of its bytes");
    const kept = Buffer.from(view);
    assert.ok(kept.equals(data.subarray(MiB + 4096, 2 * MiB - 4096)));
    for (let round = 0; round < 3; round++) {
      for (let e = 2; e < 8; e++) assert.ok((await volume.read(e * MiB, MiB)).equals(data.subarray(e * MiB, (e + 1) * MiB)));
      await nextTurn();
    }
    assert.ok(view.equals(kept), 'loads that reused buffers did not overwrite the lent view');
    volume.readDone(view);
    await volume.close({ release: true });
  });

  it('a reply that is not a view of a cached extent is built in a buffer used again once it was sent, never before', async () => {
    const store = new MemoryStore();
    await new VolumeCatalog(store).create({ name: 'replies', size: 8 * MiB, extentSize: MiB });
    // No cache: every read is answered from the store, into a reply buffer.
    const volume = await openTestVolume(store, join(dir, 'journal-replies'), { name: 'replies', cacheBytes: 0 });
    const data = randomBytes(8 * MiB);
    await volume.write(0, data, false);
    await volume.drain();
    const first = await volume.read(4096, 4096);
    const second = await volume.read(3 * MiB, 4096);
    assert.notEqual(second.buffer, first.buffer, 'a reply not yet sent is not used again');
    volume.readDone(first);
    const third = await volume.read(5 * MiB + 8192, 4096);
    assert.equal(third.buffer, first.buffer, 'a sent reply is used for the next');
    assert.ok(third.equals(data.subarray(5 * MiB + 8192, 5 * MiB + 12288)));
    assert.ok(second.equals(data.subarray(3 * MiB, 3 * MiB + 4096)), 'the reply still being sent kept its bytes');
    volume.readDone(third);
    await volume.trim(6 * MiB, MiB, false);
    const zeros = await volume.read(6 * MiB, 4096);
    assert.equal(zeros.buffer, third.buffer, 'the sent reply is used again');
    assert.ok(zeros.equals(Buffer.alloc(4096)), 'and holds zeros, not what it held before');
    volume.readDone(second);
    volume.readDone(zeros);
    await volume.close({ release: true });
  });
});

/** READ requests, back to back, with handles 1, 2, … in the order of `offsets`. */
function readRequests(offsets: readonly number[], length: number): Buffer {
  const out = Buffer.alloc(28 * offsets.length);
  offsets.forEach((offset, i) => {
    const at = i * 28;
    out.writeUInt32BE(REQUEST_MAGIC, at);
    out.writeUInt16BE(Cmd.READ, at + 6);
    out.writeBigUInt64BE(BigInt(i + 1), at + 8);
    out.writeBigUInt64BE(BigInt(offset), at + 16);
    out.writeUInt32BE(length, at + 24);
  });
  return out;
}

describe('extent buffers under NBD replies', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hf-extent-replies-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a buffer is not reused while a reply carrying a view of it is still being sent', { timeout: 60_000 }, async () => {
    const store = new MemoryStore();
    await new VolumeCatalog(store).create({ name: 'sent', size: 8 * MiB, extentSize: MiB });
    const volume = await openTestVolume(store, join(dir, 'journal'), { name: 'sent', cacheBytes: 2 * MiB });
    const data = randomBytes(8 * MiB);
    await volume.write(0, data, false);
    await volume.drain();
    await volume.read(0, MiB);
    // Counts what the connection asked of the volume, and what it said it had sent.
    let reads = 0;
    let done = 0;
    const read = volume.read.bind(volume);
    const readDone = volume.readDone.bind(volume);
    volume.read = (offset, length, ctx) => {
      reads++;
      return read(offset, length, ctx);
    };
    volume.readDone = (view) => {
      done++;
      readDone(view);
    };

    const listener = createServer();
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<Socket>((resolve) => listener.once('connection', resolve));
    const client = connect((listener.address() as AddressInfo).port, '127.0.0.1');
    const server = await accepted;
    listener.close();
    const session = { export: volume, readOnly: false, structuredReplies: false, allocationContext: undefined, tls: undefined };
    const limits = { maxRequestsInFlight: 256, maxBytesInFlight: 256 * MiB, idleTimeoutMs: 0 };
    const transmission = new Transmission(
      server,
      session,
      pino({ level: 'silent' }),
      new NbdStats(),
      limits,
      new BufferBudget(512 * MiB, 256 * 1024),
    );
    volume.attach();
    server.on('data', (chunk: Buffer) => {
      transmission.push(chunk);
    });
    server.on('end', () => {
      transmission.end();
    });
    server.on('close', () => {
      transmission.onClose();
    });
    transmission.start([]);
    try {
      await sendWhileEvicting();
    } finally {
      client.destroy();
      server.destroy();
      volume.detach();
      await volume.close({ release: true });
    }

    async function sendWhileEvicting(): Promise<void> {
      // 24 MiB of replies, all views of cached extent 0, to a client that does not read yet: more than
      // the socket buffers hold, so many wait in the gateway's own write queue.
      const LENGTH = 256 * 1024;
      const offsets = Array.from({ length: 96 }, (_, i) => (i % 4) * LENGTH);
      let received: Buffer[] = [];
      client.pause();
      client.on('data', (chunk: Buffer) => received.push(chunk));
      client.write(readRequests(offsets, LENGTH));
      await waitFor(() => reads - done >= 8, 'READs answered from the cache and waiting to be sent');
      let seen = -1;
      while (seen !== reads) {
        seen = reads;
        await delay(200);
      }
      const unsent = reads - done;
      assert.ok(unsent >= 8, `${unsent} replies wait`);

      // Extent 0 is evicted and other extents are loaded again and again meanwhile, taking pool buffers.
      for (let round = 0; round < 3; round++) {
        for (let e = 2; e < 8; e++) assert.ok((await read(e * MiB, MiB)).equals(data.subarray(e * MiB, (e + 1) * MiB)));
        await nextTurn();
      }
      assert.equal(reads - done, unsent, 'the waiting replies are still waiting');

      const replyBytes = offsets.length * (16 + LENGTH);
      client.resume();
      await waitFor(() => received.reduce((n, c) => n + c.length, 0) >= replyBytes, 'every reply', 30_000);
      const all = Buffer.concat(received);
      received = [];
      assert.equal(all.length, replyBytes);
      for (let i = 0; i < offsets.length; i++) {
        const reply = all.subarray(i * (16 + LENGTH), (i + 1) * (16 + LENGTH));
        assert.equal(reply.readUInt32BE(4), 0, `reply ${i} is not an error`);
        const handle = Number(reply.readBigUInt64BE(8));
        const offset = offsets[handle - 1] ?? -1;
        assert.ok(
          reply.subarray(16).equals(data.subarray(offset, offset + LENGTH)),
          `reply ${i} (handle ${handle}) carries the bytes at ${offset}`,
        );
      }
      await waitFor(() => done === reads, 'every reply to be sent');
    }
  });
});
