import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { reapOnExit } from './child-reaper.js';
import { startS3Server } from './s3-server.js';

/**
 * The gateway as users run it: `node bin/holdfast.js serve` in a child process, so that tests can
 * signal it (SIGTERM, SIGKILL) and point real NBD clients (qemu, nbdkit tools, fio) at it.
 */

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.join(REPO, 'bin', 'holdfast.js');
const BUNDLE = path.join(REPO, 'dist', 'holdfast.js');
const SERVE_TIMEOUT_MS = 20_000;
const SERVING_LINE = /^holdfast: serving (\d+) volume\(s\) from .* on 127\.0\.0\.1:(\d+)$/m;
const ADMIN_LINE = /^ {2}admin API: (http:\/\/127\.0\.0\.1:\d+)/m;

export type StoreKind = 'local' | 's3';
export const STORE_KINDS: readonly StoreKind[] = ['local', 's3'];

/** Where a gateway keeps its extents: the `serve` flags and environment that name one store. */
export interface StoreTarget {
  readonly kind: StoreKind;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
}

/** One line the gateway logged (pino JSON on stderr). */
export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

export interface GatewayOptions {
  readonly store: StoreTarget;
  readonly journalDir: string;
  /** `NAME=SIZE`, or '' to create nothing. */
  readonly createVolume: string;
  /** Further `serve` flags, e.g. ['--cache-size', '8MiB', '--upload-delay', '0']. */
  readonly args?: readonly string[];
  /** Extra environment, e.g. HOLDFAST_FAILPOINTS (test-only failure injection). */
  readonly env?: Readonly<Record<string, string>>;
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface GatewayProcess {
  readonly port: number;
  /** `http://127.0.0.1:PORT` of the admin API (on a free port of its own). */
  readonly adminUrl: string;
  readonly pid: number;
  /** `nbd://127.0.0.1:PORT/NAME`. */
  uri(name: string): string;
  readonly logs: readonly LogLine[];
  /** stderr lines that are not JSON (a crash trace, the CLI's own error line). */
  readonly otherStderr: readonly string[];
  /** Waiting on it keeps the test process alive until the gateway is gone. */
  readonly exited: Promise<ExitStatus>;
  /** Sends `signal` (default SIGKILL) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<ExitStatus>;
  /** SIGTERM, the orderly shutdown; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** `serve` failed before it printed its serving line; what it said is in the message and fields. */
export class GatewayStartError extends Error {
  constructor(
    message: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${message}; stderr:\n${stderr}`);
    this.name = new.target.name;
  }
}

let bundleChecked: Promise<void> | undefined;

/** Tests of a stale bundle would pass or fail for code that is no longer there. */
function checkBundle(): Promise<void> {
  bundleChecked ??= (async () => {
    const built = await stat(BUNDLE).catch(() => undefined);
    if (built === undefined) throw new Error(`${BUNDLE} is missing: run \`npm run build\` before the integration tests`);
    for (const dir of ['gateway', 'shared']) {
      for (const entry of await readdir(path.join(REPO, dir), { recursive: true, withFileTypes: true })) {
        if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
        const source = path.join(entry.parentPath, entry.name);
        if ((await stat(source)).mtimeMs > built.mtimeMs) {
          throw new Error(`${BUNDLE} is older than ${path.relative(REPO, source)}: run \`npm run build\``);
        }
      }
    }
  })();
  return bundleChecked;
}

function childEnv(store: StoreTarget): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  // Settings in the developer's environment would silently change what the test runs.
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HOLDFAST_')) env[k] = v;
  return { ...env, ...store.env };
}

