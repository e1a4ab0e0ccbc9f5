import { randomBytes } from 'node:crypto';
import { S3ObjectStore } from '../gateway/store/s3-store.js';
import type { S3Server } from '../tests/helpers/s3-server.js';
import { EXTENT_SIZE } from './systems.js';

/**
 * The S3 server's own throughput for whole-extent objects, through the gateway's own S3 client,
 * with as many requests in flight as the gateway's uploads: the ceiling for cold reads and uploads.
 */

export interface S3Ceiling {
  readonly putMiBps: number;
  readonly getMiBps: number;
}

/** Objects each worker cycles through: PUTs overwrite, as the gateway's extent uploads do. */
const KEYS_PER_WORKER = 4;

export async function measureS3(s3: S3Server, parallelism: number, seconds: number): Promise<S3Ceiling> {
  const store = new S3ObjectStore({ bucket: s3.bucket, prefix: 'ceiling', endpoint: s3.endpoint, credentials: s3.credentials });
  const body = randomBytes(EXTENT_SIZE);
  const key = (worker: number, n: number): string => `${worker}-${n % KEYS_PER_WORKER}`;
  try {
    // Every key exists before the clock starts: the GETs read only written keys however few PUTs
    // a slow server managed, and every timed PUT overwrites.
    await Promise.all(
      Array.from({ length: parallelism * KEYS_PER_WORKER }, (_, i) => store.put(key(i % parallelism, Math.floor(i / parallelism)), body)),
    );
    const putMiBps = await timed(parallelism, seconds, async (worker, n) => {
      await store.put(key(worker, n), body);
      return body.length;
    });
    const getMiBps = await timed(parallelism, seconds, async (worker, n) => {
      const data = await store.get(key(worker, n));
      if (data === undefined) throw new Error(`s3 ceiling: object ${key(worker, n)} is missing`);
      return data.length;
    });
    return { putMiBps, getMiBps };
  } finally {
    await store.close();
  }
}

/** Runs `parallelism` loops of `op` for `seconds`, returning MiB per second. */
async function timed(parallelism: number, seconds: number, op: (worker: number, n: number) => Promise<number>): Promise<number> {
  const start = performance.now();
  const end = start + seconds * 1000;
  let bytes = 0;
  await Promise.all(
    Array.from({ length: parallelism }, async (_, worker) => {
      for (let n = 0; performance.now() < end; n++) {
        // Not `bytes += await op()`: that reads `bytes` before the await and drops the other workers' sums.
        const moved = await op(worker, n);
        bytes += moved;
      }
    }),
  );
  return bytes / 2 ** 20 / ((performance.now() - start) / 1000);
}
