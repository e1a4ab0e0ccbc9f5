import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { pino } from 'pino';
import { Journal } from '../../gateway/journal/journal.js';
import { RecordKind } from '../../gateway/journal/record.js';
import { fsSegmentFileOps, type SegmentFile, type SegmentFileOps } from '../../gateway/journal/segment-file.js';

/**
 * The journal on a disk that is full or failing: what does not fit is written in smaller parts,
 * the uploader (which frees the disk) is not made to wait for records that cannot be written, and
 * a segment that cannot be deleted is retried without any newer segment being deleted first.
 */

const logger = pino({ level: 'silent' });
const KiB = 1024;
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hf-journal-full-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function systemError(code: string): Error {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

/** Segment files that refuse (ENOSPC) any single write larger than `room()` bytes, or fail every sync with EIO while `eio()`. */
function disk(room: () => number, eio: () => boolean = () => false): SegmentFileOps {
  return {
    async open(path, flags) {
      const f: SegmentFile = await fsSegmentFileOps.open(path, flags);
      return {
        writev: async (buffers, position) => {
          if (buffers.reduce((n, b) => n + b.length, 0) > room()) throw systemError('ENOSPC');
          await f.writev(buffers, position);
        },
        datasync: async () => {
          if (eio()) throw systemError('EIO');
          await f.datasync();
        },
        read: f.read.bind(f),
        readv: f.readv.bind(f),
        size: f.size.bind(f),
        close: f.close.bind(f),
      };
    },
    remove: (p: string) => fsSegmentFileOps.remove(p),
  };
}

function open(fileOps: SegmentFileOps) {
  return Journal.open({
    dir,
    segmentBytes: 1024 * KiB,
    limitBytes: 64 * 1024 * KiB,
    maxPayload: 1024 * KiB,
    logger,
    retryInitialMs: 1,
    retryMaxMs: 5,
    fileOps,
  });
}

test('a batch larger than the free space is committed in parts, in order', async () => {
  const { journal } = await open(disk(() => 300 * KiB));
  const payloads = Array.from({ length: 8 }, (_, i) => Buffer.alloc(100 * KiB, i + 1));
  const durable: Promise<void>[] = [];
  // Appended in one tick: one 800 KiB batch, which no single write may carry.
  for (const [i, data] of payloads.entries()) {
    assert.equal(journal.reserve(data.length), undefined);
    const e = journal.append(RecordKind.Write, i * 100 * KiB, data.length, data);
    durable.push(journal.waitDurable(e.seq) ?? Promise.resolve());
  }
  await Promise.all(durable);
  assert.equal(journal.failing, false);
  await journal.close();

  const { journal: again, entries } = await open(fsSegmentFileOps);
  assert.deepEqual(
    entries.map((e) => e.seq),
    [1, 2, 3, 4, 5, 6, 7, 8],
  );
  for (const [i, e] of entries.entries()) {
    const out = Buffer.alloc(e.length);
    await again.readPayload(e, 0, e.length, out, 0);
    assert.ok(out.equals(payloads[i]!), `record ${e.seq} replays its own payload`);
  }
  await again.close();
});

test('the uploader waits for durability, except while the journal is failing', async () => {
  let failing = false;
  const { journal } = await open(
    disk(
      () => Infinity,
      () => failing,
    ),
  );
  const first = journal.append(RecordKind.Write, 0, 4, Buffer.alloc(4, 1));
  const ready = journal.waitDurableOrFailing(first.seq);
  assert.ok(ready !== undefined, 'a record being written is waited for');
  await ready;
  assert.equal(journal.durableSequence, first.seq);

  failing = true;
  void journal.reserve(4);
  const second = journal.append(RecordKind.Write, 0, 4, Buffer.alloc(4, 2));
  const acked = journal.waitDurable(second.seq);
  await journal.waitDurableOrFailing(second.seq);
  assert.equal(journal.failing, true, 'released by the failure, not by durability');
  assert.equal(journal.durableSequence, first.seq);
  assert.equal(journal.waitDurableOrFailing(second.seq), undefined, 'no waiting while the journal fails');

  failing = false;
  await acked;
  assert.equal(journal.failing, false);
  assert.equal(journal.durableSequence, second.seq);
  await journal.close();
});

test('a segment that cannot be deleted stays first and is retried; no newer segment goes before it', async () => {
  const { journal } = await open(fsSegmentFileOps);
  const write = async (fill: number) => {
    const data = Buffer.alloc(600 * KiB, fill);
    const room = journal.reserve(data.length);
    if (room) await room;
    const e = journal.append(RecordKind.Write, 0, data.length, data);
    await journal.waitDurable(e.seq);
    return e;
  };
  const segs = async () => (await readdir(dir)).filter((n) => n.endsWith('.seg')).sort();
  const old = await write(1);
  const newer = await write(2);
  await write(3);
  const [first, second] = await segs();
  assert.ok(first !== undefined && second !== undefined);

  // A directory where the first segment was: unlink fails on it as it would on a failing disk.
  await rename(join(dir, first), join(dir, 'saved'));
  await mkdir(join(dir, first));
  await writeFile(join(dir, first, 'x'), '');
  journal.release(old);
  journal.release(newer);
  // The retirement pass that failed on the directory has run (its retry is scheduled, not awaited here).
  await journal.retirementSettled();
  assert.ok((await segs()).includes(second), 'the newer segment must outlive the older one it could be replayed without');

  await rm(join(dir, first), { recursive: true });
  await rename(join(dir, 'saved'), join(dir, first));
  // Generous on purpose: the retry comes after a few ms; only a stalled machine takes seconds, and a
  // retry that never comes still fails here.
  const deadline = Date.now() + 30_000;
  while ((await segs()).includes(second) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const left = await segs();
  assert.ok(!left.includes(first) && !left.includes(second), `retried and deleted in order, left: ${left.join(', ')}`);
  await journal.close();
});
