import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { IHAVEOPT, Opt, Rep } from '../../gateway/nbd/constants.js';
import { FileSecurity } from '../../gateway/nbd/security.js';
import { NbdServer } from '../../gateway/nbd/server.js';
import { ConfigError } from '../../shared/errors.js';
import { MemoryExport, MemoryRegistry } from '../helpers/memory-export.js';
import { HonestClient } from '../helpers/honest-client.js';
import { NbdClient } from '../helpers/nbd-client.js';
import { listenOnLoopback } from '../helpers/nbd-listen.js';
import { waitFor } from '../helpers/wait-for.js';
import { runTool, runToolOk } from '../helpers/run-tool.js';
import { makePskFile, makeTlsMaterial, renewServerCertificate, type TlsMaterial } from '../helpers/tls-material.js';

/**
 * STARTTLS against the clients people use — nbdinfo and nbdcopy (libnbd, GnuTLS), qemu-img and
 * qemu-io (QEMU's tls-creds objects) — with PSK and with X.509, per-identity access, and clients
 * that break the TLS handshake on purpose. Keys and certificates are made by certtool and psktool.
 */

const MiB = 1024 * 1024;
const HANDSHAKE_TIMEOUT_MS = 1500;

interface LogLine {
  readonly msg: string;
  readonly identity?: string | null;
  readonly export?: string;
  readonly reason?: string;
}

function exports(): MemoryExport[] {
  return [
    new MemoryExport({ name: 'alpha-disk', size: 16 * MiB }),
    new MemoryExport({ name: 'beta-disk', size: 8 * MiB }),
    new MemoryExport({ name: 'psk-copy', size: 8 * MiB }),
    new MemoryExport({ name: 'x509-copy', size: 8 * MiB }),
    new MemoryExport({ name: 'psk-qemu', size: 8 * MiB }),
    new MemoryExport({ name: 'x509-qemu', size: 8 * MiB }),
    new MemoryExport({ name: 'sparse', size: 64 * MiB, allocationBlockSize: MiB }),
    new MemoryExport({ name: 'honest', size: 8 * MiB }),
  ];
}

/** A raw socket past greeting, client flags and an acknowledged NBD_OPT_STARTTLS: the TLS handshake is next. */
async function rawAfterStartTls(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  let received = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    wake?.();
  });
  const take = async (size: number): Promise<Buffer> => {
    while (received.length < size) await new Promise<void>((resolve) => (wake = resolve));
    const out = received.subarray(0, size);
    received = received.subarray(size);
    return out;
  };
  await take(18);
  const start = Buffer.alloc(4 + 16);
  start.writeUInt32BE(3, 0);
  start.writeBigUInt64BE(IHAVEOPT, 4);
  start.writeUInt32BE(Opt.STARTTLS, 12);
  socket.write(start);
  const reply = await take(20);
  assert.equal(reply.readUInt32BE(12), Rep.ACK);
  socket.removeAllListeners('data');
  return socket;
}

function closed(socket: Socket): Promise<void> {
  return socket.destroyed
    ? Promise.resolve()
    : new Promise((resolve) =>
        socket.once('close', () => {
          resolve();
        }),
      );
}

