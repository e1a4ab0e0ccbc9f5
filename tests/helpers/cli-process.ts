import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The installed entry point, which loads the esbuild bundle: run `npm run build` before the tests. */
export const HOLDFAST_BIN = fileURLToPath(new URL('../../bin/holdfast.js', import.meta.url));

/** A hung command fails its test instead of stalling the whole run; this is not a timing assertion. */
const RUN_LIMIT_MS = 120_000;

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CliOptions {
  /** Merged over the parent environment with every HOLDFAST_ variable removed. */
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd: string;
}

export class CliProcessError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // A gateway left running would hold its journal lock and port after the test run.
    process.on('exit', () => {
      for (const c of liveChildren) c.kill('SIGKILL');
    });
  }
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
}

/** The parent's environment without the settings of whatever Holdfast the developer runs. */
export function cleanEnv(extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HOLDFAST_')) env[k] = v;
  return { ...env, ...extra };
}

function spawnCli(args: readonly string[], opts: CliOptions): ChildProcess {
  const child = spawn(process.execPath, [HOLDFAST_BIN, ...args], {
    cwd: opts.cwd,
    env: cleanEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  return child;
}

/** Runs `holdfast ARGS` to completion; a non-zero exit is a result, not an error. */
export function runCli(args: readonly string[], opts: CliOptions): Promise<CliResult> {
  const child = spawnCli(args, opts);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve, reject) => {
    const limit = setTimeout(() => child.kill('SIGKILL'), RUN_LIMIT_MS);
    child.once('error', (err) => {
      clearTimeout(limit);
      reject(new CliProcessError(`could not run holdfast ${args.join(' ')}`, { cause: err }));
    });
    // 'close' rather than 'exit': both pipes have been read to the end by then.
    child.once('close', (code, signal) => {
      clearTimeout(limit);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface ServeProcess {
  readonly child: ChildProcess;
  /** Everything the gateway printed so far. */
  output(): { stdout: string; stderr: string };
  /** Sends `signal` and resolves with the exit status once the process is gone. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `holdfast serve ARGS` and resolves once it reports that it is serving. */
export async function startServe(args: readonly string[], opts: CliOptions): Promise<ServeProcess> {
  const child = spawnCli(['serve', ...args], opts);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => {
      resolve({ code, signal });
    });
  });
  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (err?: CliProcessError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(limit);
      if (err === undefined) {
        resolve();
        return;
      }
      child.kill('SIGKILL');
      reject(err);
    };
    const fail = (why: string): void => {
      settle(new CliProcessError(`holdfast serve ${why}\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    };
    const limit = setTimeout(() => {
      fail(`did not report "serving" within ${RUN_LIMIT_MS} ms`);
    }, RUN_LIMIT_MS);
    child.stdout!.on('data', () => {
      if (stdout.includes('serving')) settle();
    });
    void closed.then(({ code, signal }) => {
      fail(`exited before serving (code ${code}, signal ${signal})`);
    });
  });
  return {
    child,
    output: () => ({ stdout, stderr }),
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return closed;
    },
  };
}
