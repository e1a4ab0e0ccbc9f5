import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LocalDirectoryStore, TEMP_FILE_MARKER } from '../../gateway/store/local-store.js';
import { type ObjectStore, StoreError } from '../../gateway/store/object-store.js';
import { parseS3Url, S3ObjectStore } from '../../gateway/store/s3-store.js';
import { InvalidArgumentError } from '../../shared/errors.js';
import { type S3Server, startS3Server } from '../helpers/s3-server.js';

interface Fixture {
  store: ObjectStore;
  /** The same objects as `store`, listed a few keys per request where the store pages at all. */
  pagedStore: ObjectStore;
  dispose(): Promise<void>;
}

async function collect(keys: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const key of keys) out.push(key);
  return out;
}

function assertStoreError(
  err: unknown,
  operation: StoreError['operation'],
): asserts err is StoreError & { cause: Error } {
  assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
  assert.equal(err.operation, operation);
  assert.ok(err.cause instanceof Error, 'the cause is the underlying failure');
  assert.ok(!(err.cause instanceof StoreError));
}

function isStoreError(operation: StoreError['operation']): (err: unknown) => true {
  return (err) => {
    assertStoreError(err, operation);
    return true;
  };
}

function contractSuite(name: string, setup: () => Promise<Fixture>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let fx: Fixture;
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
      assert.deepEqual(await collect(fx.store.list('list/')), [
        'list/a/1',
        'list/a/2',
        'list/b',
        'list/c/x/y',
      ]);
      assert.deepEqual(await collect(fx.store.list('list/a')), ['list/a/1', 'list/a/2']);
      assert.deepEqual(await collect(fx.store.list('list')), [
        'list/a/1',
        'list/a/2',
        'list/b',
        'list/c/x/y',
        'listing',
      ]);
      assert.deepEqual(await collect(fx.store.list('nothing/')), []);
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

async function makeTempDir(label: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `holdfast-${label}-`));
}

contractSuite('LocalDirectoryStore', async () => {
  const root = await makeTempDir('local-store');
  const store = new LocalDirectoryStore(root);
  return {
    store,
    pagedStore: store,
    dispose: () => rm(root, { recursive: true, force: true }),
  };
});

contractSuite('S3ObjectStore', async () => {
  const server = await startS3Server();
  const options = { bucket: server.bucket, prefix: 't1/', endpoint: server.endpoint };
  const store = new S3ObjectStore(options);
  const pagedStore = new S3ObjectStore({ ...options, listPageSize: 3 });
  return {
    store,
    pagedStore,
    async dispose() {
      await store.close();
      await pagedStore.close();
      await server.kill();
      await rm(server.dir, { recursive: true, force: true });
    },
  };
});

