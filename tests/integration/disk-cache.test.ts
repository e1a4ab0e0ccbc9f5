/**
 * The disk cache tier (`--cache-dir`) with real gateway processes: warm across a SIGTERM and a start
 * (counted by the admin API and the metrics, not inferred from timing), and cache files damaged while
 * the gateway was stopped — bytes flipped, files cut short — detected, dropped and fetched again from
 * the store, never served.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, readdir, truncate } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { type VolumesResponse, VolumesResponseSchema } from '../../gateway/admin/volume-status.js';
import { scrapeMetrics } from '../helpers/admin-api.js';
import { type GatewayProcess, type Stores, startGateway, startStores, waitForJournalDrained } from '../helpers/gateway-process.js';
import { NbdClient } from '../helpers/nbd-client.js';

const VOLUME = 'cached';
const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
/** A RAM cache of two extents, so that reads of the volume go past it to the disk cache or the store. */
const ARGS = ['--extent-size', '1MiB', '--cache-size', '2MiB', '--upload-delay', '0', '--disk-cache-size', '256MiB'];

async function volumes(gw: GatewayProcess): Promise<VolumesResponse> {
  const res = await fetch(`${gw.adminUrl}/v1/volumes`);
  assert.equal(res.status, 200);
  return VolumesResponseSchema.parse(await res.json());
}

/** The volume's disk cache counters and the gateway's disk cache, both required to be there. */
async function diskCacheOf(
  gw: GatewayProcess,
): Promise<{ volume: { hits: number; misses: number }; gateway: NonNullable<VolumesResponse['diskCache']> }> {
  const doc = await volumes(gw);
  const volume = doc.volumes.find((v) => v.name === VOLUME)?.diskCache;
  assert.ok(volume !== undefined && volume !== null, 'the volume shows its disk cache counters');
  assert.ok(doc.diskCache !== null, 'the gateway shows its disk cache');
  return { volume, gateway: doc.diskCache };
}

/** Reads the whole volume in 256 KiB requests, as a guest's sequential read would. */
async function readAll(gw: GatewayProcess): Promise<Buffer> {
  const client = await NbdClient.connect({ host: '127.0.0.1', port: gw.port, exportName: VOLUME });
  try {
    const parts: Buffer[] = [];
    for (let at = 0; at < SIZE; at += 256 * 1024) parts.push(await client.read(at, 256 * 1024));
    return Buffer.concat(parts);
  } finally {
    await client.disconnect();
  }
}

async function cacheFiles(cacheDir: string): Promise<string[]> {
  const files: string[] = [];
  for (const sub of await readdir(path.join(cacheDir, 'objects')))
    for (const f of await readdir(path.join(cacheDir, 'objects', sub))) files.push(path.join(cacheDir, 'objects', sub, f));
  return files.sort();
}

describe('disk cache tier (gateway processes, local store)', () => {
  let stores: Stores;
  before(async () => {
    stores = await startStores('local');
  });
  after(async () => {
    await stores.dispose();
  });

  it(
    'is warm after a restart: every object read comes from it, and damage done while stopped is fetched again, never served',
    { timeout: 300_000 },
    async (t: TestContext) => {
      const store = await stores.fresh();
      const journalDir = await stores.tempDir('journal');
      const cacheDir = await stores.tempDir('cache');
      const args = [...ARGS, '--cache-dir', cacheDir];
      const data = randomBytes(SIZE);

      const first = await startGateway({ store, journalDir, createVolume: `${VOLUME}=${SIZE}`, args });
      try {
        const { gateway } = await diskCacheOf(first);
        // The cache leaves max(1 GiB, 5 %) of its filesystem free: a machine without that room cannot run this test.
        assert.ok(
          gateway.effectiveLimit > 2 * SIZE,
          `the disk cache may hold ${gateway.effectiveLimit} bytes on this machine; the test needs ${2 * SIZE}`,
        );
        const client = await NbdClient.connect({ host: '127.0.0.1', port: first.port, exportName: VOLUME });
        for (let at = 0; at < SIZE; at += MiB) await client.write(at, data.subarray(at, at + MiB));
        await client.disconnect();
        await waitForJournalDrained(journalDir, VOLUME);
        assert.ok((await readAll(first)).equals(data));
        assert.equal(await first.stop(), 0);
      } finally {
        await first.kill('SIGKILL');
      }

      // Started again on the same directories: the index written at the stop brings the cache back.
      const warm = await startGateway({ store, journalDir, createVolume: '', args });
      try {
        const before = await diskCacheOf(warm);
        assert.ok(
          before.gateway.objects > 0 && before.gateway.bytes >= SIZE,
          `the cache came back with ${before.gateway.objects} objects, ${before.gateway.bytes} bytes`,
        );
        assert.ok((await readAll(warm)).equals(data), 'the volume reads back as written');
        const { volume, gateway } = await diskCacheOf(warm);
        assert.ok(volume.hits > 0, `the volume's reads were answered by the disk cache (${volume.hits} hits)`);
        assert.equal(volume.misses, 0, 'no object read went to the store');
        t.diagnostic(
          `after the restart: ${before.gateway.objects} objects, ${before.gateway.bytes} bytes cached; the volume read: ${volume.hits} disk cache hits, ${volume.misses} misses`,
        );
        assert.equal(gateway.corrupt, 0);
        const metrics = await scrapeMetrics(warm.adminUrl);
        assert.equal(metrics.value('holdfast_disk_cache_hits_total', { volume: VOLUME }), volume.hits);
        assert.equal(metrics.value('holdfast_disk_cache_misses_total', { volume: VOLUME }), 0);
        assert.ok(metrics.value('holdfast_disk_cache_bytes') >= SIZE);
        assert.equal(await warm.stop(), 0);
      } finally {
        await warm.kill('SIGKILL');
      }

      // Behind the stopped gateway's back: a byte flipped in every other file, the rest cut short.
      const files = await cacheFiles(cacheDir);
      assert.ok(files.length >= 2, `${files.length} cache files`);
      for (const [i, file] of files.entries()) {
        if (i % 2 === 1) {
          await truncate(file, 100);
          continue;
        }
        // The first byte of the object's data region: every stored object of this volume has one there.
        const fh = await open(file, 'r+');
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, 0);
        b.writeUInt8(b.readUInt8(0) ^ 0x01, 0);
        await fh.write(b, 0, 1, 0);
        await fh.close();
      }
      const damaged = await startGateway({ store, journalDir, createVolume: '', args });
      try {
        assert.ok((await readAll(damaged)).equals(data), 'no damaged byte reached the client');
        const { volume, gateway } = await diskCacheOf(damaged);
        assert.ok(gateway.corrupt > 0, `the damage was detected (${gateway.corrupt} copies dropped)`);
        assert.ok(volume.misses > 0, 'what was dropped was fetched from the store again');
        assert.equal(gateway.errors, 0, 'damage is not an I/O error');
        t.diagnostic(
          `damaged ${files.length} files: ${gateway.corrupt} copies dropped, ${volume.misses} object reads refetched, ${volume.hits} hits`,
        );
        assert.equal(await damaged.stop(), 0);
      } finally {
        await damaged.kill('SIGKILL');
      }
    },
  );
});
