import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { scrapeMetrics } from '../helpers/admin-api.js';
import { runCli } from '../helpers/cli-process.js';
import { type GatewayProcess, startGateway, startStores, type Stores } from '../helpers/gateway-process.js';
import { NbdClient } from '../helpers/nbd-client.js';
import { runTool, runToolOk } from '../helpers/run-tool.js';
import { makePskFile, makeTlsMaterial, type TlsMaterial } from '../helpers/tls-material.js';

/**
 * The gateway process as an operator would run it on a network: TLS required with PSK keys and an
 * access file, a TCP and a Unix listener, keys rotated with SIGHUP; and what sparse-aware clients
 * learn about a volume's holes.
 */

const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;

describe('gateway NBD security and listeners', () => {
  let stores: Stores;
  let gateway: GatewayProcess;
  let material: TlsMaterial;
  let socketPath = '';
  let dir = '';

  const pskUri = (identity: string, volume: string, keys = material.pskFile): string =>
    `nbds://${identity}@127.0.0.1:${gateway.port}/${volume}?tls-psk-file=${keys}`;

  before(async () => {
    stores = await startStores('local');
    dir = await stores.tempDir('tls');
    material = await makeTlsMaterial(dir, { clients: [], pskIdentities: ['alice', 'bob'] });
    const accessFile = path.join(dir, 'access.json');
    await writeFile(accessFile, JSON.stringify({ alice: { vm1: 'rw' }, bob: { '*': 'ro' } }));
    socketPath = path.join(dir, 'nbd.sock');
    const store = await stores.fresh();
    const journalDir = await stores.tempDir('journal');
    // A second volume, created before the gateway starts, so that access rules have something to hide.
    const created = await runCli(['volume', 'create', 'vm2', '--size', '64M', ...store.args, '--journal-dir', journalDir], {
      cwd: dir,
      env: store.env,
    });
    assert.equal(created.code, 0, created.stderr);
    gateway = await startGateway({
      store,
      journalDir,
      createVolume: 'vm1=64M',
      args: ['--listen', `unix:${socketPath}`, '--tls', 'require', '--tls-psk', material.pskFile, '--nbd-access', accessFile],
    });
  });

  after(async () => {
    await gateway.stop();
    await stores.dispose();
  });

  it('serves over TLS on TCP and on the Unix socket, describing a volume by its name and size only', async () => {
    const tcp = JSON.parse((await runToolOk('nbdinfo', ['--json', pskUri('alice', 'vm1')])).stdout) as {
      TLS: boolean;
      exports: Array<Record<string, unknown>>;
    };
    assert.equal(tcp.TLS, true);
    assert.equal(tcp.exports[0]?.['description'], 'Holdfast volume vm1, 64 MiB');
    const unix = JSON.parse(
      (await runToolOk('nbdinfo', ['--json', `nbds+unix://alice@/vm1?socket=${socketPath}&tls-psk-file=${material.pskFile}`])).stdout,
    ) as { TLS: boolean; exports: Array<Record<string, unknown>> };
    assert.equal(unix.TLS, true);
    assert.equal(unix.exports[0]?.['export-size'], 64 * MiB);
    const listing = JSON.parse((await runToolOk('nbdinfo', ['--list', '--json', pskUri('bob', '')])).stdout) as {
      exports: Array<{ 'export-name': string; description: string }>;
    };
    assert.deepEqual(
      listing.exports.map((e) => [e['export-name'], e.description]).sort(),
      [
        ['vm1', 'Holdfast volume vm1, 64 MiB'],
        ['vm2', 'Holdfast volume vm2, 64 MiB'],
      ],
      'nothing about where the volumes are stored',
    );
  });

  it('refuses alice the volume she may not open, logging her identity, and plain clients anything', async () => {
    const refused = await runTool('nbdinfo', [pskUri('alice', 'vm2')]);
    assert.notEqual(refused.code, 0);
    const line = gateway.logs.find((l) => /access refused/.test(l.msg));
    assert.equal(line?.['identity'], 'alice');
    assert.equal(line['export'], 'vm2');
    const plain = await runTool('nbdinfo', ['--list', `nbd://127.0.0.1:${gateway.port}`]);
    assert.notEqual(plain.code, 0);
    assert.doesNotMatch(plain.stdout + plain.stderr, /vm1|vm2/);
  });

  it('rereads the PSK file on SIGHUP and keeps connections open', async () => {
    const open = await NbdClient.connect({
      host: '127.0.0.1',
      port: gateway.port,
      exportName: 'vm1',
      tls: { psk: { identity: 'alice', key: material.pskKeys.get('alice')! } },
    });
    const rotated = path.join(dir, 'rotated.psk');
    await makePskFile(rotated, ['alice', 'bob']);
    const old = path.join(dir, 'old.psk');
    await copyFile(material.pskFile, old);
    await copyFile(rotated, material.pskFile);
    process.kill(gateway.pid, 'SIGHUP');
    for (let i = 0; i < 200 && !gateway.logs.some((l) => /SIGHUP: .*reloaded/.test(l.msg)); i++) await delay(25);
    assert.ok(
      gateway.logs.some((l) => /SIGHUP: .*reloaded/.test(l.msg)),
      'the gateway says it reloaded',
    );
    assert.notEqual((await runTool('nbdinfo', [pskUri('alice', 'vm1', old)])).code, 0, 'the old key is refused');
    await runToolOk('nbdinfo', [pskUri('alice', 'vm1')]);
    await open.write(0, Buffer.alloc(4096, 1));
    assert.deepEqual(await open.read(0, 4096), Buffer.alloc(4096, 1), 'a session from before the reload goes on');
    await open.disconnect();

    await writeFile(material.pskFile, 'garbage\n');
    process.kill(gateway.pid, 'SIGHUP');
    for (let i = 0; i < 200 && !gateway.logs.some((l) => /SIGHUP: reload failed/.test(l.msg)); i++) await delay(25);
    assert.ok(gateway.logs.some((l) => /SIGHUP: reload failed/.test(l.msg)));
    await copyFile(rotated, material.pskFile);
    await runToolOk('nbdinfo', [pskUri('alice', 'vm1')]);
  });
});

