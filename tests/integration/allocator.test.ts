/**
 * The gateway started as its image and the benchmark start it — jemalloc preloaded
 * (shared/runtime-tuning.ts) — really runs on jemalloc, serves, and the loader says nothing about the
 * preload. What it does to RSS is measured by the benchmark (`npm run bench`), not asserted here.
 */
import assert from 'node:assert/strict';
import { realpathSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { JEMALLOC_LIBRARY, gatewayAllocatorEnv } from '../../shared/runtime-tuning.js';
import { type Stores, startGateway, startStores } from '../helpers/gateway-process.js';

describe('the gateway on jemalloc', () => {
  let stores: Stores;
  before(async () => {
    stores = await startStores('local');
  });
  after(async () => {
    await stores.dispose();
  });

  it('maps the preloaded library, serves, and prints no loader complaint', async () => {
    const gw = await startGateway({
      store: await stores.fresh(),
      journalDir: await stores.tempDir('journal'),
      createVolume: 'alloc=64MiB',
      env: gatewayAllocatorEnv(),
    });
    try {
      const maps = await readFile(`/proc/${gw.pid}/maps`, 'utf8');
      const library = realpathSync(JEMALLOC_LIBRARY);
      assert.ok(maps.includes(library), `${library} is not mapped by the gateway (pid ${gw.pid})`);
      assert.deepEqual(
        gw.otherStderr.filter((line) => /LD_PRELOAD|preload|<jemalloc>/i.test(line)),
        [],
        'the dynamic loader complained about the preload, or jemalloc about its settings',
      );
      // MALLOC_CONF's background_thread:true took: jemalloc runs its purging thread.
      const threads = await Promise.all(
        (await readdir(`/proc/${gw.pid}/task`)).map((tid) => readFile(`/proc/${gw.pid}/task/${tid}/comm`, 'utf8')),
      );
      assert.ok(
        threads.some((name) => name.startsWith('jemalloc_bg_thd')),
        `no jemalloc background thread among ${threads.map((t) => t.trim()).join(', ')}`,
      );
    } finally {
      await gw.stop();
    }
  });
});
