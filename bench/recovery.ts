import { randomInt } from 'node:crypto';
import type { S3Server } from '../tests/helpers/s3-server.js';
import { NbdClient } from '../tests/helpers/nbd-client.js';
import { fetchVolume } from './admin.js';
import { sleep } from './proc.js';
import { VOLUME } from './systems.js';

/**
 * The recovery workload: cold 4 KiB random reads, 32 in flight, while the S3 server is killed for
 * `outage` seconds and started again. The requests in flight when it is back are the held ones; the
 * result is how long after its return the first and the last of them completed. Reads before the
 * outage stay in the first half of the volume and reads from its start on go to the second half,
 * which nothing has brought into the cache: whatever the volume and cache sizes, the reads during
 * the outage need the store.
 */

const BLOCK = 4096;
const IODEPTH = 32;
const SAMPLE_MS = 100;
/**
 * A read still waiting this long when the server returns is one the gateway held: a cache hit is
 * answered in well under a millisecond, so a read in flight that briefly is merely in flight.
 */
const HELD_AFTER_MS = 100;
/** Reads after the last held request completed, so the plot shows the flow restored. */
const TAIL_MS = 1_000;

export interface RecoverySample {
  /** Seconds since the workload started. */
  readonly t: number;
  readonly mibPerSecond: number;
  /** The gateway's own count of held requests (admin API). */
  readonly held: number;
}

export interface RecoveryResult {
  /** Seconds since the start at which the server was killed and at which it was serving again. */
  readonly downAt: number;
  readonly upAt: number;
  /** Requests that had waited at least HELD_AFTER_MS when the server returned. */
  readonly heldAtReturn: number;
  /** Milliseconds from the server's return to the first and the last of those completing; null if none was held or one never completed. */
  readonly firstMs: number | null;
  readonly lastMs: number | null;
  readonly errors: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly samples: readonly RecoverySample[];
}

export interface RecoveryOptions {
  readonly port: number;
  readonly adminUrl: string;
  readonly s3: S3Server;
  readonly size: number;
  /** Seconds of reads before the outage. */
  readonly before: number;
  readonly outage: number;
}

/**
 * Kills the S3 server, keeps it down for `seconds` and starts it again; `atEnd` runs at the end of
 * the outage, the server still down. Whatever fails, the server is started again: the other systems
 * and the next round need it.
 */
export async function s3Outage(s3: S3Server, seconds: number, atEnd?: () => void): Promise<void> {
  try {
    await s3.kill();
    await sleep(seconds * 1000);
    atEnd?.();
  } finally {
    await s3.restart();
  }
}

export async function runRecovery(o: RecoveryOptions): Promise<RecoveryResult> {
  const client = await NbdClient.connect({ host: '127.0.0.1', port: o.port, exportName: VOLUME });
  const t0 = performance.now();
  const now = (): number => performance.now() - t0;
  const inFlight = new Map<number, number>();
  const completedAt = new Map<number, number>();
  let held: ReadonlySet<number> | undefined;
  let nextId = 0;
  let bytes = 0;
  let intervalBytes = 0;
  let errors = 0;
  let stopping = false;
  let half: 0 | 1 = 0;
  const blocksPerHalf = Math.floor(o.size / 2 / BLOCK);

  const worker = async (): Promise<void> => {
    while (!stopping) {
      const id = nextId++;
      inFlight.set(id, now());
      try {
        await client.read((half * blocksPerHalf + randomInt(0, blocksPerHalf)) * BLOCK, BLOCK);
        bytes += BLOCK;
        intervalBytes += BLOCK;
      } catch {
        errors++;
      }
      inFlight.delete(id);
      if (held?.has(id) === true) completedAt.set(id, now());
    }
  };

  const samples: RecoverySample[] = [];
  let sampling = true;
  const sampler = (async (): Promise<void> => {
    let last = now();
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- cleared by the caller while this loop awaits
    while (sampling) {
      await sleep(SAMPLE_MS);
      const heldNow = (await fetchVolume(o.adminUrl, VOLUME).catch(() => undefined))?.heldRequests ?? 0;
      const t = now();
      samples.push({ t: t / 1000, mibPerSecond: intervalBytes / 2 ** 20 / ((t - last) / 1000), held: heldNow });
      intervalBytes = 0;
      last = t;
    }
  })();

  const workers = Array.from({ length: IODEPTH }, () => worker());
  let downAt: number;
  let upAt = 0;
  try {
    await sleep(o.before * 1000);
    downAt = now();
    half = 1;
    await s3Outage(o.s3, o.outage);
    upAt = now();
    held = new Set([...inFlight].filter(([, issuedAt]) => upAt - issuedAt >= HELD_AFTER_MS).map(([id]) => id));
    const deadline = upAt + 60_000;
    while (completedAt.size < held.size && now() < deadline) await sleep(20);
    await sleep(TAIL_MS);
  } finally {
    stopping = true;
    await Promise.all(workers);
    sampling = false;
    await sampler;
    await client.disconnect();
  }

  const done = [...completedAt.values()];
  const allDone = done.length === held.size && done.length > 0;
  return {
    downAt: downAt / 1000,
    upAt: upAt / 1000,
    heldAtReturn: held.size,
    firstMs: done.length > 0 ? Math.min(...done) - upAt : null,
    lastMs: allDone ? Math.max(...done) - upAt : null,
    errors,
    bytes,
    seconds: now() / 1000,
    samples,
  };
}