/**
 * What sparse-aware clients learn from a volume: its image knows which extents hold data, so a
 * fresh volume is one hole and a copy reads only what was written.
 */
describe('volume allocation through base:allocation', () => {
  let stores: Stores;
  let gateway: GatewayProcess;
  let dir = '';

  before(async () => {
    stores = await startStores('local');
    dir = await stores.tempDir('sparse');
    gateway = await startGateway({ store: await stores.fresh(), journalDir: await stores.tempDir('journal'), createVolume: 'big=1G' });
  });

  after(async () => {
    await gateway.stop();
    await stores.dispose();
  });

  const map = async (): Promise<Array<[number, number, number]>> => {
    const { stdout } = await runToolOk('nbdinfo', ['--map', '--json', gateway.uri('big')]);
    return (JSON.parse(stdout) as Array<{ offset: number; length: number; type: number }>).map((e) => [e.offset, e.length, e.type]);
  };

  it('a fresh 1 GiB volume is one hole', async () => {
    assert.deepEqual(await map(), [[0, GiB, 3]]);
  });

  it('after 4 MiB written at 512 MiB, nbdinfo --map and qemu-img map show data there only', async () => {
    await runToolOk('qemu-io', ['-f', 'raw', gateway.uri('big'), '-c', `write -P 0x42 ${512 * MiB} ${4 * MiB}`, '-c', 'flush']);
    assert.deepEqual(await map(), [
      [0, 512 * MiB, 3],
      [512 * MiB, 4 * MiB, 0],
      [516 * MiB, GiB - 516 * MiB, 3],
    ]);
    const { stdout } = await runToolOk('qemu-img', ['map', '--output=json', '-f', 'raw', gateway.uri('big')]);
    const ranges = (JSON.parse(stdout) as Array<{ start: number; length: number; data: boolean }>).map((e) => [e.start, e.length, e.data]);
    assert.deepEqual(ranges, [
      [0, 512 * MiB, false],
      [512 * MiB, 4 * MiB, true],
      [516 * MiB, GiB - 516 * MiB, false],
    ]);
  });

  it('nbdcopy from the mostly empty volume reads the data only and leaves a sparse file', async () => {
    const target = path.join(dir, 'big.raw');
    const reads = async (): Promise<number> =>
      (await scrapeMetrics(gateway.adminUrl)).value('holdfast_nbd_requests_total', { command: 'read' });
    const readsBefore = await reads();
    await runToolOk('nbdcopy', [gateway.uri('big'), target]);
    // nbdcopy would skip zeros it read anyway; what holes save is reading them: 4 MiB in its 256 KiB requests.
    const copyReads = (await reads()) - readsBefore;
    assert.ok(copyReads <= 32, `nbdcopy sent ${copyReads} READs for 4 MiB of data in 1 GiB`);
    const allocated = Number((await runToolOk('du', ['--block-size=1', target])).stdout.split('\t')[0]);
    assert.ok(allocated <= 8 * MiB, `nbdcopy allocated ${allocated} bytes of 1 GiB for 4 MiB of data`);
    const copy = await readFile(target);
    assert.equal(copy.length, GiB);
    assert.ok(copy.subarray(512 * MiB, 516 * MiB).every((byte) => byte === 0x42));
  });
});
