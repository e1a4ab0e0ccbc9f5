/**
 * Taking a volume: the one way a gateway (or a CLI command) becomes a volume's writer. It bumps the
 * head's epoch by conditional write, and before that makes sure the previous owner can no longer
 * acknowledge anything (docs/volume-format-2.md, "Fencing: epochs, leases and takeover").
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { HoldfastError, VolumeLockedError, VolumeNotFoundError } from '../../shared/errors.js';
import { type ObjectStore, PreconditionFailedError } from '../store/object-store.js';
import { encodeHead, type Head, type Owner, parseHead } from './head.js';
import { HeadWriter } from './head-writer.js';
import { headKey, legacyManifestKey } from './layout.js';

/** The volume is still in format 1: `holdfast volume upgrade NAME` converts it. */
export class VolumeFormatError extends HoldfastError {}

/** The previous owner's journal holds acknowledged writes this gateway cannot replay. */
export class TakeoverRefusedError extends HoldfastError {}

/** Unique per process: tells this process's head writes from a restarted one's. */
export const PROCESS_INSTANCE = randomUUID();

/** The clocks of two gateways may run at slightly different rates; the taker waits this much longer. */
const LEASE_MARGIN = 0.1;

export interface TakeVolumeOptions {
  readonly store: ObjectStore;
  readonly name: string;
  /** This gateway as the head will name it. */
  readonly owner: Owner;
  readonly leaseMs: number;
  /** Take it even if the previous owner's journal, which this gateway cannot read, holds acknowledged writes. */
  readonly force?: boolean;
  readonly logger: Logger;
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly signal?: AbortSignal;
  readonly onDeposed?: ConstructorParameters<typeof HeadWriter>[0]['onDeposed'];
}

export interface TakenVolume {
  readonly writer: HeadWriter;
  /** The head as it was before we took it. */
  readonly previous: Head;
  /** True when the previous owner's journal is ours to replay (same journal directory). */
  readonly sameJournal: boolean;
}

export function ownerIdentity(gateway: string, journalId: string, admin: string | null): Owner {
  return { gateway, journalId, host: hostname(), pid: process.pid, instance: PROCESS_INSTANCE, admin };
}

export async function readHead(store: ObjectStore, name: string, signal?: AbortSignal): Promise<{ head: Head; etag: string }> {
  const got = await store.getVersioned(headKey(name), { signal });
  if (got === undefined) {
    if ((await store.get(legacyManifestKey(name), { signal })) !== undefined) {
      throw new VolumeFormatError(
        `volume ${name} is in format 1, which this version no longer serves; convert it with: holdfast volume upgrade ${name}`,
      );
    }
    throw new VolumeNotFoundError(`volume ${name} does not exist in ${store.location}`);
  }
  return { head: parseHead(got.body, `${store.location}${headKey(name)}`), etag: got.etag };
}

export async function takeVolume(opts: TakeVolumeOptions): Promise<TakenVolume> {
  const now = opts.now ?? (() => performance.now());
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let { head, etag } = await readHead(opts.store, opts.name, opts.signal);
  // The head as first seen and when: unchanged for a whole lease from then, its owner's lease is over.
  let watched = { etag, since: now() };
  for (;;) {
    opts.signal?.throwIfAborted();
    const prev = head.owner;
    const sameJournal = prev !== null && prev.journalId === opts.owner.journalId;
    // A head this very process wrote as its own (a volume created to be filled) is ours already.
    const free =
      prev === null || prev.instance === opts.owner.instance || (sameJournal && prev.host === opts.owner.host && !processAlive(prev));
    const expired = now() - watched.since >= head.leaseMs * (1 + LEASE_MARGIN);
    if (free || expired) {
      if (prev !== null && !sameJournal && head.ackedSeq > head.seq && opts.force !== true) {
        throw new TakeoverRefusedError(
          `volume ${opts.name}: its last owner (gateway ${prev.gateway} on ${prev.host}, journal ${prev.journalId}) had acknowledged ` +
            `${head.ackedSeq - head.seq} writes (sequences ${head.seq + 1}..${head.ackedSeq}) that are only in its journal, which this gateway cannot read; ` +
            `start a gateway with that journal directory, or take the volume with --force-takeover ${opts.name} and lose them`,
        );
      }
      const epoch = head.epoch + 1;
      // A released head had everything committed: nothing older in any journal is ours to replay.
      const journalSince = prev !== null && sameJournal ? head.journalSince : epoch;
      const taken: Head = {
        ...head,
        epoch,
        version: head.version + 1,
        owner: opts.owner,
        journalSince,
        leaseMs: opts.leaseMs,
        ackedSeq: head.seq,
      };
      const body = encodeHead(taken);
      const sentAt = now();
      try {
        const newEtag = await opts.store.putIfMatch(headKey(opts.name), body, etag, { signal: opts.signal });
        if (prev !== null) opts.logger.info({ volume: opts.name, epoch: taken.epoch, previous: prev, sameJournal }, 'took over the volume');
        const writer = new HeadWriter(
          {
            store: opts.store,
            key: headKey(opts.name),
            logger: opts.logger,
            now,
            ...(opts.onDeposed ? { onDeposed: opts.onDeposed } : {}),
          },
          taken,
          newEtag,
          sentAt,
        );
        return { writer, previous: head, sameJournal: prev === null || sameJournal };
      } catch (err) {
        // Lost a race (or RGW's 500 for one): read again and decide anew.
        if (!(err instanceof PreconditionFailedError))
          opts.logger.debug({ err, volume: opts.name }, 'taking the volume failed; reading its head again');
        ({ head, etag } = await readHead(opts.store, opts.name, opts.signal));
        watched = { etag, since: now() };
        if (!(err instanceof PreconditionFailedError)) await sleep(Math.min(1000, head.leaseMs / 10));
        continue;
      }
    }
    await sleep(Math.min(1000, head.leaseMs / 10));
    const again = await readHead(opts.store, opts.name, opts.signal);
    if (again.etag !== watched.etag) {
      const owner = again.head.owner;
      if (owner !== null && owner.instance === prev.instance && again.head.epoch === head.epoch) {
        throw new VolumeLockedError(
          `volume ${opts.name} is served by gateway ${owner.gateway} (${owner.host}, pid ${owner.pid}${owner.admin !== null ? `, admin ${owner.admin}` : ''}): it renewed its lease`,
        );
      }
      watched = { etag: again.etag, since: now() };
    }
    ({ head, etag } = again);
  }
}

function processAlive(owner: Owner): boolean {
  // A container restarted with the same pid (pid 1) is a new process: the instance tells.
  if (owner.pid === process.pid) return owner.instance === PROCESS_INSTANCE;
  try {
    process.kill(owner.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
