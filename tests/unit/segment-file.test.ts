import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fsSegmentFileOps } from '../../gateway/journal/segment-file.js';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hf-segment-file-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('readv fills more buffers than one preadv takes (IOV_MAX), in order, and stops short only at the end of the file', async () => {
  const file = await fsSegmentFileOps.open(join(dir, 'a.seg'), 'create');
  const content = randomBytes(10_000);
  await file.writev([content], 0);
  // 3,000 buffers of 1-5 bytes from position 7: three preadv calls and a part of a fourth.
  const buffers = Array.from({ length: 3000 }, (_, i) => Buffer.alloc(1 + (i % 5)));
  const wanted = buffers.reduce((n, b) => n + b.length, 0);
  assert.equal(await file.readv(buffers, 7), wanted);
  assert.ok(Buffer.concat(buffers).equals(content.subarray(7, 7 + wanted)));

  const past = [Buffer.alloc(100), Buffer.alloc(100)];
  assert.equal(await file.readv(past, 9_950), 50, 'the bytes up to the end of the file');
  assert.ok(past[0]!.subarray(0, 50).equals(content.subarray(9_950)));
  await file.close();
});