describe('NBD over TLS against real clients', () => {
  const registry = new MemoryRegistry(exports());
  const logs: LogLine[] = [];
  let dir = '';
  let material: TlsMaterial;
  let security: FileSecurity;
  let server: NbdServer;
  let port = 0;

  const pskUri = (identity: string, name: string, keys = material.pskFile): string =>
    `nbds://${identity}@127.0.0.1:${port}/${name}?tls-psk-file=${keys}`;
  const x509Uri = (client: string, name: string): string =>
    `nbds://127.0.0.1:${port}/${name}?tls-certificates=${material.clientDirs.get(client)}`;
  const pskObject = (identity: string): string => `tls-creds-psk,id=tls0,endpoint=client,dir=${material.pskDir},username=${identity}`;
  const x509Object = (client: string): string => `tls-creds-x509,id=tls0,endpoint=client,dir=${material.clientDirs.get(client)}`;
  const qemuTarget = (name: string): string => `driver=nbd,host=127.0.0.1,port=${port},export=${name},tls-creds=tls0`;
  const pskKey = (identity: string): Buffer => material.pskKeys.get(identity) ?? assert.fail(`no key for ${identity}`);

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'holdfast-tls-'));
    material = await makeTlsMaterial(dir, { clients: ['carol'], untrusted: ['eve'], pskIdentities: ['alice', 'bob'] });
    const accessFile = path.join(dir, 'access.json');
    await writeFile(
      accessFile,
      JSON.stringify({
        alice: { 'alpha-disk': 'rw', 'psk-copy': 'rw', 'psk-qemu': 'rw', sparse: 'rw', honest: 'rw' },
        bob: { 'beta-disk': 'rw', 'alpha-disk': 'ro' },
        carol: { '*': 'rw' },
      }),
    );
    security = await FileSecurity.load({
      tls: 'require',
      files: { cert: material.serverCert, key: material.serverKey, ca: material.caCert, psk: material.pskFile },
      accessFile,
    });
    const logSink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(JSON.parse(line) as LogLine);
        done();
      },
    });
    server = new NbdServer({ registry, logger: pino({ level: 'info' }, logSink), security, handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS });
    port = await listenOnLoopback(server);
  });

  after(async () => {
    await server.close(5000);
    await rm(dir, { recursive: true, force: true });
  });

  it('nbdinfo connects with a PSK and sees the export over TLS with structured replies', async () => {
    const { stdout } = await runToolOk('nbdinfo', ['--json', pskUri('alice', 'alpha-disk')]);
    const info = JSON.parse(stdout) as { TLS: boolean; structured: boolean; exports: Array<Record<string, unknown>> };
    assert.equal(info.TLS, true);
    assert.equal(info.structured, true);
    assert.equal(info.exports[0]?.['export-name'], 'alpha-disk');
    assert.equal(info.exports[0]['export-size'], 16 * MiB);
    assert.equal(info.exports[0]['is_read_only'], false);
    assert.deepEqual(info.exports[0]['contexts'], ['base:allocation']);
  });

  it('lists to each identity only the volumes it may open, read-only where so granted', async () => {
    const names = async (identity: string): Promise<string[]> => {
      const { stdout } = await runToolOk('nbdinfo', ['--list', '--json', pskUri(identity, '')]);
      return (JSON.parse(stdout) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']).sort();
    };
    assert.deepEqual(await names('alice'), ['alpha-disk', 'honest', 'psk-copy', 'psk-qemu', 'sparse']);
    assert.deepEqual(await names('bob'), ['alpha-disk', 'beta-disk']);
    const { stdout } = await runToolOk('nbdinfo', ['--json', pskUri('bob', 'alpha-disk')]);
    assert.equal((JSON.parse(stdout) as { exports: Array<Record<string, unknown>> }).exports[0]?.['is_read_only'], true);
  });

  it('an identity allowed only some volumes cannot open another: NBD_REP_ERR_POLICY and a log line naming it', async () => {
    const before = logs.length;
    const refused = await runTool('nbdinfo', [pskUri('alice', 'beta-disk')]);
    assert.notEqual(refused.code, 0);
    assert.doesNotMatch(refused.stdout, /export-size/);
    const qemu = await runTool('qemu-img', ['info', '--object', pskObject('alice'), '--image-opts', qemuTarget('beta-disk')]);
    assert.notEqual(qemu.code, 0);
    assert.match(qemu.stderr, /Denied by server/, 'QEMU names NBD_REP_ERR_POLICY this way');
    const refusals = logs.slice(before).filter((line) => /access refused/.test(line.msg));
    assert.ok(refusals.length >= 2);
    assert.ok(
      refusals.every((line) => line.identity === 'alice' && line.export === 'beta-disk'),
      JSON.stringify(refusals),
    );
    assert.equal(registry.get('beta-disk').attachCount, 0);
  });

  it('refuses a plain client before it learns any export name', async () => {
    const attachedBefore = registry.get('alpha-disk').attachCount;
    for (const [args, asked] of [
      [['--list', `nbd://127.0.0.1:${port}`], ''],
      [['--json', `nbd://127.0.0.1:${port}/`], ''],
      [[`nbd://127.0.0.1:${port}/alpha-disk`], 'alpha-disk'],
    ] as const) {
      const r = await runTool('nbdinfo', args);
      assert.notEqual(r.code, 0, args.join(' '));
      for (const exp of registry.exports) {
        // A client may repeat the name it asked for; any other name would be a leak.
        if (exp.name !== asked)
          assert.ok(!`${r.stdout}${r.stderr}`.includes(exp.name), `${args.join(' ')} revealed ${exp.name}:\n${r.stdout}${r.stderr}`);
      }
    }
    const qemu = await runTool('qemu-img', ['info', `nbd://127.0.0.1:${port}/alpha-disk`]);
    assert.notEqual(qemu.code, 0);
    assert.match(qemu.stderr, /TLS negotiation required/);
    assert.equal(registry.get('alpha-disk').attachCount, attachedBefore, 'no transmission phase without TLS');
  });

  it('fails the TLS handshake for a wrong PSK key and for an unknown identity', async () => {
    const before = server.stats.protocolErrors.TlsHandshakeFailed;
    const wrong = path.join(dir, 'wrong.psk');
    await makePskFile(wrong, ['alice', 'mallory']);
    for (const identity of ['alice', 'mallory']) {
      const r = await runTool('nbdinfo', [pskUri(identity, 'alpha-disk', wrong)]);
      assert.notEqual(r.code, 0, identity);
      assert.match(r.stderr, /gnutls_handshake|TLS/i);
    }
    assert.equal(server.stats.protocolErrors.TlsHandshakeFailed, before + 2);
    assert.ok(logs.some((line) => line.reason === 'TlsHandshakeFailed'));
  });

  /** nbdcopy of random data from a file onto `name` and from `name` back into another file. */
  const copyRoundTrip = async (name: string, uri: string): Promise<void> => {
    const source = path.join(dir, `${name}-src.raw`);
    const data = randomBytes(8 * MiB);
    await writeFile(source, data);
    await runToolOk('nbdcopy', [source, uri]);
    assert.ok(registry.get(name).disk.equals(data), `${name} after nbdcopy onto it`);
    const target = path.join(dir, `${name}-out.raw`);
    await runToolOk('nbdcopy', [uri, target]);
    assert.ok((await readFile(target)).equals(data), `${name} copied back`);
  };

  it('nbdcopy copies a file onto a volume and back over PSK', async () => {
    await copyRoundTrip('psk-copy', pskUri('alice', 'psk-copy'));
  });

  it('nbdinfo and nbdcopy connect with a client certificate signed by the CA (X.509)', async () => {
    const { stdout } = await runToolOk('nbdinfo', ['--json', x509Uri('carol', 'x509-copy')]);
    assert.equal((JSON.parse(stdout) as { TLS: boolean }).TLS, true);
    await copyRoundTrip('x509-copy', x509Uri('carol', 'x509-copy'));
  });

  it('refuses a client certificate from a CA the server does not trust', async () => {
    const before = server.stats.protocolErrors.TlsHandshakeFailed;
    const r = await runTool('nbdinfo', [x509Uri('eve', 'x509-copy')]);
    assert.notEqual(r.code, 0);
    assert.equal(server.stats.protocolErrors.TlsHandshakeFailed, before + 1);
  });

  it('qemu-img convert and qemu-io work through --object tls-creds-psk and tls-creds-x509', async () => {
    for (const [name, object] of [
      ['psk-qemu', pskObject('alice')],
      ['x509-qemu', x509Object('carol')],
    ] as const) {
      const source = path.join(dir, `${name}.raw`);
      const data = randomBytes(8 * MiB);
      await writeFile(source, data);
      await runToolOk('qemu-img', ['convert', '-n', '--object', object, '-f', 'raw', source, '--target-image-opts', qemuTarget(name)]);
      assert.ok(registry.get(name).disk.equals(data), `${name} after qemu-img convert`);
      const io = await runToolOk('qemu-io', [
        '--object',
        object,
        '--image-opts',
        qemuTarget(name),
        '-c',
        'write -P 0x5c 4096 65536',
        '-c',
        'read -P 0x5c 4096 65536',
        '-c',
        'flush',
      ]);
      assert.match(io.stdout, /wrote 65536\/65536 bytes at offset 4096/);
      assert.match(io.stdout, /read 65536\/65536 bytes at offset 4096/);
      assert.doesNotMatch(io.stdout + io.stderr, /Pattern verification failed|error/i);
      assert.ok(
        registry
          .get(name)
          .disk.subarray(4096, 4096 + 65536)
          .every((byte) => byte === 0x5c),
      );
    }
  });

  it('nbdinfo --map and qemu-img map report holes and data over TLS', async () => {
    await runToolOk('qemu-io', [
      '--object',
      pskObject('alice'),
      '--image-opts',
      qemuTarget('sparse'),
      '-c',
      `write -P 0x11 ${4 * MiB} ${MiB}`,
    ]);
    const map = await runToolOk('nbdinfo', ['--map', '--json', pskUri('alice', 'sparse')]);
    const extents = (JSON.parse(map.stdout) as Array<{ offset: number; length: number; type: number }>).map((e) => [
      e.offset,
      e.length,
      e.type,
    ]);
    assert.deepEqual(extents, [
      [0, 4 * MiB, 3],
      [4 * MiB, MiB, 0],
      [5 * MiB, 59 * MiB, 3],
    ]);
    const qemu = await runToolOk('qemu-img', [
      'map',
      '--output=json',
      '--object',
      pskObject('alice'),
      '--image-opts',
      qemuTarget('sparse'),
    ]);
    const ranges = (JSON.parse(qemu.stdout) as Array<{ start: number; length: number; data: boolean; zero: boolean }>).map((e) => [
      e.start,
      e.length,
      e.data,
      e.zero,
    ]);
    assert.deepEqual(ranges, [
      [0, 4 * MiB, false, true],
      [4 * MiB, MiB, true, false],
      [5 * MiB, 59 * MiB, false, true],
    ]);
  });

  it('STARTTLS then garbage, or a stall in the TLS handshake, costs an honest client nothing', async () => {
    const honest = new HonestClient(
      await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'honest', tls: { psk: { identity: 'alice', key: pskKey('alice') } } }),
    );
    honest.start();
    await honest.advance(5);
    const failedBefore = server.stats.protocolErrors.TlsHandshakeFailed;
    const timeoutsBefore = server.stats.protocolErrors.HandshakeTimeout;

    const garbage = await Promise.all(Array.from({ length: 40 }, () => rawAfterStartTls(port)));
    for (const socket of garbage) socket.write(randomBytes(64 * 1024));
    await Promise.all(garbage.map(closed));
    await honest.advance(5);
    await waitFor(() => server.stats.protocolErrors.TlsHandshakeFailed === failedBefore + 40, 'every garbage handshake to be counted');

    // Half a ClientHello, then nothing: each is closed by the handshake timeout.
    const stalled = await Promise.all(Array.from({ length: 40 }, () => rawAfterStartTls(port)));
    const started = performance.now();
    for (const socket of stalled) socket.write(Buffer.from('1603010200010001fc0303', 'hex'));
    await honest.advance(5);
    await Promise.all(stalled.map(closed));
    const waited = performance.now() - started;
    // The timeout counts from accept, so a stalled client goes within HANDSHAKE_TIMEOUT_MS; generous upper bound for a loaded machine.
    assert.ok(waited < HANDSHAKE_TIMEOUT_MS + 5000, `stalled handshakes closed after ${waited} ms`);
    await waitFor(() => server.stats.protocolErrors.HandshakeTimeout === timeoutsBefore + 40, 'every stalled handshake to time out');
    await honest.advance(5);
    await honest.stop();
  });

  it('reloads keys and certificates without dropping connections; a bad file changes nothing', async () => {
    const carol = material.clientDirs.get('carol') ?? assert.fail('no carol');
    const carolTls = {
      ca: await readFile(material.caCert),
      cert: await readFile(path.join(carol, 'client-cert.pem')),
      key: await readFile(path.join(carol, 'client-key.pem')),
    };
    const serverFingerprint = async (): Promise<string | undefined> => {
      const client = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'honest', tls: carolTls });
      const fingerprint = client.tlsSocket?.getPeerCertificate().fingerprint256;
      await client.disconnect();
      return fingerprint;
    };
    const oldKey = pskKey('alice');
    const session = await NbdClient.connect({
      host: '127.0.0.1',
      port,
      exportName: 'honest',
      tls: { psk: { identity: 'alice', key: oldKey } },
    });
    const oldFingerprint = await serverFingerprint();
    assert.ok(oldFingerprint !== undefined);

    // New keys and a renewed server certificate dropped in place, as an operator would before SIGHUP.
    const rotated = path.join(dir, 'rotated.psk');
    const newKeys = await makePskFile(rotated, ['alice', 'bob']);
    await copyFile(rotated, material.pskFile);
    await renewServerCertificate(material);
    await security.reload();

    await session.write(0, Buffer.alloc(4096, 7));
    assert.deepEqual(await session.read(0, 4096), Buffer.alloc(4096, 7), 'an open TLS session keeps working across the reload');
    await assert.rejects(
      NbdClient.connect({ host: '127.0.0.1', port, exportName: 'honest', tls: { psk: { identity: 'alice', key: oldKey } } }),
    );
    const newAlice = { psk: { identity: 'alice', key: newKeys.get('alice') ?? assert.fail('no new key') } };
    await (await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'honest', tls: newAlice })).disconnect();
    const newFingerprint = await serverFingerprint();
    assert.notEqual(newFingerprint, oldFingerprint, 'new handshakes present the renewed certificate');

    await writeFile(material.pskFile, 'alice:not-hex\n');
    await assert.rejects(security.reload(), (err: unknown) => err instanceof ConfigError && /not hexadecimal/.test(err.message));
    await (await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'honest', tls: newAlice })).disconnect();
    assert.equal(await serverFingerprint(), newFingerprint, 'a failed reload keeps what was in use');
    await copyFile(rotated, material.pskFile);
    await session.disconnect();
  });

  it('leaves no connection or attachment behind', async () => {
    await waitFor(() => server.stats.connectionsActive === 0, 'every connection to close');
    for (const exp of registry.exports) assert.equal(exp.attached, 0, exp.name);
  });
});
