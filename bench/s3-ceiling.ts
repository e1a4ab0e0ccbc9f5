import { randomBytes } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
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

export async function measureS3(s3: S3Server, parallelism: number, seconds: number): Promise<S3Ceiling> {
  const puts = new CeilingPuts(s3, parallelism);
  try {
    const putMiBps = await puts.run(seconds);
    const getMiBps = await timed(parallelism, seconds, async (worker, n) => {
      const k = puts.anyWritten(worker, n);
      const data = await puts.store.get(k);
      if (data === undefined) throw new Error(`s3 ceiling: object ${k} is missing`);
      return data.length;
    });
    return { putMiBps, getMiBps };
  } finally {
    await puts.close();
  }
}

/** The PUT half alone, e.g. right after an upload drain, to compare the drain with the server as it was then. */
export async function measurePuts(s3: S3Server, parallelism: number, seconds: number): Promise<number> {
  const puts = new CeilingPuts(s3, parallelism);
  try {
    return await puts.run(seconds);
  } finally {
    await puts.close();
  }
}

/**
 * Every PUT writes a new key, as format 2's delta uploads do: an overwrite costs RGW more (4 MiB, 8 in
 * flight, here: 48-57 MiB/s overwriting against 78-91 to new keys). The keys are deleted at the end, or
 * they would fill the server's store round after round.
 */
class CeilingPuts {
  readonly store: S3ObjectStore;
  private readonly body = randomBytes(EXTENT_SIZE);
  // Sent with each PUT as the gateway sends a delta's (combined from its block CRCs): the client does not hash the body.
  private readonly bodyCrc = crc32c(this.body);
  /** Keys each worker has written. */
  private readonly written: number[];

  constructor(
    s3: S3Server,
    private readonly parallelism: number,
  ) {
    this.store = new S3ObjectStore({ bucket: s3.bucket, prefix: 'ceiling', endpoint: s3.endpoint, credentials: s3.credentials });
    this.written = new Array<number>(parallelism).fill(0);
  }

  run(seconds: number): Promise<number> {
    return timed(this.parallelism, seconds, async (worker) => {
      const n = this.written[worker] ?? 0;
      await this.store.put(`${worker}-${n}`, this.body, { crc32c: this.bodyCrc });
      this.written[worker] = n + 1;
      return this.body.length;
    });
  }

  /** The `n`th key to read for `worker`, cycling through those it wrote. */
  anyWritten(worker: number, n: number): string {
    return `${worker}-${n % Math.max(1, this.written[worker] ?? 0)}`;
  }

  async close(): Promise<void> {
    await Promise.all(
      this.written.map(async (count, worker) => {
        for (let n = 0; n < count; n++) await this.store.delete(`${worker}-${n}`);
      }),
    );
    await this.store.close();
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
