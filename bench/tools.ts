import { spawnSync } from 'node:child_process';
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

/**
 * Installs the Debian packages of missing tools (one `apt-get update`, then only what is missing),
 * like `npm test` does, and returns why each tool that is still missing is missing.
 */
export function ensureTools(log: (line: string) => void): Map<string, string> {
  const missing = Object.keys(TOOLS).filter((cmd) => !onPath(cmd));
  const why = new Map<string, string>();
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((cmd) => TOOLS[cmd]!))];
    log(`bench: installing missing Debian packages: ${packages.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const update = spawnSync('apt-get', ['update', '-qq'], { env, encoding: 'utf8' });
    // Each package alone, so that one the mirror lacks does not keep the others out.
    for (const pkg of packages) {
      const r = update.status === 0 ? spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', pkg], { env, encoding: 'utf8' }) : update;
      if (r.status !== 0) {
        const reason = `apt-get ${update.status === 0 ? `install ${pkg}` : 'update'} failed: ${(r.stderr || r.error?.message || '').trim().split('\n').pop() ?? ''}`;
        for (const cmd of missing) if (TOOLS[cmd] === pkg) why.set(cmd, reason);
      }
    }
  }
  for (const cmd of missing) if (!why.has(cmd) && !onPath(cmd)) why.set(cmd, `${cmd} is not on PATH after installing ${TOOLS[cmd]}`);
  for (const cmd of REQUIRED) {
    const reason = why.get(cmd);
    if (reason !== undefined) throw new Error(`bench: ${cmd} is required: ${reason}`);
  }
  return why;
}
