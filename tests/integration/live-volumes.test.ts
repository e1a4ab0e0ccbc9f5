/**
 * Volumes created, resized and deleted while the gateway serves (issue 13, "live volumes"), on the
 * real S3 server: a new volume is offered within two seconds of its creation, a resize is seen by the
 * next connection, and deleting a volume a client uses is refused unless forced — then only that
 * volume's clients are disconnected, and a client of another volume goes on untouched.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { volumeStatus } from '../helpers/admin-api.js';
import { type CliResult, runCli } from '../helpers/cli-process.js';
import { type GatewayProcess, type Stores, type StoreTarget, startGateway, startStores } from '../helpers/gateway-process.js';
import { NbdClient, NbdConnectionError } from '../helpers/nbd-client.js';
import { runToolOk } from '../helpers/run-tool.js';

const MiB = 2 ** 20;
/**
 * The gateway looks for new volumes every second, so one is offered within 2 s; the test allows 3 s
 * more for nbdinfo and the CLI themselves to start on a loaded machine (the figure is printed).
 */
const OFFERED_WITHIN_MS = 2_000 + 3_000;

function assertExit(r: CliResult, code: number, what: string): void {
  assert.equal(r.code, code, `${what}: exit ${r.code}, expected ${code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
}

function pattern(seed: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) b.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return b;
}

describe('live volumes (S3 store)', () => {
  let stores: Stores;
  let store: StoreTarget;
  let work = '';
  let started: GatewayProcess | undefined;
  const gateway = (): GatewayProcess => {
    assert.ok(started !== undefined, 'the gateway did not start');
    return started;
  };
  const cli = (...args: string[]) =>
    runCli([...args, ...store.args, '--journal-dir', path.join(work, 'cli-journal')], { cwd: work, env: store.env });
  const exportsListed = async (): Promise<string[]> => {
    const out = JSON.parse((await runToolOk('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${gateway().port}`])).stdout) as {
      exports: Array<{ 'export-name': string }>;
    };
    return out.exports.map((e) => e['export-name']).sort();
  };
  const connect = (name: string) => NbdClient.connect({ host: '127.0.0.1', port: gateway().port, exportName: name });

  before(async () => {
    stores = await startStores('s3');
    store = await stores.fresh();
    work = await stores.tempDir('work');
    started = await startGateway({
      store,
      journalDir: path.join(work, 'journal'),
      createVolume: `first=${32 * MiB}`,
      args: ['--extent-size', '1MiB', '--lease-ttl', '6s', '--gc-interval', '0'],
    });
  });
  after(async () => {
    await started?.kill('SIGKILL');
    await stores.dispose();
  });

  it(
    'a volume created while the gateway serves is offered within 2 s, without disturbing a client of another volume',
    { timeout: 120_000 },
    async () => {
      const other = await connect('first');
      const busy = pattern(1, MiB);
      await other.write(0, busy);
      assertExit(await cli('volume', 'create', 'second', '--size', '16MiB'), 0, 'volume create');
      const created = performance.now();
      let listed = await exportsListed();
      while (!listed.includes('second')) {
        assert.ok(
          performance.now() - created < OFFERED_WITHIN_MS,
          `second not offered ${OFFERED_WITHIN_MS} ms after its creation (exports: ${listed.join(', ')})`,
        );
        await delay(50);
        listed = await exportsListed();
      }
      process.stdout.write(`# new volume offered ${Math.round(performance.now() - created)} ms after \`volume create\` returned\n`);
      assert.deepEqual(listed, ['first', 'second']);
      const client = await connect('second');
      assert.equal(client.size, 16 * MiB);
      await client.write(MiB, pattern(2, 64 * 1024));
      assert.deepEqual(await client.read(MiB, 64 * 1024), pattern(2, 64 * 1024));
      await client.disconnect();
      assert.deepEqual(await other.read(0, MiB), busy, "the other volume's client is undisturbed");
      await other.disconnect();
    },
  );

  it('a volume grown while a client writes keeps its data; the next connection sees the new size', { timeout: 120_000 }, async () => {
    const attached = await connect('second');
    const tail = pattern(3, 64 * 1024);
    await attached.write(16 * MiB - tail.length, tail);
    assertExit(await cli('volume', 'resize', 'second', '48MiB'), 0, 'grow');
    // The connection made before keeps working at the size it was told.
    assert.equal(attached.size, 16 * MiB);
    assert.deepEqual(await attached.read(16 * MiB - tail.length, tail.length), tail);
    await attached.disconnect();
    const after = await connect('second');
    assert.equal(after.size, 48 * MiB);
    assert.deepEqual(await after.read(16 * MiB - tail.length, tail.length), tail, 'data before the old end is kept');
    assert.ok((await after.read(16 * MiB, MiB)).equals(Buffer.alloc(MiB)), 'the new space reads as zeros');
    await after.write(40 * MiB, pattern(4, 4096));
    assert.equal((await volumeStatus(gateway().adminUrl, 'second')).size, 48 * MiB, 'the admin API reports the new size');
    await after.disconnect();
  });

  it('shrinking asks for confirmation, waits for the clients to go, and frees the tail for good', { timeout: 120_000 }, async () => {
    const refusedNoYes = await cli('volume', 'resize', 'second', '8MiB');
    assertExit(refusedNoYes, 2, 'shrink without --shrink');
    assert.match(refusedNoYes.stderr, /--shrink/);
    const attached = await connect('second');
    const busy = await cli('volume', 'resize', 'second', '8MiB', '--shrink', '--yes');
    assertExit(busy, 3, 'shrink with a client attached');
    assert.match(busy.stderr, /client/);
    await attached.disconnect();
    await clientsGone('second');
    assertExit(await cli('volume', 'resize', 'second', '8MiB', '--shrink', '--yes'), 0, 'shrink');
    let client = await connect('second');
    assert.equal(client.size, 8 * MiB);
    assert.deepEqual(await client.read(MiB, 64 * 1024), pattern(2, 64 * 1024), 'data inside the new size is kept');
    await client.disconnect();
    assertExit(await cli('volume', 'resize', 'second', '48MiB'), 0, 'grow again');
    client = await connect('second');
    assert.ok((await client.read(16 * MiB - 64 * 1024, 64 * 1024)).equals(Buffer.alloc(64 * 1024)), 'what was cut off does not come back');
    assert.ok((await client.read(40 * MiB, 4096)).equals(Buffer.alloc(4096)), 'what was cut off does not come back');
    await client.disconnect();
  });

  it('deleting a volume a client uses is refused; --force disconnects that client only', { timeout: 120_000 }, async () => {
    const victim = await connect('second');
    const bystander = await connect('first');
    const refused = await cli('volume', 'delete', 'second');
    assertExit(refused, 3, 'delete with a client attached');
    assert.match(refused.stderr, /client.*attached/);
    assert.deepEqual(await exportsListed(), ['first', 'second']);
    assertExit(await cli('volume', 'delete', 'second', '--force'), 0, 'delete --force');
    await assert.rejects(victim.read(0, 4096), NbdConnectionError, "the deleted volume's client is disconnected");
    // The bystander keeps reading and writing as if nothing happened.
    const data = pattern(5, 256 * 1024);
    await bystander.write(2 * MiB, data);
    assert.deepEqual(await bystander.read(2 * MiB, data.length), data);
    assert.deepEqual(await exportsListed(), ['first']);
    assertExit(await cli('volume', 'inspect', 'second'), 4, 'inspect a deleted volume');
    await bystander.disconnect();
  });

  it(
    'deleting a served volume nobody uses needs no --force, and a new volume of that name starts empty',
    { timeout: 120_000 },
    async () => {
      assertExit(await cli('volume', 'create', 'third', '--size', '8MiB'), 0, 'create');
      const client = await waitForExport('third');
      await client.write(0, pattern(6, 4096));
      await client.disconnect();
      await clientsGone('third');
      assertExit(await cli('volume', 'delete', 'third'), 0, 'delete (no client attached)');
      assertExit(await cli('volume', 'create', 'third', '--size', '8MiB'), 0, 'create again');
      const again = await waitForExport('third');
      assert.ok((await again.read(0, 4096)).equals(Buffer.alloc(4096)), "the new volume does not see the old one's data");
      await again.disconnect();
    },
  );

  /** A client's disconnect() returns when its socket is closed; the gateway counts it gone a moment later. */
  async function clientsGone(name: string): Promise<void> {
    const deadline = performance.now() + 10_000;
    while ((await volumeStatus(gateway().adminUrl, name)).clients > 0) {
      assert.ok(performance.now() < deadline, `the gateway still counts clients of ${name} 10 s after they disconnected`);
      await delay(20);
    }
  }

  async function waitForExport(name: string): Promise<NbdClient> {
    const deadline = performance.now() + OFFERED_WITHIN_MS * 2;
    for (;;) {
      try {
        return await connect(name);
      } catch (err) {
        if (performance.now() > deadline) throw err;
        await delay(100);
      }
    }
  }
});
