import { valueOf } from '../shared/checked.js';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { JEMALLOC_LIBRARY } from '../shared/runtime-tuning.js';
import { CEPH_TOOLS } from '../scripts/debian-tools.mjs';
import type { S3ServerKind } from '../tests/helpers/s3-server.js';
import { onPath } from './proc.js';

/** Command the harness runs → the Debian package that provides it. */
const TOOLS: Readonly<Record<string, string>> = {
  fio: 'fio',
  'qemu-nbd': 'qemu-utils',
  nbdkit: 'nbdkit',
  s3backer: 's3backer',
  certtool: 'gnutls-bin',
};

/** Tools without which nothing can be measured; the others only take their system out of the run. */
const REQUIRED = ['fio'];

/** What `bench:sustained` runs besides the S3 server, every tool of it required. */
export const SUSTAINED_TOOLS: Readonly<Record<string, string>> = { fio: 'fio' };
/** What `bench:sparse-copy` runs besides the S3 server. */
export const SPARSE_COPY_TOOLS: Readonly<Record<string, string>> = { nbdcopy: 'libnbd-bin' };

/**
 * The tools of the run (the full run's by default, `only` for a single workload, all of them required
 * then): Ceph's as well when the S3 server is the RADOS Gateway, which every S3 row needs.
 */
function toolsFor(
  s3Server: S3ServerKind,
  only: Readonly<Record<string, string>> | undefined,
): { tools: Readonly<Record<string, string>>; required: readonly string[] } {
  const tools = only ?? TOOLS;
  const required = only === undefined ? REQUIRED : Object.keys(only);
  if (s3Server !== 'rgw') return { tools, required };
  return { tools: { ...tools, ...CEPH_TOOLS }, required: [...required, ...Object.keys(CEPH_TOOLS)] };
}

/**
 * Installs the Debian packages of missing tools (one `apt-get update`, then only what is missing),
 * like `npm test` does, and returns why each tool that is still missing is missing.
 */
export function ensureTools(
  log: (line: string) => void,
  s3Server: S3ServerKind,
  only?: Readonly<Record<string, string>>,
): Map<string, string> {
  const { tools, required } = toolsFor(s3Server, only);
  const missing = Object.keys(tools).filter((cmd) => !onPath(cmd));
  const why = new Map<string, string>();
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((cmd) => valueOf(tools, cmd)))];
    log(`bench: installing missing Debian packages: ${packages.join(' ')}`);
    const failed = aptInstall(packages);
    for (const cmd of missing) {
      const reason = failed.get(valueOf(tools, cmd));
      if (reason !== undefined) why.set(cmd, reason);
    }
  }
  for (const cmd of missing) if (!why.has(cmd) && !onPath(cmd)) why.set(cmd, `${cmd} is not on PATH after installing ${tools[cmd]}`);
  for (const cmd of required) {
    const reason = why.get(cmd);
    if (reason !== undefined) throw new Error(`bench: ${cmd} is required: ${reason}`);
  }
  return why;
}

/**
 * One `apt-get update`, then each package alone, so that one the mirror lacks does not keep the others
 * out; returns why each package that failed did.
 */
function aptInstall(packages: readonly string[]): Map<string, string> {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = spawnSync('apt-get', ['update', '-qq'], { env, encoding: 'utf8' });
  const failed = new Map<string, string>();
  for (const pkg of packages) {
    const r =
      update.status === 0
        ? spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', pkg], { env, encoding: 'utf8' })
        : update;
    if (r.status !== 0)
      failed.set(
        pkg,
        `apt-get ${update.status === 0 ? `install ${pkg}` : 'update'} failed: ${(r.stderr || r.error?.message || '').trim().split('\n').pop() ?? ''}`,
      );
  }
  return failed;
}

/**
 * Installs jemalloc if it is missing: the gateway is measured with the allocator its image preloads
 * (shared/runtime-tuning.ts), so a run without it would not measure what is deployed.
 */
export function ensureAllocator(log: (line: string) => void): void {
  if (existsSync(JEMALLOC_LIBRARY)) return;
  log('bench: installing missing Debian package: libjemalloc2');
  const reason = aptInstall(['libjemalloc2']).get('libjemalloc2') ?? 'the package does not provide it';
  if (!existsSync(JEMALLOC_LIBRARY))
    throw new Error(`bench: ${JEMALLOC_LIBRARY} is required (the allocator the gateway is deployed with): ${reason}`);
}
