import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { DataCorruptError, VolumeDeposedError, VolumeLockedError } from '../../shared/errors.js';
import { buildBaseExtent } from '../../gateway/image/base-extent.js';
import { blockSpan, CRC_BLOCK, DataObjectWriter, ObjectKind, parseMeta, verifyBlocks } from '../../gateway/image/data-object.js';
import { emptyHead, encodeHead, type Head, parseHead } from '../../gateway/image/head.js';
import { encodePage, parsePage } from '../../gateway/image/index-page.js';
import { headKey } from '../../gateway/image/layout.js';
import { readHead, takeVolume, TakeoverRefusedError } from '../../gateway/image/take-volume.js';
import { MemoryStore } from '../helpers/memory-store.js';
import { testOwner } from '../helpers/volume-fixture.js';

const logger = pino({ level: 'silent' });
const shape = { name: 'v', size: 8 * 1024 * 1024, extentSize: 1024 * 1024, readOnly: false, createdAt: '2026-11-30T00:00:00.000Z' };

describe('data objects', () => {
  it('round-trip runs, data and zero runs, and check every 4 KiB block', () => {
    const a = randomBytes(10_000);
    const w = new DataObjectWriter(ObjectKind.Delta, a.length, 3, 7, 10, 20);
    a.copy(w.body, w.addRun(100, 6000, false));
    assert.equal(w.addRun(6100, 1_000_000, true), -1);
    a.copy(w.body, w.addRun(2_000_000, 4000, false), 6000);
    const built = w.finish();
    const meta = parseMeta(built.body.subarray(built.metaOffset), built.metaCrc, 'obj');
    assert.deepEqual(
      [meta.kind, meta.epoch, meta.seqFrom, meta.seqTo, meta.dataLength, meta.runs.count],
      [ObjectKind.Delta, 7, 10, 20, 10_000, 3],
    );
    assert.deepEqual([...meta.runs.offset], [100, 6100, 2_000_000]);
    assert.deepEqual([...meta.runs.dataOffset], [0, -1, 6000]);
    const span = blockSpan(5000, 100, meta.dataLength);
    assert.deepEqual(span, { start: 4096, end: 8192 });
    verifyBlocks(meta.crcs, meta.dataLength, span.start, built.body.subarray(span.start, span.end), 'obj');
    assert.ok(built.body.subarray(0, 10_000).equals(a));
  });

  it('names a flipped data byte and a flipped table byte as corruption', () => {
    const w = new DataObjectWriter(ObjectKind.Delta, 3 * CRC_BLOCK, 1, 1, 1, 1);
    randomBytes(3 * CRC_BLOCK).copy(w.body, w.addRun(0, 3 * CRC_BLOCK, false));
    const built = w.finish();
    const meta = parseMeta(built.body.subarray(built.metaOffset), built.metaCrc, 'obj');
    const flipped = Buffer.from(built.body);
    flipped[CRC_BLOCK + 17]! ^= 1;
    assert.throws(
      () => {
        verifyBlocks(meta.crcs, meta.dataLength, 0, flipped.subarray(0, 3 * CRC_BLOCK), 'obj');
      },
      (err: unknown) => err instanceof DataCorruptError && /block 1\b/.test(err.message),
    );
    const badMeta = Buffer.from(built.body.subarray(built.metaOffset));
    badMeta[2]! ^= 0x40;
    assert.throws(() => parseMeta(badMeta, built.metaCrc, 'obj'), DataCorruptError);
  });

  it('leaves all-zero 4 KiB blocks out of a base extent', () => {
    const content = Buffer.alloc(1024 * 1024);
    content.fill(7, 8192, 8192 + 10);
    content.fill(9, 100 * 4096, 102 * 4096);
    const { body, ref } = buildBaseExtent(content, 3 * 1024 * 1024, 'k', 1, 5);
    const meta = parseMeta(body.subarray(ref.metaOffset), ref.metaCrc, 'k');
    assert.equal(meta.dataLength, 3 * 4096);
    assert.deepEqual([...meta.runs.offset], [3 * 1024 * 1024 + 8192, 3 * 1024 * 1024 + 100 * 4096]);
    const empty = buildBaseExtent(null, 0, 'e', 1, 5);
    assert.equal(parseMeta(empty.body.subarray(empty.ref.metaOffset), empty.ref.metaCrc, 'e').runs.count, 0);
  });
});

describe('index pages and heads', () => {
  it('round-trip, and refuse a page whose CRC does not match', () => {
    const bases = new Map([[1030, { key: 'b', seq: 3, size: 100, metaOffset: 36, metaCrc: 5 }]]);
    const page = encodePage(1, bases)!;
    assert.deepEqual(parsePage(page.body, page.crc, 1, 'p'), bases);
    assert.equal(encodePage(0, bases), undefined, 'a page with no bases is no page');
    assert.throws(() => parsePage(page.body, page.crc ^ 1, 1, 'p'), DataCorruptError);
    const head = emptyHead(shape, 30_000);
    assert.deepEqual(parseHead(encodeHead(head), 'h'), head);
    assert.throws(() => parseHead(Buffer.from('{"format":2}'), 'h'), /not a Holdfast format 2 head/);
  });
});

/** A controllable monotonic clock for lease timing. */
function clock() {
  let t = 1000;
  return { now: () => t, sleep: async (ms: number) => void (t += ms) };
}

async function volumeStore(head: Head = emptyHead(shape, 30_000)): Promise<MemoryStore> {
  const store = new MemoryStore();
  await store.putIfAbsent(headKey('v'), encodeHead(head));
  return store;
}

