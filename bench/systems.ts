import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GATEWAY_NODE_FLAGS, gatewayAllocatorEnv } from '../shared/runtime-tuning.js';
import { type S3Server, type S3ServerKind, S3_SERVER_NAMES } from '../tests/helpers/s3-server.js';
import { makeTlsMaterial } from '../tests/helpers/tls-material.js';
import { fetchVolume } from './admin.js';
import type { BenchOptions, SystemName, Workload } from './options.js';
import { findFreePort } from '../tests/helpers/daemon-process.js';
import { type Daemon, portOpen, run, sleep, startDaemon, waitFor } from './proc.js';

/** The block devices under test: how to start each, reach it with fio, empty its cache and let it settle. */

const REPO = fileURLToPath(new URL('../', import.meta.url));
const HOLDFAST_BIN = path.join(REPO, 'bin', 'holdfast.js');
export const VOLUME = 'bench';
export const EXTENT_SIZE = 4 * 2 ** 20;
const START_TIMEOUT_MS = 30_000;
const SERVING_LINE = /^holdfast: serving \d+ volume\(s\) from .* on 127\.0\.0\.1:(\d+)$/m;
const ADMIN_LINE = /^ {2}admin API: (http:\/\/127\.0\.0\.1:\d+)/m;
const SETTLE_POLL_MS = 100;

/** `env`: fio's environment, where libnbd finds TLS certificates ($HOME/.pki/libnbd). */
export type FioTarget =
  { readonly engine: 'nbd'; readonly uri: string; readonly env?: NodeJS.ProcessEnv } | { readonly engine: 'libaio'; readonly file: string };

/** What the upload of a backlog measured: bytes PUT over the time uploads were actually running. */
export interface UploadDrain {
  readonly bytes: number;
  readonly activeSeconds: number;
  readonly mibPerSecond: number;
  /** The gateway's CPU (all threads, user and system) from the store's return until drained, where measured. */
  readonly gatewayCpuSeconds?: number;
  /** The S3 server's own PUT rate measured right after the drain, for as long as it took, where measured. */
  readonly serverPutMiBps?: number;
}

export interface BenchSystem {
  readonly name: SystemName;
  readonly description: string;
  readonly workloads: ReadonlySet<Workload>;
  /** Whether it keeps data in the S3 server (and so has a cache that a cold run empties first). */
  readonly storeBacked: boolean;
  target(): FioTarget;
  /** Holdfast's admin API: held requests and the journal backlog. */
  readonly adminUrl?: () => string;
  /** The server process whose memory and CPU are reported; changes on restart. */
  pid(): number;
  /** Empties the system's own cache so that the next reads come from the store. */
  dropCache(): Promise<void>;
  /** Waits until everything written is in the store; Holdfast also reports the upload rate. */
  settle(): Promise<UploadDrain | undefined>;
  stop(): Promise<void>;
}

export interface SystemContext {
  readonly opts: BenchOptions;
  readonly workDir: string;
  readonly s3: S3Server;
  /** The raw image qemu-nbd and nbdkit serve. */
  readonly rawFile: string;
}

const READS: readonly Workload[] = ['randread-warm', 'seqread'];
const WRITES: readonly Workload[] = ['randwrite', 'seqwrite', 'flush-heavy'];

/** What each system is, on the S3 server of the run. */
export function describeSystem(name: SystemName, s3: S3ServerKind): string {
  switch (name) {
    case 'holdfast-local':
      return 'Holdfast, local-directory store';
    case 'holdfast-s3':
      return `Holdfast, S3 store (${S3_SERVER_NAMES[s3]})`;
    case 'qemu-nbd':
      return 'qemu-nbd, raw file, default cache (writeback)';
    case 'qemu-nbd-wt':
      return 'qemu-nbd, raw file, --cache=writethrough (write rows)';
    case 'nbdkit':
      return 'nbdkit file plugin, same raw file';
    case 's3backer':
      return `s3backer FUSE file on ${S3_SERVER_NAMES[s3]} (fio libaio, O_DIRECT)`;
    case 'holdfast-tls':
      return 'Holdfast, local-directory store, NBD over TLS (X.509, --tls require)';
  }
}

