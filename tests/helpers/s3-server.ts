import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { reapOnExit } from './child-reaper.js';

/**
 * A real S3-protocol server (s3rver) in a child process, so that a test can crash it, freeze it
 * and bring it back on the same port and data directory to simulate a storage outage.
 */
export interface S3Server {
  /** `http://127.0.0.1:PORT`, for S3StoreOptions.endpoint. */
  readonly endpoint: string;
  readonly port: number;
  /** Where s3rver keeps the buckets; survives kill/restart. */
  readonly dir: string;
  readonly bucket: string;
  /** Of the current child; changes on restart. */
  readonly pid: number;
  /** SIGKILL, like a crash: nothing is flushed or closed. Resolves once the child has exited. */
  kill(): Promise<void>;
  /** SIGTERM, resolving once the child has exited. */
  stop(): Promise<void>;
  /** SIGSTOP: connections are accepted by the kernel but never answered. */
  freeze(): void;
  thaw(): void;
  /** Starts the server again on the same port and directory (killing the old one if it runs). */
  restart(): Promise<void>;
}

export class S3ServerStartError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

const RUNNER = fileURLToPath(new URL('./s3rver-main.mjs', import.meta.url));
const READY_TIMEOUT_MS = 15_000;
const CREDENTIALS = {
  AWS_ACCESS_KEY_ID: 'S3RVER',
  AWS_SECRET_ACCESS_KEY: 'S3RVER',
  AWS_REGION: 'us-east-1',
} as const;

/** The environment the AWS SDK needs to talk to s3rver (its fixed credentials). */
export function s3Env(): Record<string, string> {
  return { ...CREDENTIALS };
}

export async function startS3Server(
  opts: { port?: number; dir?: string; bucket?: string } = {},
): Promise<S3Server> {
  Object.assign(process.env, CREDENTIALS);
  const port = opts.port ?? (await findFreePort());
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'holdfast-s3rver-')));
  const bucket = opts.bucket ?? 'holdfast-test';

  let child = await spawnServer(port, dir, bucket);

  const signal = (sig: NodeJS.Signals): void => {
    if (isRunning(child)) child.kill(sig);
  };
  const terminate = async (sig: NodeJS.Signals): Promise<void> => {
    if (!isRunning(child)) return;
    const exited = waitForExit(child);
    // The child is unref'd once started; without this nothing would keep the event loop
    // alive until its exit is reported.
    child.ref();
    child.kill(sig);
    // A frozen child would hold SIGTERM pending until it is continued.
    if (sig !== 'SIGKILL') child.kill('SIGCONT');
    await exited;
  };

  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    dir,
    bucket,
    get pid(): number {
      return child.pid ?? -1;
    },
    kill: () => terminate('SIGKILL'),
    stop: () => terminate('SIGTERM'),
    freeze: () => signal('SIGSTOP'),
    thaw: () => signal('SIGCONT'),
    async restart(): Promise<void> {
      await terminate('SIGKILL');
      child = await spawnServer(port, dir, bucket);
    },
  };
}

async function spawnServer(port: number, dir: string, bucket: string): Promise<ChildProcess> {
  // s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only offers
  // through its legacy provider; without it every truncated listing is a 500.
  const nodeArgs = ['--openssl-legacy-provider', RUNNER, String(port), dir, bucket];
  const child = spawn(process.execPath, nodeArgs, {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.once('exit', reapOnExit(child));

  let stderr = '';
  const onStderr = (chunk: string): void => {
    stderr += chunk;
  };
  child.stderr?.setEncoding('utf8').on('data', onStderr);

  await new Promise<void>((resolve, reject) => {
    let stdout = '';
    const fail = (why: string, cause?: unknown): void => {
      cleanup();
      child.kill('SIGKILL');
      reject(new S3ServerStartError(`s3rver on port ${port} ${why}; stderr:\n${stderr}`, { cause }));
    };
    const onData = (chunk: string): void => {
      stdout += chunk;
      if (stdout.split('\n').some((line) => line.trim() === `READY ${port}`)) {
        cleanup();
        resolve();
      }
    };
    // 'close' rather than 'exit': it comes after stderr has been read to the end.
    const onClose = (code: number | null, sig: NodeJS.Signals | null): void => {
      fail(`exited before it was ready (code ${code}, signal ${sig})`);
    };
    const onError = (err: Error): void => fail('could not be spawned', err);
    const timer = setTimeout(() => fail(`was not ready within ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS);
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onStderr);
      child.off('close', onClose);
      child.off('error', onError);
    };
    child.stdout?.setEncoding('utf8').on('data', onData);
    child.once('close', onClose);
    child.once('error', onError);
  });

  // Keep draining the pipes: a full pipe would block the server on its next log line.
  child.stdout?.resume();
  child.stderr?.resume();
  // The test decides when the server goes away; a forgotten one must not keep the test
  // process alive (the exit hook still kills it).
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) {
    if (stream instanceof Socket) stream.unref();
  }
  return child;
}

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function waitForExit(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Asks the kernel for a free port; the child binds it right after (a small, accepted race). */
function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : undefined;
      server.close(() => {
        if (port === undefined) reject(new S3ServerStartError('could not pick a free port'));
        else resolve(port);
      });
    });
  });
}
