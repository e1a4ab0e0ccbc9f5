import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StoreError } from '../../gateway/store/object-store.js';
import { retryingStore } from '../../gateway/store/retrying-store.js';
import { MemoryStore } from '../helpers/memory-store.js';

const refused = () => new StoreError('get', 'k', { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
const denied = () =>
  new StoreError('get', 'k', {
    cause: Object.assign(new Error('Access Denied'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } }),
  });

test('a command-line store tries transient failures again, and nothing else', async () => {
  const inner = new MemoryStore();
  await inner.put('k', Buffer.from('v'));
  const failures: Array<() => Error> = [refused, refused];
  const get = inner.get.bind(inner);
  inner.get = async (key) => {
    const next = failures.shift();
    if (next !== undefined) throw next();
    return get(key);
  };
  const store = retryingStore(inner, { attempts: 3, initialMs: 1, maxMs: 2 });
  assert.equal((await store.get('k'))?.toString(), 'v', 'two refused connections, then the answer');
  failures.push(refused, refused, refused);
  await assert.rejects(store.get('k'), StoreError, 'it gives up after its attempts');
  failures.length = 0;
  failures.push(denied);
  let calls = 0;
  inner.get = async (key) => {
    calls++;
    const next = failures.shift();
    if (next !== undefined) throw next();
    return get(key);
  };
  await assert.rejects(store.get('k'), StoreError);
  assert.equal(calls, 1, 'access denied is not tried again');
  const etag = await store.putIfAbsent('cas', Buffer.from('a'));
  let conditional = 0;
  const putIfMatch = inner.putIfMatch.bind(inner);
  inner.putIfMatch = async (k, b, e) => {
    conditional++;
    if (conditional === 1) throw refused();
    return putIfMatch(k, b, e);
  };
  await assert.rejects(store.putIfMatch('cas', Buffer.from('b'), etag), StoreError);
  assert.equal(conditional, 1, 'a conditional write is sent once: its outcome after a failure is unknown');
});
