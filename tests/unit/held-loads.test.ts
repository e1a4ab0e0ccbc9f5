import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { DEFAULT_HANG_POLICY } from '../../shared/hang-policy.js';
import { STALL_MS } from '../../gateway/hang/index.js';
import { StoreError, type StoreCallOptions, type StoreOperation, type StoreReadOptions } from '../../gateway/store/object-store.js';
import { VolumeCatalog } from '../../gateway/volume/catalog.js';
import { MemoryStore } from '../helpers/memory-store.js';
import { openTestVolume } from '../helpers/volume-fixture.js';

const MiB = 2 ** 20;

/**
 * A store whose reads, while `stalled`, are taken and never answered — a server that accepts
 * connections before it can answer them (RGW restarting) — until the caller aborts them; its probe
 * is refused meanwhile.
 */
class StallingStore extends MemoryStore {
  stalled = false;
  stalledReads = 0;

  override get(key: string, opts?: StoreReadOptions): Promise<Buffer | undefined> {
    return this.stalled ? this.stall('get', key, opts) : super.get(key, opts);
  }

  override getRange(key: string, offset: number, length: number, opts?: StoreCallOptions): Promise<Buffer | undefined> {
    return this.stalled ? this.stall('get-range', key, opts) : super.getRange(key, offset, length);
  }

  override async probe(): Promise<void> {
    if (this.stalled)
      throw new StoreError('probe', '', { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
    await super.probe();
  }

  private stall(op: StoreOperation, key: string, opts: StoreCallOptions | undefined): Promise<never> {
    this.stalledReads++;
    return new Promise((_resolve, reject) => {
      opts?.signal?.addEventListener('abort', () => {
        reject(new StoreError(op, key, { cause: opts.signal?.reason }));
      });
    });
  }
}

describe('extent loads across a store outage', () => {
  it('a read that joined a load whose GET was never answered is answered once the store answers again', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'holdfast-held-loads-'));
    const store = new StallingStore();
    const options = { cacheBytes: 64 * MiB, hangPolicy: DEFAULT_HANG_POLICY };
    try {
      await new VolumeCatalog(store).create({ name: 'model', size: 16 * MiB, extentSize: 4 * MiB });
      const writer = await openTestVolume(store, join(dir, 'j'), options);
      await writer.write(0, Buffer.alloc(4 * MiB, 7), false);
      await writer.flush();
      await writer.drain();
      await writer.close();
      // Opened again: nothing cached, so the read below loads the extent from the store.
      const volume = await openTestVolume(store, join(dir, 'j'), options);
      try {
        store.stalled = true;
        // Half an extent or more: the read loads the whole extent, and other reads of it join that load.
        const read = volume.read(0, 4 * MiB);
        const joined = volume.read(2 * MiB, 2 * MiB);
        await sleep(STALL_MS + 300);
        assert.equal(volume.status().hang.state, 'hang', 'held once the store had not answered for a second');
        assert.ok(store.stalledReads >= 1);
        store.stalled = false;
        const failuresBefore = volume.status().hangCounters.storageErrors.transient;
        // The stalled GET is answered by nothing but its abort: without one, the reads wait for ever.
        const timer = new AbortController();
        const late = sleep(10_000, undefined, { signal: timer.signal }).then(() => {
          throw new Error('the held reads were not answered within 10 s of the store answering again');
        });
        late.catch(() => undefined);
        try {
          const [whole, half] = await Promise.race([Promise.all([read, joined]), late]);
          assert.ok(whole.equals(Buffer.alloc(4 * MiB, 7)));
          assert.ok(half.equals(Buffer.alloc(2 * MiB, 7)));
        } finally {
          timer.abort();
        }
        assert.equal(volume.status().hangCounters.storageErrors.transient, failuresBefore, 'the loads given up are no store failures');
      } finally {
        await volume.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
