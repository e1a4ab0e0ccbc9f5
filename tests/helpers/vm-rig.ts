import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { HoldfastEventSchema, type HoldfastEvent } from '../../shared/events.js';
import { runCli } from './cli-process.js';
import { type GatewayProcess, type StoreTarget, startGateway } from './gateway-process.js';
import { type S3Server, startS3Server } from './s3-server.js';
import { type Guest, type GuestSetup, type GuestTls, bootGuest, requireTool } from './vm-guest.js';

/**
 * One VM acceptance scenario's world: its own S3 server (Ceph's RADOS Gateway, so that an outage touches nobody
 * else), a volume holding a fresh ext4 filesystem, a gateway serving it, and the guest on it.
 */

const MiB = 1024 * 1024;
export const VOLUME = 'guest';
const VOLUME_SIZE = 128 * MiB;
/**
 * Small extents and a cache of two of them: the guest's cold reads of a 1 MiB seed file cannot be
 * answered from the cache, so they go to the store, where an outage holds them.
 */
const EXTENT_SIZE = '1MiB';
const CACHE_SIZE = '2MiB';
const SEED_FILES = 12;
const SEED_FILE_SIZE = 1 * MiB;

export interface RigOptions {
  readonly setup: GuestSetup;
  /** `--hang-timeout` of the gateway. */
  readonly hangTimeout: string;
  /** Serve with TLS: the gateway's TLS flags and the guest's QEMU credentials. */
  readonly tls?: { readonly gatewayArgs: readonly string[]; readonly guest: GuestTls };
}

export interface Rig {
  readonly s3: S3Server;
  /** The store settings a CLI command needs to reach the volume. */
  readonly store: StoreTarget;
  /** A directory of the rig's own, removed with it. */
  readonly dir: string;
  readonly guest: Guest;
  /** The gateway serving now (replaced by restartGateway). */
  readonly gateway: GatewayProcess;
  /** Guest path → sha256 of every file the host put on the filesystem. */
  readonly seed: ReadonlyMap<string, string>;
  /** SIGKILLs the gateway. */
  killGateway(): Promise<void>;
  /** Starts a gateway again on the same port and journal, as a restarted task would. */
  restartGateway(): Promise<void>;
  /** The events of every gateway of this scenario so far, in order. */
  events(): HoldfastEvent[];
  dispose(): Promise<void>;
}

/** Runs a command to completion, failing with its output when it fails. */
function runTool(cmd: string, args: readonly string[]): Promise<void> {
  requireTool(cmd);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')} exited with ${code ?? signal}:\n${output}`));
    });
  });
}

/**
 * An ext4 image with seed files of random content, imported as the volume. `-e remount-ro` is what
 * cloud images put in their fstab: an error makes ext4 read-only, the failure Holdfast prevents.
 * Lazy init is off so that no background zeroing writes to the disk while the test runs.
 */
async function makeVolume(dir: string, store: StoreTarget, journalDir: string): Promise<Map<string, string>> {
  const content = path.join(dir, 'content');
  await mkdir(path.join(content, 'seed'), { recursive: true });
  const seed = new Map<string, string>();
  for (let i = 0; i < SEED_FILES; i++) {
    const name = `s${String(i).padStart(2, '0')}`;
    const data = randomBytes(SEED_FILE_SIZE);
    await writeFile(path.join(content, 'seed', name), data);
    seed.set(`/mnt/seed/${name}`, createHash('sha256').update(data).digest('hex'));
  }
  const image = path.join(dir, 'disk.img');
  await writeFile(image, '');
  await truncate(image, VOLUME_SIZE);
  await runTool('mkfs.ext4', [
    '-q',
    '-F',
    '-b',
    '4096',
    '-e',
    'remount-ro',
    '-E',
    'lazy_itable_init=0,lazy_journal_init=0',
    '-d',
    content,
    image,
  ]);
  const imported = await runCli(['import', image, VOLUME, '--extent-size', EXTENT_SIZE, ...store.args, '--journal-dir', journalDir], {
    cwd: dir,
    env: store.env,
  });
  if (imported.code !== 0)
    throw new Error(`holdfast import exited with ${imported.code ?? imported.signal}:\n${imported.stdout}${imported.stderr}`);
  await rm(image);
  await rm(content, { recursive: true });
  return seed;
}

export async function startRig(opts: RigOptions): Promise<Rig> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-vm-'));
  const cleanups: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  const dispose = async (): Promise<void> => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  };
  try {
    const s3 = await startS3Server({ dir: path.join(dir, 's3') });
    cleanups.push(() => s3.close());
    const store: StoreTarget = { kind: 's3', args: ['--store', `s3://${s3.bucket}/vm`, '--s3-endpoint', s3.endpoint], env: s3.env };
    const journalDir = path.join(dir, 'journal');
    const seed = await makeVolume(dir, store, journalDir);

    const gateways: GatewayProcess[] = [];
    const serve = async (listen: string): Promise<GatewayProcess> => {
      const gateway = await startGateway({
        store,
        journalDir,
        createVolume: '',
        args: [
          '--listen',
          listen,
          '--cache-size',
          CACHE_SIZE,
          '--upload-delay',
          '0',
          '--hang-timeout',
          opts.hangTimeout,
          ...(opts.tls?.gatewayArgs ?? []),
        ],
      });
      gateways.push(gateway);
      cleanups.push(() => gateway.kill());
      return gateway;
    };
    const first = await serve('127.0.0.1:0');
    const guest = bootGuest({ setup: opts.setup, nbdPort: first.port, exportName: VOLUME, tls: opts.tls?.guest });
    cleanups.push(() => guest.kill());

    return {
      s3,
      store,
      dir,
      guest,
      get gateway() {
        return gateways.at(-1)!;
      },
      seed,
      async killGateway() {
        await gateways.at(-1)!.kill('SIGKILL');
      },
      async restartGateway() {
        await serve(`127.0.0.1:${first.port}`);
      },
      events: () =>
        gateways.flatMap((g) =>
          g.logs.flatMap((line) => {
            const parsed = HoldfastEventSchema.safeParse(line.event);
            return parsed.success ? [parsed.data] : [];
          }),
        ),
      dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}