/** The workloads whose TLS cost is measured: what per-request encryption weighs on most. */
const TLS_WORKLOADS: readonly Workload[] = ['randread-warm', 'randwrite'];

export async function startSystem(name: SystemName, ctx: SystemContext): Promise<BenchSystem> {
  switch (name) {
    case 'holdfast-local':
    case 'holdfast-s3':
      return startHoldfast(name, ctx);
    case 'holdfast-tls':
      return startHoldfastTls(ctx);
    case 'qemu-nbd':
    case 'qemu-nbd-wt':
    case 'nbdkit':
      return startRawServer(name, ctx);
    case 's3backer':
      return startS3backer(ctx);
  }
}

/** A gateway process the harness started: where it serves NBD and its admin API. */
export interface HoldfastProcess {
  readonly daemon: Daemon;
  readonly port: number;
  readonly adminUrl: string;
}

/**
 * `holdfast` with these arguments (a command, then its options) in the environment the harness measures;
 * `nodeFlags` go to Node after the deployed ones (a profiler's, say).
 */
export function holdfastCommand(
  args: readonly string[],
  s3: S3Server,
  nodeFlags: readonly string[] = [],
): { args: string[]; env: NodeJS.ProcessEnv } {
  const env: NodeJS.ProcessEnv = {};
  // A HOLDFAST_* setting in the caller's environment would change what is measured.
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HOLDFAST_')) env[k] = v;
  Object.assign(env, s3.env, gatewayAllocatorEnv());
  // Started as the container image starts it (shared/runtime-tuning.ts): what it uses is measured as deployed.
  return { args: [...GATEWAY_NODE_FLAGS, ...nodeFlags, HOLDFAST_BIN, ...args], env };
}

/** Node's flags for a CPU profile of a gateway (written into --cpu-prof's DIR when it stops); none without --cpu-prof. */
export function cpuProfileFlags(opts: Pick<BenchOptions, 'cpuProfileDir'>): string[] {
  return opts.cpuProfileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', opts.cpuProfileDir];
}

/** The arguments every benchmarked gateway takes: ephemeral ports, JSON warnings only. */
export const SERVE_ARGS: readonly string[] = [
  'serve',
  '--listen',
  '127.0.0.1:0',
  '--admin',
  '127.0.0.1:0',
  '--log-format',
  'json',
  // Warnings only: the bench measures the data path, not the logger.
  '--log-level',
  'warn',
];

/** Starts `holdfast serve` with `args` after SERVE_ARGS and waits until it serves. */
export async function launchHoldfast(
  name: string,
  args: readonly string[],
  s3: S3Server,
  nodeFlags: readonly string[] = [],
): Promise<HoldfastProcess> {
  const command = holdfastCommand([...SERVE_ARGS, ...args], s3, nodeFlags);
  const daemon = startDaemon(process.execPath, command.args, command.env);
  let port = 0;
  let adminUrl = '';
  await waitFor(
    `${name} serving`,
    () => {
      const serving = SERVING_LINE.exec(daemon.output());
      const admin = ADMIN_LINE.exec(daemon.output());
      if (serving === null || admin === null) return false;
      port = Number(serving[1]);
      adminUrl = admin[1] ?? '';
      return true;
    },
    START_TIMEOUT_MS,
    daemon,
  );
  return { daemon, port, adminUrl };
}

/**
 * holdfast-local's setup with TLS required, to measure what TLS costs. fio's nbd engine cannot be
 * given key files in its URI, so it trusts the gateway's CA the way libnbd does by default: from
 * $HOME/.pki/libnbd/ca-cert.pem, with HOME pointing into the work directory.
 */
async function startHoldfastTls(ctx: SystemContext): Promise<BenchSystem> {
  const dir = path.join(ctx.workDir, 'holdfast-tls');
  const material = await makeTlsMaterial(path.join(dir, 'tls'), { clients: [], pskIdentities: ['bench'] });
  const home = path.join(dir, 'fio-home');
  await mkdir(path.join(home, '.pki', 'libnbd'), { recursive: true });
  await copyFile(material.caCert, path.join(home, '.pki', 'libnbd', 'ca-cert.pem'));
  return startHoldfast('holdfast-tls', ctx, {
    args: ['--tls', 'require', '--tls-cert', material.serverCert, '--tls-key', material.serverKey],
    scheme: 'nbds',
    fioEnv: { ...process.env, HOME: home },
    workloads: TLS_WORKLOADS,
  });
}

