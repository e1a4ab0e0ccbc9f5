import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { RequestSlots } from '../../gateway/store/request-slots.js';
import { S3ObjectStore } from '../../gateway/store/s3-store.js';

/** A request that stays in flight until `finish` is called. */
function pending(): { promise: Promise<void>; finish: () => void } {
  let finish = (): void => undefined;
  const promise = new Promise<void>((resolve) => (finish = resolve));
  return { promise, finish };
}

describe('request slots', () => {
  it('keeps data requests to the capacity less the reserve, and lets control requests pass them', async () => {
    const slots = new RequestSlots(3, 1);
    const order: string[] = [];
    const held = [pending(), pending(), pending()];
    const running = held.map((p, i) =>
      slots.run('data', async () => {
        order.push(`data${i}`);
        await p.promise;
      }),
    );
    await delay(1);
    assert.deepEqual(order, ['data0', 'data1'], 'the third data request waits: one slot is kept for control requests');
    const control = slots.run('control', async () => {
      order.push('control');
      await Promise.resolve();
    });
    await control;
    assert.deepEqual(order, ['data0', 'data1', 'control'], 'the control request took the reserved slot at once');
    held[0]?.finish();
    await delay(1);
    assert.deepEqual(order, ['data0', 'data1', 'control', 'data2']);
    for (const p of held) p.finish();
    await Promise.all(running);
    assert.equal(slots.active, 0);
  });

  it('a control request waiting goes before data requests waiting longer', async () => {
    const slots = new RequestSlots(2, 1);
    const order: string[] = [];
    const first = pending();
    const second = pending();
    const a = slots.run('control', () => first.promise);
    const b = slots.run('control', () => second.promise);
    const data = slots.run('data', async () => {
      order.push('data');
      await Promise.resolve();
    });
    const control = slots.run('control', async () => {
      order.push('control');
      await Promise.resolve();
    });
    first.finish();
    second.finish();
    await Promise.all([a, b, data, control]);
    assert.deepEqual(order, ['control', 'data']);
  });

  it('a request aborted while it waits is never made, and leaves the queue', async () => {
    const slots = new RequestSlots(1, 0);
    const busy = pending();
    const running = slots.run('data', () => busy.promise);
    const abort = new AbortController();
    let made = false;
    const waiting = slots.run(
      'data',
      async () => {
        made = true;
        await Promise.resolve();
      },
      abort.signal,
    );
    assert.equal(slots.queued, 1);
    abort.abort(new Error('client gone'));
    await assert.rejects(waiting, /client gone/);
    assert.equal(slots.queued, 0);
    busy.finish();
    await running;
    assert.equal(made, false);
    assert.equal(slots.active, 0);
  });
});

describe('the S3 store under a burst of requests beyond its sockets', () => {
  it('times each request from when it is sent, not from when it was queued: none times out', async () => {
    const RESPONSE_MS = 150;
    const server: Server = createServer((req, res) => {
      req.resume();
      setTimeout(() => {
        res.writeHead(200, { 'Content-Length': '4', ETag: '"abc"', 'Content-Type': 'application/octet-stream' });
        res.end('data');
      }, RESPONSE_MS);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const store = new S3ObjectStore({
      bucket: 'bucket',
      prefix: 'p',
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
      maxSockets: 3,
      // Far above one request's 150 ms, far below the ~1.2 s the last of 24 requests on 3 sockets waits.
      requestTimeoutMs: 1000,
      maxAttempts: 1,
    });
    try {
      const gets = Array.from({ length: 24 }, (_, i) => store.get(`object-${i}`));
      // Sent after the burst: the reserved sockets answer it within a request's time, not the burst's.
      const started = performance.now();
      const head = await store.getVersioned('head');
      const headMs = performance.now() - started;
      const bodies = await Promise.all(gets);
      assert.ok(
        bodies.every((b) => b?.toString() === 'data'),
        'every GET of the burst was answered',
      );
      assert.equal(head?.etag, 'abc');
      assert.ok(headMs < 6 * RESPONSE_MS, `the head read waited ${Math.round(headMs)} ms behind the burst`);
    } finally {
      await store.close();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    }
  });
});
