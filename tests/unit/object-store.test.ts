import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LocalDirectoryStore, TEMP_FILE_MARKER } from '../../gateway/store/local-store.js';
import { parseS3Url } from '../../gateway/store/s3-store.js';
import { InvalidArgumentError } from '../../shared/errors.js';
import { collect, contractSuite, isStoreError } from '../helpers/store-contract-suite.js';

/**
 * The object stores without a server: the local directory's contract and its own rules, and S3
 * location parsing. S3ObjectStore's contract runs against a real S3 server in
 * tests/integration/s3-store.test.ts.
 */

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
