import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, Socket } from 'node:net';
import { reapOnExit } from './child-reaper.js';

/**
 * A server process a test starts and controls with signals: it crashes (SIGKILL), freezes
 * (SIGSTOP), is stopped, and never keeps the test process alive by itself.
 */
export interface Daemon {
  readonly name: string;
  readonly pid: number;
  isRunning(): boolean;
  /** SIGSTOP, SIGCONT, or any other signal; nothing if it has exited. */
  signal(sig: NodeJS.Signals): void;
  /**
   * Sends `sig` (and SIGCONT, so that a frozen process gets it) and resolves once the process has
   * exited; SIGKILL if it is still there after `graceMs`.
   */
  stop(sig: NodeJS.Signals, graceMs?: number): Promise<void>;
  /** The last lines it wrote on stdout and stderr, for error messages. */
  output(): string;
}

export class DaemonStartError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Output kept per daemon: enough for the reason it failed, bounded however much it logs. */
const OUTPUT_LIMIT = 16 * 1024;
const DEFAULT_GRACE_MS = 10_000;

export function spawnDaemon(
  name: string,
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; onSpawn?: (pid: number) => void } = {},
): Daemon {
  const child: ChildProcess = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
  const untrack = reapOnExit(child);
  let output = '';
  const keep = (chunk: string): void => {
    output = (output + chunk).slice(-OUTPUT_LIMIT);
  };
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('error', (err) => {
      spawnError = err;
      untrack();
      resolve();
    });
    child.once('exit', () => {
      untrack();
      resolve();
    });
  });
  if (child.pid !== undefined) opts.onSpawn?.(child.pid);
  // The test decides when the server goes away; a forgotten one must not keep the test process
  // alive (the exit hook still kills it).
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) if (stream instanceof Socket) stream.unref();

  const isRunning = (): boolean => spawnError === undefined && child.exitCode === null && child.signalCode === null;
  return {
    name,
    pid: child.pid ?? -1,
    isRunning,
    signal(sig: NodeJS.Signals): void {
      if (isRunning()) child.kill(sig);
    },
    async stop(sig: NodeJS.Signals, graceMs = DEFAULT_GRACE_MS): Promise<void> {
      if (!isRunning()) return;
      // Unref'd children are not waited for: without this nothing would keep the event loop alive
      // until the exit is reported.
      child.ref();
      child.kill(sig);
      if (sig !== 'SIGKILL') child.kill('SIGCONT');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
    output: () => (spawnError === undefined ? output : `${output}\n${spawnError.message}`),
  };
}

/**
 * Polls `check` until it returns true; fails with `what` and the daemon's output when the daemon
 * exits first or `timeoutMs` passes.
 */
export async function waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number, daemon: Daemon): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (!daemon.isRunning()) throw new DaemonStartError(`${daemon.name} exited before ${what}; its output:\n${daemon.output()}`);
    if (Date.now() > deadline)
      throw new DaemonStartError(`${what}: not within ${timeoutMs} ms; ${daemon.name}'s output:\n${daemon.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Asks the kernel for a free port; the server binds it right after (a small, accepted race). */
export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : undefined;
      server.close(() => {
        if (port === undefined) reject(new DaemonStartError('could not pick a free port'));
        else resolve(port);
      });
    });
  });
}
