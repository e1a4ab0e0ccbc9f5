import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';

/** Child processes, their output, and what /proc says about their memory and CPU. */

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end (killed after `timeoutMs`), capturing its output. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} could not be started: ${err.message}`, { cause: err }));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** A long-running server process; its output is kept for error messages. */
export interface Daemon {
  readonly child: ChildProcess;
  readonly pid: number;
  output(): string;
  readonly exited: Promise<void>;
  /** Sends `signal` and waits for the exit, SIGKILL after `graceMs`. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A server left behind would keep its port, its FUSE mount or its journal lock after the run.
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

export function startDaemon(cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv): Daemon {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  track(child);
  let out = '';
  // Bounded: a chatty server must not grow the harness's memory for the whole run.
  const keep = (c: string): void => {
    out = (out + c).slice(-16_384);
  };
  child.stdout.setEncoding('utf8').on('data', keep);
  child.stderr.setEncoding('utf8').on('data', keep);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else
      child.once('close', () => {
        resolve();
      });
  });
  child.once('error', (err) => {
    keep(`\n${cmd} could not be started: ${err.message}`);
  });
  return {
    child,
    pid: child.pid ?? -1,
    output: () => out,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

function isRunning(d: Daemon): boolean {
  return d.child.exitCode === null && d.child.signalCode === null;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every 50 ms until it is true; fails with `what` (and the daemon's output) at the deadline. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, daemon?: Daemon): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (daemon !== undefined && !isRunning(daemon)) throw new Error(`${what}: the process exited: ${daemon.output().trim()}`);
    if (Date.now() > deadline)
      throw new Error(`${what}: not within ${timeoutMs} ms${daemon === undefined ? '' : `: ${daemon.output().trim()}`}`);
    await sleep(50);
  }
}

export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      resolve(false);
    });
  });
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** User plus system CPU seconds of a process, all its threads included. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

function statusKiB(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]);
}

/** The process's resident memory now, or undefined once it is gone (an exiting process has no VmRSS line). */
export function residentMiB(pid: number): number | undefined {
  try {
    const kib = statusKiB(pid, 'VmRSS');
    return kib === 0 ? undefined : kib / 1024;
  } catch {
    return undefined;
  }
}

/**
 * Peak resident memory and CPU time of one process over a measured span. The kernel's own peak
 * (VmHWM) is reset at the start where /proc allows it, so that one workload's peak is not an earlier
 * one's; polling VmRSS covers kernels that refuse the reset.
 */
export class ProcessMeter {
  private readonly cpuStart: number;
  private peakKiB: number;
  private readonly timer: NodeJS.Timeout;
  private readonly hwmReset: boolean;

  constructor(private readonly pid: number) {
    try {
      writeFileSync(`/proc/${pid}/clear_refs`, '5');
      this.hwmReset = true;
    } catch {
      // VmHWM is then the lifetime peak; polling still sees this span's, at 100 ms resolution.
      this.hwmReset = false;
    }
    this.cpuStart = cpuSeconds(pid);
    this.peakKiB = statusKiB(pid, 'VmRSS');
    this.timer = setInterval(() => {
      this.sample();
    }, 100);
  }

  private sample(): void {
    try {
      this.peakKiB = Math.max(this.peakKiB, statusKiB(this.pid, 'VmRSS'));
    } catch {
      // The process exited (a restart); its successor gets its own meter.
    }
  }

  stop(): { peakRssMiB: number; cpuSeconds: number } {
    clearInterval(this.timer);
    this.sample();
    const hwm = this.hwmReset ? statusKiB(this.pid, 'VmHWM') : 0;
    return { peakRssMiB: Math.max(this.peakKiB, hwm) / 1024, cpuSeconds: cpuSeconds(this.pid) - this.cpuStart };
  }
}