interface HoldfastVariant {
  readonly args: readonly string[];
  readonly scheme: 'nbd' | 'nbds';
  readonly fioEnv?: NodeJS.ProcessEnv;
  readonly workloads?: readonly Workload[];
}

async function startHoldfast(
  name: 'holdfast-local' | 'holdfast-s3' | 'holdfast-tls',
  ctx: SystemContext,
  variant: HoldfastVariant = { args: [], scheme: 'nbd' },
): Promise<BenchSystem> {
  const { opts, s3 } = ctx;
  const dir = path.join(ctx.workDir, name);
  await mkdir(dir, { recursive: true });
  const store =
    name === 'holdfast-s3' ? ['--store', `s3://${s3.bucket}/holdfast`, '--s3-endpoint', s3.endpoint] : ['--store', path.join(dir, 'store')];
  const args = [
    ...store,
    '--journal-dir',
    path.join(dir, 'journal'),
    '--create-volume',
    `${VOLUME}=${opts.size}`,
    '--cache-size',
    String(opts.cacheSize),
    ...(opts.uploadDelay === undefined ? [] : ['--upload-delay', opts.uploadDelay]),
    ...variant.args,
  ];
  const launch = (): Promise<HoldfastProcess> => launchHoldfast(name, args, s3, cpuProfileFlags(opts));
  let current = await launch();

  return {
    name,
    description: describeSystem(name, s3.kind),
    workloads: new Set<Workload>(
      variant.workloads ?? [...READS, 'randread-cold', ...WRITES, ...(name === 'holdfast-s3' ? (['recovery'] as const) : [])],
    ),
    storeBacked: true,
    target: () => ({
      engine: 'nbd',
      uri: `${variant.scheme}://127.0.0.1:${current.port}/${VOLUME}`,
      ...(variant.fioEnv === undefined ? {} : { env: variant.fioEnv }),
    }),
    pid: () => current.daemon.pid,
    async dropCache(): Promise<void> {
      await current.daemon.stop('SIGTERM', 30_000);
      current = await launch();
    },
    settle: () => drainJournal(current.adminUrl, name, opts.size),
    adminUrl: () => current.adminUrl,
    stop: () => current.daemon.stop('SIGTERM', 30_000),
  };
}

/**
 * Polls the volume until no journal record and no dirty extent is left. The rate counts only the
 * time uploads were running: `--upload-delay` holds a young change back on purpose, and that wait
 * says nothing about how fast the backlog moves once it goes.
 */
export async function drainJournal(adminUrl: string, name: string, size: number, volume = VOLUME): Promise<UploadDrain> {
  const timeoutMs = 120_000 + (size / 2 ** 20) * 1_000;
  const deadline = Date.now() + timeoutMs;
  let last = await fetchVolume(adminUrl, volume);
  let lastAt = performance.now();
  const firstBytes = last.uploadBytes;
  let activeMs = 0;
  for (;;) {
    await sleep(SETTLE_POLL_MS);
    const v = await fetchVolume(adminUrl, volume);
    const now = performance.now();
    if (last.uploadsInFlight > 0 || v.uploadsInFlight > 0 || v.uploadBytes > last.uploadBytes) activeMs += now - lastAt;
    last = v;
    lastAt = now;
    if (v.backlogRecords === 0 && v.dirtyExtents === 0 && v.uploadsInFlight === 0) break;
    if (Date.now() > deadline) throw new Error(`${name}: journal backlog not drained within ${timeoutMs} ms`);
  }
  const bytes = last.uploadBytes - firstBytes;
  return { bytes, activeSeconds: activeMs / 1000, mibPerSecond: activeMs > 0 ? bytes / 2 ** 20 / (activeMs / 1000) : 0 };
}

