import { randomUUID } from 'node:crypto';
import { mkdir, open, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { VolumeLockedError, errorMessage } from '../../shared/errors.js';
import type { ObjectStore } from '../store/object-store.js';
import { leaseKey } from './layout.js';
import { Volume } from './volume.js';

/** A lease not renewed for this long belongs to a gateway that is gone. */
export const LEASE_TTL_MS = 30_000;
const RENEW_EVERY_MS = 10_000;

const LeaseSchema = z.object({
  journalId: z.string(),
  host: z.string(),
  pid: z.number(),
  renewedAt: z.number(),
});
type Lease = z.infer<typeof LeaseSchema>;

/**
 * The identity of a journal directory. A gateway restarted on the same journal (the same task after
 * a crash, or its replacement on the same EFS) may take over its own lease at once; any other
 * gateway must wait for the lease to expire.
 */
export async function journalIdentity(journalRoot: string): Promise<string> {
  await mkdir(journalRoot, { recursive: true });
  const path = join(journalRoot, 'journal-id');
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    const id = randomUUID();
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, `${id}\n`, { flush: true });
    await rename(tmp, path);
    return (await readFile(path, 'utf8')).trim();
  }
}

/**
 * Makes sure one gateway at a time serves a volume, by two locks: a lock file in the volume's
 * journal directory (two processes on the same journal) and a lease object in the store (two
 * gateways with different journals on the same bucket). Either one held elsewhere refuses the open
 * before anything is changed.
 */
export class VolumeLock {
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly name: string,
    private readonly lockPath: string,
    private readonly store: ObjectStore,
    private readonly lease: Lease,
    private readonly logger: Logger,
  ) {}

  static async acquire(opts: {
    name: string;
    journalDir: string;
    journalId: string;
    store: ObjectStore;
    logger: Logger;
  }): Promise<VolumeLock> {
    await mkdir(opts.journalDir, { recursive: true });
    const lockPath = join(opts.journalDir, 'LOCK');
    const lease: Lease = { journalId: opts.journalId, host: hostname(), pid: process.pid, renewedAt: Date.now() };
    await takeLockFile(lockPath, opts.name, lease);
    try {
      await takeLease(opts.store, opts.name, lease, opts.logger);
    } catch (err) {
      await unlink(lockPath).catch(() => undefined);
      throw err;
    }
    const lock = new VolumeLock(opts.name, lockPath, opts.store, lease, opts.logger);
    lock.timer = setInterval(() => void lock.renew(), RENEW_EVERY_MS);
    lock.timer.unref();
    return lock;
  }

  private async renew(): Promise<void> {
    const now = new Date();
    await utimes(this.lockPath, now, now).catch((err: unknown) => this.logger.warn({ err, volume: this.name }, 'could not refresh the volume lock file'));
    try {
      await this.store.put(leaseKey(this.name), Buffer.from(JSON.stringify({ ...this.lease, renewedAt: now.getTime() })));
    } catch (err) {
      // The store being down is an outage, not a reason to stop serving: the lease is renewed when it is back.
      this.logger.debug({ err, volume: this.name }, 'could not renew the volume lease');
    }
  }

  async release(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.store.delete(leaseKey(this.name)).catch((err: unknown) => this.logger.warn({ err, volume: this.name }, 'could not delete the volume lease; it expires by itself'));
    await unlink(this.lockPath).catch(() => undefined);
  }
}

async function takeLockFile(path: string, name: string, mine: Lease): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx');
      await fh.writeFile(JSON.stringify(mine));
      await fh.sync();
      await fh.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = await readLockFile(path);
    if (holder !== undefined && (await lockFileIsLive(path, holder))) {
      throw new VolumeLockedError(`volume ${name} is in use by another gateway (pid ${holder.pid} on ${holder.host}, lock file ${path})`);
    }
    await unlink(path).catch(() => undefined);
  }
  throw new VolumeLockedError(`volume ${name}: another gateway took the lock file ${path} at the same moment`);
}

async function readLockFile(path: string): Promise<Lease | undefined> {
  try {
    const parsed = LeaseSchema.safeParse(JSON.parse(await readFile(path, 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

async function lockFileIsLive(path: string, holder: Lease): Promise<boolean> {
  if (holder.host === hostname()) {
    // Same host (or a container restarted with the same pid): the pid tells whether it still runs.
    if (holder.pid === process.pid) return false;
    try {
      process.kill(holder.pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  const age = Date.now() - (await stat(path)).mtimeMs;
  return age < LEASE_TTL_MS;
}

async function takeLease(store: ObjectStore, name: string, mine: Lease, logger: Logger): Promise<void> {
  let current: Buffer | undefined;
  try {
    current = await store.get(leaseKey(name));
  } catch (err) {
    // Serving through an outage matters more; the journal lock already excludes the common case.
    logger.warn({ volume: name, err: errorMessage(err) }, 'object store unreachable: volume lease not checked');
    return;
  }
  if (current !== undefined) {
    let holder: Lease | undefined;
    try {
      const parsed = LeaseSchema.safeParse(JSON.parse(current.toString('utf8')));
      holder = parsed.success ? parsed.data : undefined;
    } catch {
      holder = undefined;
    }
    if (holder !== undefined && holder.journalId !== mine.journalId && Date.now() - holder.renewedAt < LEASE_TTL_MS) {
      throw new VolumeLockedError(
        `volume ${name} is served by another gateway (${holder.host}, pid ${holder.pid}, journal ${holder.journalId}); its lease expires ${Math.ceil((LEASE_TTL_MS - (Date.now() - holder.renewedAt)) / 1000)} s after its last renewal`,
      );
    }
  }
  await store.put(leaseKey(name), Buffer.from(JSON.stringify(mine))).catch((err: unknown) => {
    logger.warn({ volume: name, err: errorMessage(err) }, 'could not write the volume lease');
  });
}

/**
 * Runs `fn` holding the volume's lock, as a gateway would hold it, so that a command (import,
 * export, delete) and a gateway can never change the volume under each other.
 */
export async function withVolumeLock<T>(
  opts: { name: string; journalRoot: string; store: ObjectStore; logger: Logger },
  fn: () => Promise<T>,
): Promise<T> {
  const lock = await VolumeLock.acquire({
    name: opts.name,
    journalDir: Volume.journalDirFor(opts.journalRoot, opts.name),
    journalId: await journalIdentity(opts.journalRoot),
    store: opts.store,
    logger: opts.logger,
  });
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
