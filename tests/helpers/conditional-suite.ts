import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { type ObjectStore, PreconditionFailedError, StoreError } from '../../gateway/store/object-store.js';

export interface ConditionalFixture {
  readonly store: ObjectStore;
  dispose(): Promise<void>;
  /**
   * The server answers some losers of a race with an error that does not say they lost (Ceph's
   * RADOS Gateway: 500): those get a StoreError, whose outcome the caller must find out by reading.
   */
  readonly ambiguousLosers?: boolean;
}

/**
 * Conditional writes are what fences a deposed gateway: every store the volumes run on must refuse
 * a second create and a write against a stale tag, and let exactly one of two racing writers win.
 * Used by the unit tests (local directory, memory) and against the real S3 server.
 */
export function conditionalSuite(name: string, setup: () => Promise<ConditionalFixture>): void {
  describe(`conditional writes: ${name}`, () => {
    let store: ObjectStore;
    let dispose: () => Promise<void>;
    let ambiguousLosers: boolean;
    before(async () => {
      const fixture = await setup();
      ({ store } = fixture);
      dispose = () => fixture.dispose();
      ambiguousLosers = fixture.ambiguousLosers === true;
    });
    after(async () => {
      await dispose();
    });

    it('creates once: a second If-None-Match create fails with PreconditionFailedError', async () => {
      const etag = await store.putIfAbsent('cas/once', Buffer.from('first'));
      assert.ok(etag.length > 0);
      await assert.rejects(store.putIfAbsent('cas/once', Buffer.from('second')), PreconditionFailedError);
      const got = await store.getVersioned('cas/once');
      assert.equal(got?.body.toString(), 'first');
      assert.equal(got.etag, etag);
    });

    it('replaces only against the current tag; a stale tag fails with PreconditionFailedError', async () => {
      const v1 = await store.putIfAbsent('cas/match', Buffer.from('v1'));
      const v2 = await store.putIfMatch('cas/match', Buffer.from('v2'), v1);
      assert.notEqual(v1, v2);
      await assert.rejects(store.putIfMatch('cas/match', Buffer.from('stale'), v1), PreconditionFailedError);
      assert.equal((await store.getVersioned('cas/match'))?.body.toString(), 'v2');
      assert.equal((await store.get('cas/match'))?.toString(), 'v2', 'a plain get reads the current version');
      const v3 = await store.putIfMatch('cas/match', Buffer.from('v3'), v2);
      assert.equal((await store.getVersioned('cas/match'))?.etag, v3);
    });

    it('lets exactly one of many writers racing from the same tag win', async () => {
      const base = await store.putIfAbsent('cas/race', Buffer.from('base'));
      const results = await Promise.allSettled(
        Array.from({ length: 12 }, (_, i) => store.putIfMatch('cas/race', Buffer.from(`w${i}`), base)),
      );
      const won = results.filter((r) => r.status === 'fulfilled');
      assert.equal(won.length, 1, 'exactly one writer wins');
      const lost = (err: unknown): boolean => err instanceof PreconditionFailedError || (ambiguousLosers && err instanceof StoreError);
      for (const r of results) if (r.status === 'rejected') assert.ok(lost(r.reason), String(r.reason));
      const winner = results.findIndex((r) => r.status === 'fulfilled');
      assert.equal((await store.getVersioned('cas/race'))?.body.toString(), `w${winner}`);
    });

    it('refuses If-Match on a missing object, and an old tag after delete and re-create', async () => {
      await assert.rejects(store.putIfMatch('cas/missing', Buffer.from('x'), '1-00000000'), PreconditionFailedError);
      const old = await store.putIfAbsent('cas/recreated', Buffer.from('old'));
      await store.delete('cas/recreated');
      assert.equal(await store.getVersioned('cas/recreated'), undefined);
      await store.putIfAbsent('cas/recreated', Buffer.from('new'));
      await assert.rejects(store.putIfMatch('cas/recreated', Buffer.from('zombie'), old), PreconditionFailedError);
      assert.equal((await store.get('cas/recreated'))?.toString(), 'new');
    });

    it('lists conditional objects like any other, with size and time', async () => {
      await store.putIfAbsent('listed/head', Buffer.from('12345'));
      await store.put('listed/plain', Buffer.from('abc'));
      const infos = [];
      for await (const info of store.listDetailed('listed/')) infos.push(info);
      assert.deepEqual(
        infos.map((i) => [i.key, i.size]),
        [
          ['listed/head', 5],
          ['listed/plain', 3],
        ],
      );
      for (const i of infos) assert.ok(Math.abs(i.lastModified.getTime() - Date.now()) < 60_000);
    });
  });
}