async function startRawServer(name: 'qemu-nbd' | 'qemu-nbd-wt' | 'nbdkit', ctx: SystemContext): Promise<BenchSystem> {
  const port = await findFreePort();
  // qemu's image locking would keep the two qemu-nbd instances from sharing the one file.
  const image = `driver=raw,file.driver=file,file.filename=${ctx.rawFile},file.locking=off`;
  const [cmd, args] =
    name === 'nbdkit'
      ? ['nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), 'file', `file=${ctx.rawFile}`]]
      : [
          'qemu-nbd',
          [
            '--image-opts',
            image,
            '-x',
            VOLUME,
            '-b',
            '127.0.0.1',
            '-p',
            String(port),
            '--persistent',
            '--shared=16',
            ...(name === 'qemu-nbd-wt' ? ['--cache=writethrough'] : []),
          ],
        ];
  const daemon = startDaemon(cmd, args);
  await waitFor(`${name} listening on ${port}`, () => portOpen(port), START_TIMEOUT_MS, daemon);
  return {
    name,
    description: describeSystem(name, ctx.s3.kind),
    // The write-through instance is there for the rows where durability differs: the writes.
    workloads: new Set<Workload>(name === 'qemu-nbd-wt' ? WRITES : [...READS, ...WRITES]),
    storeBacked: false,
    target: () => ({ engine: 'nbd', uri: `nbd://127.0.0.1:${port}/${VOLUME}` }),
    pid: () => daemon.pid,
    dropCache: () => Promise.resolve(),
    settle: () => Promise.resolve(undefined),
    stop: () => daemon.stop(),
  };
}

async function mounted(mountPoint: string): Promise<boolean> {
  return (await readFile('/proc/mounts', 'utf8')).split('\n').some((line) => line.split(' ')[1] === mountPoint);
}

async function startS3backer(ctx: SystemContext): Promise<BenchSystem> {
  if (!existsSync('/dev/fuse')) throw new Error('FUSE is not available here (no /dev/fuse)');
  const { opts, s3 } = ctx;
  const mountPoint = path.join(ctx.workDir, 's3backer-mnt');
  await mkdir(mountPoint, { recursive: true });
  const args = [
    '-f',
    // No --region: it switches s3backer to virtual-host addressing, which a server on an IP cannot serve.
    `--baseURL=${s3.endpoint}/`,
    `--accessId=${s3.credentials.accessKeyId}`,
    `--accessKey=${s3.credentials.secretAccessKey}`,
    `--blockSize=${EXTENT_SIZE}`,
    `--size=${opts.size}`,
    '--prefix=s3backer/',
    // The same memory for cached blocks as Holdfast's extent cache.
    `--blockCacheSize=${Math.max(1, Math.floor(opts.cacheSize / EXTENT_SIZE))}`,
    s3.bucket,
    mountPoint,
  ];
  const launch = async (): Promise<Daemon> => {
    const daemon = startDaemon('s3backer', args);
    try {
      await waitFor('s3backer mounted', () => mounted(mountPoint), START_TIMEOUT_MS, daemon);
    } catch (err) {
      await daemon.stop('SIGKILL');
      throw new Error(
        `s3backer could not mount its FUSE file: ${daemon.output().trim().split('\n').slice(-3).join(' / ') || String(err)}`,
        {
          cause: err,
        },
      );
    }
    return daemon;
  };
  let daemon = await launch();
  const stats = path.join(mountPoint, 'stats');
  const unmount = async (): Promise<void> => {
    // SIGTERM makes s3backer write its dirty blocks and unmount.
    await daemon.stop('SIGTERM', 60_000);
    // Killed instead (it outlived the grace), it leaves a dead mount that the next launch cannot use.
    if (await mounted(mountPoint)) await run('umount', ['-l', mountPoint]);
  };
  return {
    name: 's3backer',
    description: describeSystem('s3backer', s3.kind),
    workloads: new Set<Workload>([...READS, 'randread-cold', ...WRITES]),
    storeBacked: true,
    target: () => ({ engine: 'libaio', file: path.join(mountPoint, 'file') }),
    pid: () => daemon.pid,
    async dropCache(): Promise<void> {
      await unmount();
      daemon = await launch();
    },
    async settle(): Promise<undefined> {
      await waitFor(
        's3backer dirty blocks written',
        async () => /^block_cache_dirty_ratio\s+0(?:\.0+)?$/m.test(await readFile(stats, 'utf8')),
        120_000 + (opts.size / 2 ** 20) * 1_000,
        daemon,
      );
      return undefined;
    },
    stop: unmount,
  };
}