describe('taking a volume', () => {
  it('takes a released volume at once, bumping the epoch; the lease runs from when the write was sent', async () => {
    const store = await volumeStore();
    const c = clock();
    const me = testOwner('j1');
    const { writer } = await takeVolume({ store, name: 'v', owner: me, leaseMs: 5000, logger, now: c.now, sleep: c.sleep });
    const { head } = await readHead(store, 'v');
    assert.equal(head.epoch, 1);
    assert.equal(head.owner?.instance, me.instance);
    assert.ok(writer.leaseValid());
    await c.sleep(4999);
    assert.ok(writer.leaseValid());
    await c.sleep(2);
    assert.ok(!writer.leaseValid(), 'the lease ends leaseMs after the write that made it was sent');
    assert.equal(writer.waitForLease() instanceof Promise, true);
  });

  it('takes over its own journal at once when the process that held it is gone', async () => {
    const dead = { ...testOwner('j1'), pid: 1 << 22 };
    const store = await volumeStore({ ...emptyHead(shape, 30_000), epoch: 4, owner: dead });
    const c = clock();
    const started = c.now();
    const taken = await takeVolume({ store, name: 'v', owner: testOwner('j1'), leaseMs: 30_000, logger, now: c.now, sleep: c.sleep });
    assert.equal(c.now() - started, 0, 'no wait');
    assert.ok(taken.sameJournal);
    assert.equal(taken.writer.head.epoch, 5);
  });

  it('waits out a silent owner for a lease plus the margin, and refuses one that renews', async () => {
    const other = { ...testOwner('j2'), host: 'elsewhere' };
    const silent = await volumeStore({ ...emptyHead(shape, 10_000), epoch: 2, owner: other });
    const c = clock();
    const started = c.now();
    const taken = await takeVolume({
      store: silent,
      name: 'v',
      owner: testOwner('j1'),
      leaseMs: 10_000,
      logger,
      now: c.now,
      sleep: c.sleep,
    });
    assert.ok(c.now() - started >= 11_000, `waited ${c.now() - started} ms`);
    assert.equal(taken.writer.head.epoch, 3);
    assert.equal(taken.sameJournal, false);

    const renewing = await volumeStore({ ...emptyHead(shape, 10_000), epoch: 2, owner: other });
    const r = clock();
    let renewals = 0;
    const renew = async (ms: number) => {
      await r.sleep(ms);
      const cur = await renewing.getVersioned(headKey('v'));
      if (++renewals % 3 === 0)
        await renewing.putIfMatch(headKey('v'), encodeHead({ ...parseHead(cur!.body, 'h'), version: renewals }), cur!.etag);
    };
    await assert.rejects(
      takeVolume({ store: renewing, name: 'v', owner: testOwner('j1'), leaseMs: 10_000, logger, now: r.now, sleep: renew }),
      VolumeLockedError,
    );
  });

  it('refuses to take a volume whose last owner had acknowledged writes in another journal, unless forced', async () => {
    const other = { ...testOwner('j2'), host: 'elsewhere' };
    const head = { ...emptyHead(shape, 1000), epoch: 3, owner: other, seq: 10, ackedSeq: 14 };
    const c = clock();
    await assert.rejects(
      takeVolume({ store: await volumeStore(head), name: 'v', owner: testOwner('j1'), leaseMs: 1000, logger, now: c.now, sleep: c.sleep }),
      (err: unknown) => {
        assert.ok(err instanceof TakeoverRefusedError);
        assert.match(err.message, /had acknowledged 4 writes \(sequences 11\.\.14\)/);
        return true;
      },
    );
    const forced = await takeVolume({
      store: await volumeStore(head),
      name: 'v',
      owner: testOwner('j1'),
      leaseMs: 1000,
      force: true,
      logger,
      now: c.now,
      sleep: c.sleep,
    });
    assert.equal(forced.writer.head.journalSince, 4, 'a new journal lineage starts');
  });
});

describe('head writer', () => {
  it('deposes itself when another epoch took the head, and fails lease waiters', async () => {
    const store = await volumeStore();
    const c = clock();
    const { writer } = await takeVolume({ store, name: 'v', owner: testOwner('j1'), leaseMs: 1000, logger, now: c.now, sleep: c.sleep });
    await writer.write((h) => ({ ...h, seq: 5 }));
    assert.equal((await readHead(store, 'v')).head.seq, 5);
    // Another gateway takes the volume (as after our lease ran out).
    await c.sleep(2000);
    const waiter = writer.waitForLease();
    await takeVolume({ store, name: 'v', owner: testOwner('j2'), leaseMs: 1000, logger, now: c.now, sleep: c.sleep, force: true });
    await assert.rejects(
      writer.write((h) => ({ ...h, seq: 6 })),
      VolumeDeposedError,
    );
    await assert.rejects(waiter!, VolumeDeposedError);
    assert.ok(!writer.leaseValid());
    assert.equal((await readHead(store, 'v')).head.seq, 5, 'the deposed writer changed nothing');
  });

  it('adopts its own write when the answer was lost, and goes on', async () => {
    const store = await volumeStore();
    const c = clock();
    const { writer } = await takeVolume({ store, name: 'v', owner: testOwner('j1'), leaseMs: 1000, logger, now: c.now, sleep: c.sleep });
    const put = store.putIfMatch.bind(store);
    let lose = true;
    store.putIfMatch = async (k, b, e) => {
      const etag = await put(k, b, e);
      if (lose) {
        lose = false;
        throw new Error('socket hang up after the write');
      }
      return etag;
    };
    await assert.rejects(
      writer.write((h) => ({ ...h, seq: 7 })),
      /socket hang up/,
    );
    const head = await writer.write((h) => ({ ...h, seq: h.seq + 1 }));
    assert.equal(head.seq, 8, 'the second write builds on the first, which had landed');
    assert.equal(writer.deposed, undefined);
  });
});
