import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { PreconditionFailedError, StoreError } from '../../gateway/store/object-store.js';
import { S3ObjectStore, type S3StoreOptions } from '../../gateway/store/s3-store.js';
import { conditionalSuite } from '../helpers/conditional-suite.js';
import { startS3FaultProxy } from '../helpers/s3-fault-proxy.js';
import { type S3Server, startS3Server } from '../helpers/s3-server.js';
import { assertStoreError, collect, contractSuite, isStoreError } from '../helpers/store-contract-suite.js';

/**
 * S3ObjectStore against Ceph's RADOS Gateway, a production S3 implementation: the ObjectStore
 * contract, conditional writes enforced by the server, and outages of the server. An integration
 * test rather than a unit test: the server is a real peer (three Ceph daemons) that the file starts
 * once, about 4 s, and every suite here uses it under a prefix of its own.
 */

let server: S3Server;
let suites = 0;

before(async () => {
  server = await startS3Server();
});
after(async () => {
  await server.close();
});

/** Options for a store under a prefix no other suite in this file uses. */
function storeOptions(): S3StoreOptions {
  return { bucket: server.bucket, prefix: `suite${++suites}`, endpoint: server.endpoint, credentials: server.credentials };
}

contractSuite('S3ObjectStore on Ceph RADOS Gateway', async () => {
  const options = storeOptions();
  const store = new S3ObjectStore(options);
  const pagedStore = new S3ObjectStore({ ...options, listPageSize: 3 });
  return {
    store,
    pagedStore,
    async dispose() {
      await store.close();
      await pagedStore.close();
    },
  };
});

conditionalSuite('S3ObjectStore on Ceph RADOS Gateway', async () => {
  const store = new S3ObjectStore(storeOptions());
  return { store, dispose: () => store.close(), ambiguousLosers: true };
});

/** The HTTP status of the S3 answer behind a store error. */
function httpStatus(err: unknown): number | undefined {
  const cause = err instanceof Error ? err.cause : undefined;
  return (cause as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

describe('S3ObjectStore: conditional writes against the server', () => {
  let options: S3StoreOptions;
  let store: S3ObjectStore;
  before(() => {
    options = storeOptions();
    store = new S3ObjectStore(options);
  });
  after(() => store.close());

  it('a second If-None-Match: * PUT of a key and an If-Match with a stale etag are refused with 412', async () => {
    const first = await store.putIfAbsent('head', Buffer.from('epoch 1'));
    const second = await store.putIfAbsent('head', Buffer.from('epoch 1, again')).then(
      () => assert.fail('the second create succeeded'),
      (err: unknown) => err,
    );
    assert.ok(second instanceof PreconditionFailedError, String(second));
    assert.equal(httpStatus(second), 412);

    await store.putIfMatch('head', Buffer.from('epoch 2'), first);
    const stale = await store.putIfMatch('head', Buffer.from('epoch 2 from a deposed writer'), first).then(
      () => assert.fail('the write against a stale etag succeeded'),
      (err: unknown) => err,
    );
    assert.ok(stale instanceof PreconditionFailedError, String(stale));
    assert.equal(httpStatus(stale), 412);
    assert.equal((await store.get('head'))?.toString(), 'epoch 2');
  });

  it('takes the etag with or without the quotes S3 puts around it (RGW matches only the bare one on the wire)', async () => {
    const tag = await store.putIfAbsent('quoted', Buffer.from('v1'));
    assert.ok(!tag.startsWith('"'), `tags are handed out bare: ${tag}`);
    const next = await store.putIfMatch('quoted', Buffer.from('v2'), `"${tag}"`);
    assert.equal((await store.getVersioned('quoted'))?.etag, next);
    await store.putIfMatch('quoted', Buffer.from('v3'), next);
    assert.equal((await store.get('quoted'))?.toString(), 'v3');
  });

  it('reports a conditional PUT answered 500 as a StoreError, even when the server applied it, and does not retry it into a 412', async () => {
    const proxy = await startS3FaultProxy({ host: '127.0.0.1', port: server.port });
    const viaProxy = new S3ObjectStore({ ...options, endpoint: proxy.endpoint });
    try {
      const tag = await viaProxy.putIfAbsent('lost-answer', Buffer.from('v1'));
      proxy.setMode({ kind: 'applied-then-500', times: 1 });
      await assert.rejects(viaProxy.putIfMatch('lost-answer', Buffer.from('v2'), tag), (err: unknown) => {
        assert.ok(!(err instanceof PreconditionFailedError), 'a retry met the write it made itself and called it a lost race');
        assertStoreError(err, 'put-if-match');
        assert.equal(httpStatus(err), 500);
        return true;
      });
      // What the caller does next: read, and find its own write.
      assert.equal((await viaProxy.get('lost-answer'))?.toString(), 'v2');

      proxy.setMode({ kind: 'applied-then-500', times: 1 });
      await assert.rejects(
        viaProxy.putIfAbsent('lost-create', Buffer.from('mine')),
        (err: unknown) => err instanceof StoreError && !(err instanceof PreconditionFailedError),
      );
      assert.equal((await viaProxy.get('lost-create'))?.toString(), 'mine');
      assert.equal(proxy.counts.forwarded, 5, 'one request per conditional PUT and per read: no retry');
    } finally {
      await viaProxy.close();
      await proxy.close();
    }
  });
});

describe('S3ObjectStore: prefix and outages', () => {
  let store: S3ObjectStore;
  before(() => {
    store = new S3ObjectStore({ ...storeOptions(), prefix: 'vols' });
  });
  after(() => store.close());

  it('keeps its keys under its prefix', async () => {
    assert.equal(store.location, `s3://${server.bucket}/vols/`);
    await store.put('a/1', Buffer.from('1'));
    const bare = new S3ObjectStore({ ...storeOptions(), prefix: '' });
    const sibling = new S3ObjectStore({ ...storeOptions(), prefix: 'vols2/' });
    try {
      assert.deepEqual(await collect(bare.list('vols')), ['vols/a/1']);
      assert.deepEqual(await collect(sibling.list('')), []);
      assert.equal(await sibling.get('a/1'), undefined);
    } finally {
      await bare.close();
      await sibling.close();
    }
  });

  it('fails with a request timeout, not a hang, while the server is frozen', async () => {
    await store.put('frozen/x', Buffer.from('still here'));
    const impatient = new S3ObjectStore({ ...storeOptions(), prefix: 'vols', requestTimeoutMs: 1000 });
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
