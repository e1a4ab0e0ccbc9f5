import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { type ObjectStore, StoreError } from '../../gateway/store/object-store.js';

/**
 * What every ObjectStore implementation must do, run on each: the local directory in the unit
 * tests, S3ObjectStore against the real S3 server in the integration tests.
 */

export interface StoreFixture {
  store: ObjectStore;
  /** The same objects as `store`, listed a few keys per request where the store pages at all. */
  pagedStore: ObjectStore;
  dispose(): Promise<void>;
}

export async function collect(keys: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const key of keys) out.push(key);
  return out;
}

export function assertStoreError(err: unknown, operation: StoreError['operation']): asserts err is StoreError & { cause: Error } {
  assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
  assert.equal(err.operation, operation);
  assert.ok(err.cause instanceof Error, 'the cause is the underlying failure');
  assert.ok(!(err.cause instanceof StoreError));
}

export function isStoreError(operation: StoreError['operation']): (err: unknown) => true {
  return (err) => {
    assertStoreError(err, operation);
    return true;
  };
}

export function contractSuite(name: string, setup: () => Promise<StoreFixture>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let fx: StoreFixture;
    before(async () => {
      fx = await setup();
    });
    after(async () => {
      await fx.dispose();
    });

    it('round-trips a 4 MiB random object', async () => {
      const body = randomBytes(4 * 1024 * 1024);
      await fx.store.put('roundtrip/big', body);
      const read = await fx.store.get('roundtrip/big');
      assert.ok(read !== undefined);
      assert.equal(read.length, body.length);
      assert.ok(read.equals(body));
    });

    it('reads an object into a buffer it fits in, and into a new one when it does not', async () => {
      const body = randomBytes(256 * 1024);
      await fx.store.put('into/obj', body);
      const roomy = Buffer.alloc(body.length + 4096, 0xee);
      const read = await fx.store.get('into/obj', { into: roomy });
      assert.ok(read !== undefined && read.equals(body));
      assert.equal(read.buffer, roomy.buffer, 'the bytes went into the buffer given');
      assert.equal(roomy[body.length], 0xee, 'nothing written past the object');
      const small = Buffer.alloc(1024);
      const other = await fx.store.get('into/obj', { into: small });
      assert.ok(other !== undefined && other.equals(body));
      assert.equal(await fx.store.get('into/missing', { into: roomy }), undefined);
    });

    it('reads a byte range of an object, and nothing of a missing one', async () => {
      const body = randomBytes(1024 * 1024);
      await fx.store.put('range/obj', body);
      const middle = await fx.store.getRange('range/obj', 123_457, 4096);
      assert.ok(middle !== undefined && middle.equals(body.subarray(123_457, 123_457 + 4096)));
      const tail = await fx.store.getRange('range/obj', body.length - 10, 10);
      assert.ok(tail !== undefined && tail.equals(body.subarray(body.length - 10)));
      assert.equal(await fx.store.getRange('range/missing', 0, 10), undefined);
    });

    it('round-trips an empty object', async () => {
      await fx.store.put('roundtrip/empty', Buffer.alloc(0));
      const read = await fx.store.get('roundtrip/empty');
      assert.ok(read !== undefined, 'an empty object exists');
      assert.equal(read.length, 0);
    });

    it('returns undefined for a missing key', async () => {
      assert.equal(await fx.store.get('missing'), undefined);
      assert.equal(await fx.store.get('missing/deep/key'), undefined);
    });

    it('overwrites an object', async () => {
      await fx.store.put('overwrite/x', Buffer.from('the first, longer version'));
      await fx.store.put('overwrite/x', Buffer.from('second'));
      assert.deepEqual(await fx.store.get('overwrite/x'), Buffer.from('second'));
      assert.deepEqual(await collect(fx.store.list('overwrite/')), ['overwrite/x']);
    });

    it('deletes an object, and deleting a missing one succeeds', async () => {
      await fx.store.put('delete/x', Buffer.from('x'));
      await fx.store.delete('delete/x');
      assert.equal(await fx.store.get('delete/x'), undefined);
      assert.deepEqual(await collect(fx.store.list('delete/')), []);
      await fx.store.delete('delete/x');
      await fx.store.delete('delete/never/existed');
    });

    it('lists the keys under a prefix in lexicographic order', async () => {
      for (const key of ['list/c/x/y', 'list/b', 'list/a/2', 'list/a/1', 'listing', 'other/a']) {
        await fx.store.put(key, Buffer.from(key));
      }
      assert.deepEqual(await collect(fx.store.list('list/')), ['list/a/1', 'list/a/2', 'list/b', 'list/c/x/y']);
      assert.deepEqual(await collect(fx.store.list('list/a')), ['list/a/1', 'list/a/2']);
      assert.deepEqual(await collect(fx.store.list('list')), ['list/a/1', 'list/a/2', 'list/b', 'list/c/x/y', 'listing']);
      assert.deepEqual(await collect(fx.store.list('nothing/')), []);
    });

    it('lists the folders one level below a prefix: those with objects under them, in order', async () => {
      for (const key of ['folders/b/head', 'folders/a/x/deep', 'folders/a/head', 'folders/file', 'folders/c/gone', 'foldersx/d/k']) {
        await fx.store.put(key, Buffer.from(key));
      }
      await fx.store.putIfAbsent('folders/e/head', Buffer.from('conditional'));
      await fx.store.delete('folders/c/gone');
      assert.deepEqual(await collect(fx.store.listFolders('folders/')), ['a', 'b', 'e']);
      assert.deepEqual(await collect(fx.store.listFolders('folders/a/')), ['x']);
      assert.deepEqual(await collect(fx.store.listFolders('none/')), []);
    });

    it('lists folders across pages', async () => {
      const names = Array.from({ length: 11 }, (_, i) => `v${String(i).padStart(2, '0')}`);
      for (const name of [...names].reverse()) await fx.store.put(`paged-folders/${name}/head`, Buffer.from(name));
      assert.deepEqual(await collect(fx.pagedStore.listFolders('paged-folders/')), names);
    });

    it('lists across pages', async () => {
      const keys = Array.from({ length: 11 }, (_, i) => `page/k${String(i).padStart(2, '0')}`);
      for (const key of [...keys].reverse()) await fx.store.put(key, Buffer.from(key));
      assert.deepEqual(await collect(fx.pagedStore.list('page/')), keys);
    });

    it('answers a probe', async () => {
      await fx.store.probe();
    });
  });
}
