/**
 * The README's first command as a new user runs it: `npm start`, through the npm on PATH (which may
 * run on an older system Node), stopped with a signal to npm. The gateway must run on the project's
 * Node line, log only JSON lines (no AWS SDK version warning in the middle of them) and stop with npm.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { NODE_MAJOR } from '../../shared/node-runtime.js';
import { reapOnExit } from '../helpers/child-reaper.js';
import { type Stores, type StoreTarget, startStores } from '../helpers/gateway-process.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
/** Bounds a start or a stop so that a hung one fails the test instead of the run; not a timing assertion. */
const LIMIT_MS = 60_000;

interface NpmStartRun {
  /** The gateway's own pid, from its log lines: npm runs it in a child process. */
  readonly gatewayPid: number;
  readonly npmPid: number;
  stderr(): string;
}

async function npmStart(store: StoreTarget, dataDir: string): Promise<NpmStartRun> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HOLDFAST_') && !k.startsWith('npm_')) env[k] = v;
  Object.assign(env, store.env);
  const args = [
    'start',
    '--',
    '--data-dir',
    dataDir,
    '--listen',
    '127.0.0.1:0',
    '--admin',
    '127.0.0.1:0',
    '--log-format',
    'json',
    ...store.args,
  ];
  const npm = spawn('npm', args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const untrack = reapOnExit(npm);
  let stdout = '';
  let stderr = '';
  npm.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  npm.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  npm.once('exit', untrack);
  const deadline = Date.now() + LIMIT_MS;
  while (!/^holdfast: serving /m.test(stdout)) {
    if (npm.exitCode !== null || Date.now() > deadline) {
      npm.kill('SIGKILL');
      assert.fail(`npm start did not serve\nstdout:\n${stdout}\nstderr:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const pids = new Set(stderr.split('\n').flatMap((line) => (line.startsWith('{') ? [(JSON.parse(line) as { pid: number }).pid] : [])));
  assert.equal(pids.size, 1, `one gateway process logged\n${stderr}`);
  const gatewayPid = [...pids][0]!;
  assert.notEqual(gatewayPid, npm.pid);
  return { gatewayPid, npmPid: npm.pid!, stderr: () => stderr };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, what: string): Promise<void> {
  const deadline = Date.now() + LIMIT_MS;
  while (alive(pid)) {
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      assert.fail(`${what} (pid ${pid}) still ran ${LIMIT_MS} ms after npm got its signal`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('npm start', () => {
  let stores: Stores;
  before(async () => {
    stores = await startStores('s3');
  });
  after(async () => {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unassigned when setup failed before it
    await stores?.dispose();
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`serves on S3 with JSON-only logs on Node ${NODE_MAJOR}, and ${signal} to npm stops the gateway cleanly`, async () => {
      const dataDir = await stores.tempDir('npm-start');
      const run = await npmStart(await stores.fresh(), dataDir);
      try {
        process.kill(run.npmPid, signal);
        await waitGone(run.npmPid, 'npm');
        await waitGone(run.gatewayPid, 'the gateway');
      } finally {
        // A gateway orphaned by a failure here would hold its pipes and this test file open.
        if (alive(run.gatewayPid)) process.kill(run.gatewayPid, 'SIGKILL');
      }
      const lines = run
        .stderr()
        .split('\n')
        .filter((l) => l !== '' && !l.startsWith('> '));
      const logs = lines.map((line) => {
        assert.ok(line.startsWith('{'), `a log line that is not JSON: ${line}\n${run.stderr()}`);
        return JSON.parse(line) as { msg: string; signal?: string };
      });
      assert.ok(!run.stderr().includes('NodeVersionSupportWarning'), 'no AWS SDK Node version warning');
      assert.ok(
        logs.some((l) => l.msg === 'created volume'),
        'the demo volume was created in S3',
      );
      assert.ok(
        logs.some((l) => l.msg.startsWith('shutting down') && l.signal === signal),
        `the gateway got ${signal}`,
      );
      assert.equal(logs.at(-1)?.msg, 'stopped', 'the gateway stopped in order (journals synced)');
      await rm(dataDir, { recursive: true, force: true });
    });
  }
});
