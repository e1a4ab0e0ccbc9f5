import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
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

/** Ports this process handed out, so that two picks before either server binds differ. */
const handedOut = new Set<number>();

/**
 * A free port below the kernel's ephemeral range, for a server started moments (radosgw: seconds)
 * later or started again on the same port after an outage. A port from the ephemeral range (listen
 * on 0) can meanwhile become the local end of any outgoing connection on the machine, and radosgw
 * then failed with "Address already in use"; below the range only another server can take it.
 */
export async function findFreePort(): Promise<number> {
  const low = ephemeralLow();
  const from = Math.max(1024, low - 16_384);
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = from + Math.floor(Math.random() * (low - from));
    if (handedOut.has(port) || !(await bindable(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new DaemonStartError(`could not find a free port between ${from} and ${low}`);
}

/** The first port of the kernel's ephemeral range (Linux's default where /proc does not say). */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 2048 ? low : DEFAULT_EPHEMERAL_LOW;
  } catch {
    return DEFAULT_EPHEMERAL_LOW;
  }
}

const DEFAULT_EPHEMERAL_LOW = 32_768;

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => {
      resolve(false);
    });
    server.listen(port, '127.0.0.1', () => {
      server.close(() => {
        resolve(true);
      });
    });
  });
}
