/**
 * The stand-in served for a volume the gateway could not take yet (the store silent at start): its
 * requests wait, then go to the volume once it is taken — and so does the "reply sent" of a READ, so
 * a cache view the volume lent for the reply is given back to it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { NbdExport, RequestContext } from '../../gateway/nbd/export.js';
import { WaitingVolume } from '../../gateway/volume/waiting-volume.js';

const SHAPE = { name: 'vm1', size: 1 << 20, extentSize: 1 << 20, readOnly: false, createdAt: '2026-11-30T00:00:00Z' };

function context(): RequestContext {
  return { signal: new AbortController().signal };
}

describe('WaitingVolume', () => {
  it('a read waits for the volume, and its readDone reaches the volume that answered it', async () => {
    const done: Buffer[] = [];
    const data = Buffer.from('lent view of a cached extent');
    const target = {
      ...SHAPE,
      canMultiConn: true,
      minimumBlockSize: 1,
      preferredBlockSize: 4096,
      read: () => Promise.resolve(data),
      readDone: (b: Buffer) => {
        done.push(b);
      },
      attach: () => undefined,
    } as unknown as NbdExport;
    const waiting = new WaitingVolume(SHAPE, () => 'forever');
    const read = waiting.read(0, data.length, context());
    waiting.ready(target);
    const got = await read;
    assert.equal(got, data);
    waiting.readDone(got);
    assert.deepEqual(done, [data], 'the volume was told its data came back, once');
  });
});
