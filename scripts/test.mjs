#!/usr/bin/env node
// `npm test`: installs the Debian tools the suite drives (when missing), builds the bundle the
// integration tests run, type-checks, lints (`npm run lint`: ESLint and Prettier; `node scripts/test.mjs
// lint` runs only that), then runs the phases in order — unit and model tests first,
// real-peer integration tests after, the VM suite last — and prints one combined result line.
// `node scripts/test.mjs unit model` needs neither tools nor bundle: only the integration and vm
// phases drive Debian tools or run what the build writes, so only they install and build.
// Servers (Ceph's RADOS Gateway, gateways, peers) are started and stopped by the tests themselves.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { clearTimeout, setTimeout } from 'node:timers';
import { join } from 'node:path';
import { CEPH_TOOLS, installPackages, missingPackages, onPath } from './debian-tools.mjs';

/** Command the tests run → the Debian package that provides it. */
const TOOLS = {
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  'qemu-nbd': 'qemu-utils',
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdkit: 'nbdkit',
  fio: 'fio',
  'qemu-system-x86_64': 'qemu-system-x86',
  busybox: 'busybox-static',
  cpio: 'cpio',
  'mkfs.ext4': 'e2fsprogs',
  // docs/io-hang.md's example session, run by its test.
  curl: 'curl',
  ...CEPH_TOOLS,
  certtool: 'gnutls-bin',
  psktool: 'gnutls-bin',
  promtool: 'prometheus',
};

/** Files the tests need that no PATH lookup finds (the VM suite's guest kernel, jemalloc) → their Debian package. */
const FILES = [
  { dir: '/boot', prefix: 'vmlinuz-', suffix: '-cloud-amd64', pkg: 'linux-image-cloud-amd64' },
  // The allocator the image preloads (shared/runtime-tuning.ts), checked by tests/integration/allocator.test.ts.
  { dir: '/usr/lib/x86_64-linux-gnu', prefix: 'libjemalloc.so.2', suffix: '', pkg: 'libjemalloc2' },
];

// timeoutS bounds each test, so that a hang fails loudly with its test's name instead of running into
// CI's limit with no result at all; each is many times the slowest test of its phase on this machine.
// A test cancelled at its timeout may leave handles open, so that its file never ends: limitS bounds
// the whole phase, several times what it takes here (unit ~1 min, model ~1, integration ~12, vm ~5).
// Node's --test-force-exit would end such a file, but it loses verdicts: the child exits with its last
// results still in the pipe to the runner, which then reports fewer tests, and passes (nodejs/node#64833;
// seen here, three tests of one unit file missing from a green run).
const PHASES = [
  { name: 'unit', dir: 'tests/unit', needsTools: false, timeoutS: 120, limitS: 600 },
  { name: 'model', dir: 'tests/model', needsTools: false, timeoutS: 300, limitS: 900 },
  { name: 'integration', dir: 'tests/integration', needsTools: true, timeoutS: 900, limitS: 2400 },
  { name: 'vm', dir: 'tests/vm', needsTools: true, timeoutS: 1200, limitS: 1500 },
];

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

/** The phase's process group, while it runs: killed whole at its limit or when `npm test` is stopped. */
let phaseGroup;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (phaseGroup !== undefined) killGroup(phaseGroup);
    process.exit(1);
  });
}

function killGroup(pid) {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/**
 * Runs a phase's test runner in a process group of its own (with the servers its tests start), killed
 * whole after `limitS`; resolves with its exit status, 1 when it was killed.
 */
function runPhase(args, limitS) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: 'inherit', detached: true });
    phaseGroup = child.pid;
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      console.error(`test: the phase still runs after ${limitS} s (a test that timed out left handles open?): killing it`);
      killGroup(child.pid);
    }, limitS * 1000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      phaseGroup = undefined;
      resolve(killed ? 1 : (code ?? 1));
    });
  });
}

function present(file) {
  return existsSync(file.dir) && readdirSync(file.dir).some((name) => name.startsWith(file.prefix) && name.endsWith(file.suffix));
}

function ensureTools() {
  const missing = [...new Set([...missingPackages(TOOLS), ...FILES.filter((file) => !present(file)).map((file) => file.pkg)])];
  if (missing.length === 0) return;
  if (!installPackages(missing, (line) => console.log(`test: ${line}`))) {
    console.error(`test: could not install ${missing.join(' ')} (apt-get needs root and Debian's package mirror); the tests need them`);
    process.exit(1);
  }
  const still = [
    ...Object.keys(TOOLS).filter((cmd) => !onPath(cmd)),
    ...FILES.filter((file) => !present(file)).map((file) => `${file.dir}/${file.prefix}*${file.suffix}`),
  ];
  if (still.length > 0) {
    console.error(`test: still missing after apt-get: ${still.join(' ')}`);
    process.exit(1);
  }
}

function testFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true })
    .map(String)
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => join(dir, f));
}

const only = process.argv.slice(2);
if (PHASES.some((phase) => phase.needsTools && (only.length === 0 || only.includes(phase.name)))) {
  ensureTools();
  if (run('npm', ['run', '--silent', 'build']) !== 0) process.exit(1);
}
if (only.length === 0 && run('npx', ['tsc', '-p', 'tsconfig.json']) !== 0) {
  console.error('test: type check failed');
  process.exit(1);
}
if (only.length === 0 || only.includes('lint')) {
  if (run('npm', ['run', '--silent', 'lint']) !== 0) {
    console.error('test: lint failed (`npm run lint` lists the problems; `npx eslint --fix` and `npx prettier --write` fix many)');
    process.exit(1);
  }
  if (only.length === 1) process.exit(0);
}

const tapDir = mkdtempSync(join(tmpdir(), 'holdfast-tap-'));
let passed = 0;
let failed = 0;
let skipped = 0;
for (const phase of PHASES) {
  if (only.length > 0 && !only.includes(phase.name)) continue;
  const files = testFiles(phase.dir);
  if (files.length === 0) continue;
  console.log(`\n=== ${phase.name} tests (${files.length} files) ===`);
  const tap = join(tapDir, `${phase.name}.tap`);
  const status = await runPhase(
    [
      '--import',
      'tsx',
      '--test',
      '--test-concurrency=1',
      `--test-timeout=${phase.timeoutS * 1000}`,
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      ...files,
    ],
    phase.limitS,
  );
  const text = existsSync(tap) ? readFileSync(tap, 'utf8') : '';
  const count = (key) => Number(new RegExp(`^# ${key} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  passed += count('pass');
  failed += count('fail') + count('cancelled');
  skipped += count('skipped') + count('todo');
  if (status !== 0 && count('fail') + count('cancelled') === 0) failed++;
}
rmSync(tapDir, { recursive: true, force: true });
// Skips are counted as failures: a test that cannot run here must say so loudly, not pass.
console.log(`\ntests: ${passed} passed, ${failed + skipped} failed${skipped > 0 ? ` (${skipped} skipped)` : ''}`);
process.exit(failed + skipped > 0 || passed === 0 ? 1 : 0);
