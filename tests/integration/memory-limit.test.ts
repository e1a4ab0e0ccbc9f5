/**
 * `--memory-limit` with a real gateway process: a limit below what Node itself takes makes the
 * gateway take room from the volume's cache (at most half), shown by the admin API and the metrics,
 * while the volume keeps reading back what was written; `off` takes none. How far it holds the RSS
 * down under load is measured by the benchmark (`npm run bench`), not asserted here.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { VolumesResponseSchema } from '../../gateway/admin/volume-status.js';
import { scrapeMetrics } from '../helpers/admin-api.js';
import { type GatewayProcess, type Stores, startGateway, startStores } from '../helpers/gateway-process.js';
import { NbdClient } from '../helpers/nbd-client.js';

const VOLUME = 'limited';
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const CACHE = 32 * MiB;

async function cacheOf(gw: GatewayProcess): Promise<{ bytes: number; squeezed: number }> {
  const res = await fetch(`${gw.adminUrl}/v1/volumes`);
  assert.equal(res.status, 200);
  const cache = VolumesResponseSchema.parse(await res.json()).volumes.find((v) => v.name === VOLUME)?.cache;
  assert.ok(cache !== undefined, 'the volume is listed');
  return cache;
}

/** Writes the whole volume, then reads it back twice (the second pass through the cache), comparing. */
async function writeAndReadBack(gw: GatewayProcess): Promise<void> {
  const data = randomBytes(SIZE);
  const client = await NbdClient.connect({ host: '127.0.0.1', port: gw.port, exportName: VOLUME });
  try {
    for (let at = 0; at < SIZE; at += MiB) await client.write(at, data.subarray(at, at + MiB));
    await client.flush();
    for (let pass = 0; pass < 2; pass++)
      for (let at = 0; at < SIZE; at += MiB)
        assert.ok((await client.read(at, MiB)).equals(data.subarray(at, at + MiB)), `pass ${pass} at ${at}`);
  } finally {
    await client.disconnect();
  }
}

describe('the memory limit (gateway processes, local store)', () => {
  let stores: Stores;
  before(async () => {
    stores = await startStores('local');
  });
  after(async () => {
    await stores.dispose();
  });

  const start = async (limit: string): Promise<GatewayProcess> =>
    startGateway({
      store: await stores.fresh(),
      journalDir: await stores.tempDir('journal'),
      createVolume: `${VOLUME}=${SIZE}`,
      args: ['--cache-size', String(CACHE), '--extent-size', '1MiB', '--memory-limit', limit],
    });

  it('below what Node takes: half the cache is given up, and the volume still reads back what was written', async () => {
    const gw = await start('48MiB');
    try {
      await writeAndReadBack(gw);
      const cache = await cacheOf(gw);
      assert.equal(cache.squeezed, CACHE / 2, 'the RSS cannot get under 48 MiB less the margin: the whole half is taken');
      assert.ok(cache.bytes <= CACHE / 2, `the cache holds ${cache.bytes} bytes, more than its squeezed bound`);
      const metrics = await scrapeMetrics(gw.adminUrl);
      assert.equal(metrics.value('holdfast_cache_squeezed_bytes', { volume: VOLUME }), CACHE / 2);
      assert.ok(
        gw.logs.some((l) => l.msg === 'memory limit: taking room from the extent caches'),
        'the gateway said why its cache shrank',
      );
    } finally {
      await gw.stop();
    }
  });

  it('off: the cache keeps its whole bound', async () => {
    const gw = await start('off');
    try {
      await writeAndReadBack(gw);
      const cache = await cacheOf(gw);
      assert.equal(cache.squeezed, 0);
      assert.ok(cache.bytes > CACHE / 2, `the cache holds only ${cache.bytes} bytes after two passes`);
      assert.equal((await scrapeMetrics(gw.adminUrl)).value('holdfast_cache_squeezed_bytes', { volume: VOLUME }), 0);
    } finally {
      await gw.stop();
    }
  });
});
