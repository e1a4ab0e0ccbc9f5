import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DETAIL_TYPES } from '../../shared/eventbridge.js';
import { HoldfastEventSchema, type HoldfastEvent } from '../../shared/events.js';
import { FakeEventBridge } from '../helpers/eventbridge-server.js';
import { startGateway } from '../helpers/gateway-process.js';
import { NbdClient } from '../helpers/nbd-client.js';
import { startS3Server } from '../helpers/s3-server.js';

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test(
  'a gateway started with --events eventbridge:BUS puts its real storage events on the bus, signed with its AWS credentials',
  { timeout: 90_000 },
  async () => {
    const s3 = await startS3Server();
    const env = s3.env;
    // Everything started is stopped whatever fails, the gateway's start included: a server left open keeps the test process alive.
    let fake: FakeEventBridge | undefined;
    let gw: Awaited<ReturnType<typeof startGateway>> | undefined;
    let nbd: NbdClient | undefined;
    const journalDir = await mkdtemp(join(tmpdir(), 'holdfast-eb-gw-'));
    try {
      // The gateway signs with the standard credential chain: here the environment it shares with the S3 client.
      fake = await FakeEventBridge.start(0, { accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY! });
      const bus = fake;
      gw = await startGateway({
        store: { kind: 's3', args: ['--store', `s3://${s3.bucket}/eb`, '--s3-endpoint', s3.endpoint], env },
        journalDir,
        createVolume: 'demo=8M',
        args: [
          '--upload-delay',
          '0',
          '--events',
          'eventbridge:holdfast-e2e',
          '--events-endpoint',
          fake.endpoint,
          '--events-spill',
          '--gateway-id',
          'gw-e2e',
        ],
      });
      const gateway = gw;
      const received = (): HoldfastEvent[] => bus.accepted.map((e) => HoldfastEventSchema.parse(JSON.parse(e.Detail ?? 'null')));
      const edge = (set: boolean) => () => received().find((e) => e.kind === 'storage-unavailable' && e.set === set);

      await s3.kill();
      nbd = await NbdClient.connect({ host: '127.0.0.1', port: gateway.port, exportName: 'demo' });
      // Acknowledged from the journal; its upload fails, which is the storage-unavailable edge.
      await nbd.write(0, Buffer.alloc(4096, 7));
      const down = await until('storage-unavailable set:true on the bus', edge(true));
      await s3.restart();
      const up = await until('storage-unavailable set:false on the bus', edge(false));

      assert.deepEqual(bus.protocolErrors, []);
      assert.equal(down.volume, 'demo');
      assert.equal(down.gateway, 'gw-e2e');
      assert.equal(up.episode, down.episode);
      assert.equal(down.errorClass, 'transient');
      for (const entry of bus.accepted) {
        assert.equal(entry.Source, 'holdfast.gateway');
        assert.equal(entry.EventBusName, 'holdfast-e2e');
        assert.equal(entry.DetailType, DETAIL_TYPES[HoldfastEventSchema.parse(JSON.parse(entry.Detail!)).kind]);
      }
      const metrics = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
      const delivered = Number(/^holdfast_events_delivered_total\{sink="eventbridge"\} (\d+)$/m.exec(metrics)?.[1]);
      assert.ok(delivered >= 2, `delivered ${delivered}`);
      assert.match(metrics, /^holdfast_events_dropped_total\{sink="eventbridge",reason="queue-full"\} 0$/m);
    } finally {
      await nbd?.disconnect().catch(() => undefined);
      await gw?.stop();
      await fake?.stop();
      await s3.close();
      await rm(journalDir, { recursive: true, force: true });
    }
  },
);
