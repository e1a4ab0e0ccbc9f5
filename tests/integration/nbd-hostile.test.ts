import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { ProcessMeter, residentMiB } from '../../bench/proc.js';
import { type GatewayProcess, startGateway, startStores, type Stores } from '../helpers/gateway-process.js';
import { HonestClient } from '../helpers/honest-client.js';
import { NbdClient } from '../helpers/nbd-client.js';

/**
 * Clients that try to take the gateway down, each beside an honest client that must go on doing
 * I/O: many idle connections from one address, and clients that ask for large READs and never read
 * the replies. The gateway runs as a process so that its memory can be measured.
 */

const MiB = 1024 * 1024;
const VOLUME = 'vol';
const CACHE_MIB = 256;
const IDLE_TIMEOUT_MS = 3000;

function connect(gateway: GatewayProcess, localAddress: string): Promise<NbdClient> {
  return NbdClient.connect({ host: '127.0.0.1', port: gateway.port, exportName: VOLUME, localAddress });
}

describe('NBD gateway facing hostile clients', () => {
  let stores: Stores;
  let gateway: GatewayProcess;

  before(async () => {
    stores = await startStores('local');
    gateway = await startGateway({
      store: await stores.fresh(),
      journalDir: await stores.tempDir('journal'),
      createVolume: `${VOLUME}=1G`,
      args: ['--cache-size', `${CACHE_MIB}MiB`, '--nbd-idle-timeout', `${IDLE_TIMEOUT_MS}ms`],
    });
  });

  after(async () => {
    await gateway.stop();
    await stores.dispose();
  });

  it('1,024 idle connections from one address leave room for an honest client from another, and time out', async () => {
    const attempts = await Promise.allSettled(Array.from({ length: 1024 }, () => connect(gateway, '127.0.0.2')));
    const idle = attempts.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []));
    // The per-address limit (64 by default) admits some; the rest are closed on accept.
    assert.equal(idle.length, 64, `${idle.length} idle connections were admitted`);

    const honest = new HonestClient(await connect(gateway, '127.0.0.3'));
    honest.start();
    await honest.advance(20);

    // Idle ones go after the idle timeout; the honest client, busy all along, stays.
    await Promise.all(idle.map((client) => client.closed));
    await honest.advance(5);
    const refusedPerPeer = gateway.logs.filter((line) => line.level >= 30 && /too many connections/.test(line.msg));
    assert.equal(refusedPerPeer.length, 0, 'per-address refusals are logged at debug, so a connect loop cannot flood the log');
    assert.equal(gateway.logs.filter((line) => line.msg === 'closing idle NBD connection').length, 64);
    await honest.stop();
  });

  it('40 clients sending eight 32 MiB READs and never reading cost bounded memory, returned after they go', async (t) => {
    const honest = new HonestClient(await connect(gateway, '127.0.0.3'));
    honest.start();
    await honest.advance(50);
    const baseline = residentMiB(gateway.pid) ?? assert.fail('no RSS for the gateway');
    const meter = new ProcessMeter(gateway.pid);

    const hoarders = await Promise.all(Array.from({ length: 40 }, () => connect(gateway, '127.0.0.4')));
    const abandoned: Promise<unknown>[] = [];
    for (const client of hoarders) {
      client.stopReading();
      for (let i = 0; i < 8; i++) abandoned.push(client.read(i * 32 * MiB, 32 * MiB).catch(() => undefined));
    }
    // While they hold what they were given, the honest client keeps going.
    for (let i = 0; i < 5; i++) {
      await delay(1000);
      await honest.advance(20);
    }
    const { peakRssMiB } = meter.stop();
    assert.ok(
      peakRssMiB < CACHE_MIB + 300,
      `peak RSS ${peakRssMiB.toFixed(0)} MiB with 40 non-reading clients (baseline ${baseline.toFixed(0)} MiB)`,
    );
    t.diagnostic(`40 non-reading clients: baseline ${baseline.toFixed(0)} MiB, peak ${peakRssMiB.toFixed(0)} MiB`);

    for (const client of hoarders) client.destroy();
    await Promise.all(abandoned);
    await honest.advance(20);
    // What they held is released at once, and Node gives it back to the system at its next major
    // collection — which an idle heap does not start. A client doing 4 MiB reads, as guests do,
    // makes Node collect; RSS then comes back to near the baseline, not to what they cost.
    const reader = await connect(gateway, '127.0.0.5');
    const bound = baseline + 48;
    const deadline = performance.now() + 30_000;
    let after = residentMiB(gateway.pid) ?? Infinity;
    for (let i = 0; after >= bound && performance.now() < deadline; i++) {
      await reader.read(((i * 7) % 256) * 4 * MiB, 4 * MiB);
      after = residentMiB(gateway.pid) ?? Infinity;
    }
    assert.ok(after < bound, `RSS ${after.toFixed(0)} MiB after the clients left, baseline ${baseline.toFixed(0)} MiB`);
    t.diagnostic(`after the non-reading clients left: ${after.toFixed(0)} MiB`);
    await reader.disconnect();
    await honest.stop();
  });
});