describe('LocalDirectoryStore', () => {
  let root: string;
  let store: LocalDirectoryStore;
  before(async () => {
    root = await makeTempDir('local-store');
    store = new LocalDirectoryStore(root);
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('has a file:// location with the absolute root', () => {
    assert.equal(store.location, `file://${path.resolve(root)}/`);
  });

  it('refuses keys that would escape the root or alias another key', async () => {
    for (const key of ['a/../b', '../x', '..', '/abs', 'a//b', 'a/./b', 'a/']) {
      await assert.rejects(store.put(key, Buffer.from('x')), InvalidArgumentError, key);
      await assert.rejects(store.get(key), InvalidArgumentError, key);
      await assert.rejects(store.delete(key), InvalidArgumentError, key);
    }
    await assert.rejects(collect(store.list('../')), InvalidArgumentError);
  });

  it('sorts keys across directories by the whole key', async () => {
    // Per-directory order would put o/a/1 first, since directory `a` sorts before `a-1`.
    for (const key of ['o/a0', 'o/a/1', 'o/a.b', 'o/a-1']) await store.put(key, Buffer.from(key));
    assert.deepEqual(await collect(store.list('o/')), ['o/a-1', 'o/a.b', 'o/a/1', 'o/a0']);
  });

  it('leaves no temp file behind and never lists one', async () => {
    await store.put('tmp/x', Buffer.from('one'));
    await store.put('tmp/x', Buffer.from('two'));
    assert.deepEqual(await readdir(path.join(root, 'tmp')), ['x']);
    // What a crash in the middle of a put leaves behind.
    await writeFile(path.join(root, 'tmp', `y${TEMP_FILE_MARKER}0123456789ab`), 'half');
    assert.deepEqual(await collect(store.list('tmp/')), ['tmp/x']);
  });

  it('treats a directory where an object would be as a missing object', async () => {
    await mkdir(path.join(root, 'dir/sub'), { recursive: true });
    assert.equal(await store.get('dir/sub'), undefined);
    await store.delete('dir/sub');
  });

  it('wraps filesystem failures in StoreError', async () => {
    await store.put('file', Buffer.from('x'));
    // `file` is a regular file, so it cannot also be a directory holding `file/child`.
    await assert.rejects(store.put('file/child', Buffer.from('y')), isStoreError('put'));
  });

  it('fails the probe when the root is gone', async () => {
    const gone = new LocalDirectoryStore(path.join(root, 'does-not-exist'));
    await assert.rejects(gone.probe(), isStoreError('probe'));
  });
});

describe('parseS3Url', () => {
  it('splits bucket and prefix, normalising the prefix', () => {
    assert.deepEqual(parseS3Url('s3://bucket/some/prefix'), { bucket: 'bucket', prefix: 'some/prefix/' });
    assert.deepEqual(parseS3Url('s3://bucket/some/prefix/'), { bucket: 'bucket', prefix: 'some/prefix/' });
    assert.deepEqual(parseS3Url('s3://my.bucket-1'), { bucket: 'my.bucket-1', prefix: '' });
    assert.deepEqual(parseS3Url('s3://bucket/'), { bucket: 'bucket', prefix: '' });
  });

  it('refuses anything else', () => {
    for (const url of ['', 'bucket/prefix', 'http://bucket/x', 's3://', 's3:///x', 's3://Bad_Bucket/x', 's3://b//x']) {
      assert.throws(() => parseS3Url(url), InvalidArgumentError, url);
    }
  });
});

describe('S3ObjectStore', () => {
  let server: S3Server;
  let store: S3ObjectStore;
  before(async () => {
    server = await startS3Server();
    store = new S3ObjectStore({ bucket: server.bucket, prefix: 'vols', endpoint: server.endpoint });
  });
  after(async () => {
    await store.close();
    await server.kill();
    await rm(server.dir, { recursive: true, force: true });
  });

  it('keeps its keys under its prefix', async () => {
    assert.equal(store.location, `s3://${server.bucket}/vols/`);
    await store.put('a/1', Buffer.from('1'));
    const bare = new S3ObjectStore({ bucket: server.bucket, prefix: '', endpoint: server.endpoint });
    const sibling = new S3ObjectStore({ bucket: server.bucket, prefix: 'vols2/', endpoint: server.endpoint });
    try {
      assert.deepEqual(await collect(bare.list('')), ['vols/a/1']);
      assert.deepEqual(await collect(sibling.list('')), []);
      assert.equal(await sibling.get('a/1'), undefined);
    } finally {
      await bare.close();
      await sibling.close();
    }
  });

  it('fails with a request timeout, not a hang, while the server is frozen', async () => {
    await store.put('frozen/x', Buffer.from('still here'));
    const impatient = new S3ObjectStore({
      bucket: server.bucket,
      prefix: 'vols',
      endpoint: server.endpoint,
      requestTimeoutMs: 1000,
    });
    server.freeze();
    try {
      await assert.rejects(impatient.get('frozen/x'), (err) => {
        assertStoreError(err, 'get');
        assert.equal(err.cause.name, 'TimeoutError');
        return true;
      });
    } finally {
      server.thaw();
    }
    assert.deepEqual(await impatient.get('frozen/x'), Buffer.from('still here'));
    await impatient.close();
  });

  it('fails while the server is down and recovers with the data once it restarts', async () => {
    const body = randomBytes(64 * 1024);
    await store.put('outage/x', body);
    await server.kill();
    await assert.rejects(store.get('outage/x'), isStoreError('get'));
    await assert.rejects(store.put('outage/y', body), isStoreError('put'));
    await assert.rejects(store.probe(), isStoreError('probe'));
    await assert.rejects(collect(store.list('outage/')), isStoreError('list'));

    await server.restart();
    await store.probe();
    assert.deepEqual(await store.get('outage/x'), body);
    await store.put('outage/y', body);
    assert.deepEqual(await collect(store.list('outage/')), ['outage/x', 'outage/y']);
  });
});
