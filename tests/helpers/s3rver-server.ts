import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Daemon, findFreePort, spawnDaemon, waitUntil } from './daemon-process.js';
import { credentialsEnv, type S3Server, type S3ServerOptions } from './s3-server.js';

/**
 * s3rver, a mock S3 server, in a child process. It ignores conditional writes and accepts what a
 * real S3 would refuse: tests use it only where Ceph's RADOS Gateway cannot play the part, and say why.
 */

const RUNNER = fileURLToPath(new URL('./s3rver-main.mjs', import.meta.url));
const READY_TIMEOUT_MS = 15_000;
/** The only credentials s3rver accepts. */
const CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;
const REGION = 'us-east-1';

export async function startS3rver(opts: S3ServerOptions = {}): Promise<S3Server> {
  const port = await findFreePort();
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'holdfast-s3rver-')));
  const bucket = opts.bucket ?? 'holdfast-test';

  let daemon = await spawnServer(port, dir, bucket);
  return {
    kind: 's3rver',
    endpoint: `http://127.0.0.1:${port}`,
    port,
    bucket,
    region: REGION,
    credentials: CREDENTIALS,
    env: credentialsEnv(CREDENTIALS, REGION),
    get pid(): number {
      return daemon.pid;
    },
    kill: () => daemon.stop('SIGKILL'),
    freeze: () => {
      daemon.signal('SIGSTOP');
    },
    thaw: () => {
      daemon.signal('SIGCONT');
    },
    async restart(): Promise<void> {
      await daemon.stop('SIGKILL');
      daemon = await spawnServer(port, dir, bucket);
    },
    async close(): Promise<void> {
      await daemon.stop('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function spawnServer(port: number, dir: string, bucket: string): Promise<Daemon> {
  // s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only offers
  // through its legacy provider; without it every truncated listing is a 500.
  const daemon = spawnDaemon('s3rver', process.execPath, ['--openssl-legacy-provider', RUNNER, String(port), dir, bucket]);
  try {
    await waitUntil(
      `s3rver ready on port ${port}`,
      () =>
        daemon
          .output()
          .split('\n')
          .some((line) => line.trim() === `READY ${port}`),
      READY_TIMEOUT_MS,
      daemon,
    );
  } catch (err) {
    await daemon.stop('SIGKILL');
    throw err;
  }
  return daemon;
}