export async function startGateway(opts: GatewayOptions): Promise<GatewayProcess> {
  await checkBundle();
  const args = [
    BIN,
    'serve',
    '--listen',
    '127.0.0.1:0',
    '--admin',
    '127.0.0.1:0',
    '--log-format',
    'json',
    '--log-level',
    'info',
    ...opts.store.args,
    '--journal-dir',
    opts.journalDir,
    '--create-volume',
    opts.createVolume,
    ...(opts.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    cwd: REPO,
    env: { ...childEnv(opts.store), ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const untrack = reapOnExit(child);
  const exitedRaw = new Promise<ExitStatus>((resolve) => {
    // 'close', not 'exit': by then stderr has been read to its end, so the logs are complete.
    child.once('close', (code, signal) => {
      untrack();
      resolve({ code, signal });
    });
  });

  const logs: LogLine[] = [];
  const otherStderr: string[] = [];
  let stderrText = '';
  let partial = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderrText += chunk;
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line === '') continue;
      const parsed = parseLogLine(line);
      if (parsed === undefined) otherStderr.push(line);
      else logs.push(parsed);
    }
  });

  const { port, adminUrl } = await new Promise<{ port: number; adminUrl: string }>((resolve, reject) => {
    let stdout = '';
    let settled = false;
    const onData = (chunk: string): void => {
      stdout += chunk;
      const m = SERVING_LINE.exec(stdout);
      const a = ADMIN_LINE.exec(stdout);
      if (m === null || a === null) return;
      cleanup();
      resolve({ port: Number(m[2]), adminUrl: a[1]! });
    };
    const fail = (why: string, code: number | null): void => {
      if (settled) return;
      cleanup();
      child.kill('SIGKILL');
      reject(new GatewayStartError(`holdfast serve ${why}`, code, stderrText));
    };
    const timer = setTimeout(() => {
      fail(`did not serve within ${SERVE_TIMEOUT_MS} ms`, null);
    }, SERVE_TIMEOUT_MS);
    const onError = (err: Error): void => {
      fail(`could not be spawned (${err.message})`, null);
    };
    const cleanup = (): void => {
      settled = true;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.off('error', onError);
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.once('error', onError);
    void exitedRaw.then(({ code, signal }) => {
      fail(`exited before serving (code ${code}, signal ${signal})`, code);
    });
  });

  // The pipes must keep draining, or the gateway blocks on its next log line.
  child.stdout.resume();
  // Only waiting for the exit holds the test process; a forgotten gateway is killed by the exit hook.
  child.unref();
  for (const stream of [child.stdout, child.stderr]) if (stream instanceof Socket) stream.unref();

  const holdAlive = (): void => {
    child.ref();
    for (const stream of [child.stdout, child.stderr]) if (stream instanceof Socket) stream.ref();
  };
  const kill = (signal: NodeJS.Signals = 'SIGKILL'): Promise<ExitStatus> => {
    holdAlive();
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exitedRaw;
  };

  return {
    port,
    adminUrl,
    pid: child.pid ?? -1,
    uri: (name) => `nbd://127.0.0.1:${port}/${name}`,
    logs,
    otherStderr,
    get exited(): Promise<ExitStatus> {
      holdAlive();
      return exitedRaw;
    },
    kill,
    stop: async () => (await kill('SIGTERM')).code,
  };
}

function parseLogLine(line: string): LogLine | undefined {
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value !== 'object' || value === null) return undefined;
    const record = value as Record<string, unknown>;
    if (typeof record.level !== 'number' || typeof record.msg !== 'string') return undefined;
    return { ...record, level: record.level, msg: record.msg };
  } catch {
    return undefined;
  }
}

/** Polls until the volume's journal holds no segment: every acknowledged write is in the store. */
export async function waitForJournalDrained(journalDir: string, volume: string, timeoutMs = 60_000): Promise<void> {
  const dir = path.join(journalDir, volume);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const segments = (await readdir(dir)).filter((name) => name.endsWith('.seg'));
    if (segments.length === 0) return;
    if (Date.now() > deadline) throw new Error(`journal ${dir} still holds ${segments.join(', ')} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Fresh stores of one kind, and temp directories, all removed by `dispose`. The S3 kind runs one
 * S3 server (Ceph's RADOS Gateway) and gives each store its own prefix.
 */
export interface Stores {
  readonly kind: StoreKind;
  fresh(): Promise<StoreTarget>;
  tempDir(label: string): Promise<string>;
  dispose(): Promise<void>;
}

export async function startStores(kind: StoreKind): Promise<Stores> {
  const root = await mkdtemp(path.join(os.tmpdir(), `holdfast-${kind}-`));
  const s3 = kind === 's3' ? await startS3Server() : undefined;
  let n = 0;
  const tempDir = (label: string): Promise<string> => mkdtemp(path.join(root, `${label}-`));
  return {
    kind,
    tempDir,
    async fresh(): Promise<StoreTarget> {
      n++;
      if (s3 === undefined) return { kind, args: ['--store', await tempDir('store')], env: {} };
      return { kind, args: ['--store', `s3://${s3.bucket}/t${n}`, '--s3-endpoint', s3.endpoint], env: s3.env };
    },
    async dispose(): Promise<void> {
      await s3?.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}
