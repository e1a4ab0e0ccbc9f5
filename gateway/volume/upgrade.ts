import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Failpoints } from '../failpoints.js';
import { Journal } from '../journal/journal.js';
import { VolumeExistsError, VolumeLockedError, VolumeNotFoundError } from '../../shared/errors.js';
import type { VolumeShape } from '../../shared/volume-manifest.js';
import { buildBaseExtent } from '../image/base-extent.js';
import { parseMeta } from '../image/data-object.js';
import { emptyHead, encodeHead, type Head, type Owner, type PageRef } from '../image/head.js';
import { type BaseRef, encodePage, pageOf } from '../image/index-page.js';
import {
  baseExtentKey,
  headKey,
  indexPageKey,
  legacyExtentIndex,
  legacyExtentKey,
  legacyLeaseKey,
  legacyManifestKey,
  volumePrefix,
} from '../image/layout.js';
import { type ObjectStore, PreconditionFailedError } from '../store/object-store.js';
import { DEFAULT_LEASE_MS, parseLegacyManifest } from './catalog.js';
import { MAX_WRITE_BYTES } from './volume.js';

/** Format 1 renewed its lease every 10 s and gave it up after 30 s. */
const LEGACY_LEASE_MS = 30_000;
/** The tag of base extents the upgrade writes: fixed, so an interrupted upgrade finds them again. */
const UPGRADE_TAG = '00000000';

export interface UpgradeReport {
  /** Records a format 1 gateway left in the local journal: the caller replays and uploads them. */
  readonly backlog: number;
  readonly extents: number;
  readonly converted: number;
  /** Converted by an earlier, interrupted run and found intact. */
  readonly reused: number;
  readonly legacyDeleted: number;
}

export interface UpgradeOptions {
  readonly logger: Logger;
  /** The volume's journal directory here: a format 1 backlog in it is handed to the format 2 volume. */
  readonly journalDir?: string;
  readonly journalId?: string;
  readonly failpoints?: Failpoints;
  readonly signal?: AbortSignal;
  readonly onExtent?: (done: number, of: number) => void;
  readonly run: <T>(items: readonly number[], work: (item: number) => Promise<T>) => Promise<void>;
}

/**
 * Converts a format 1 volume in place (docs/volume-format-2.md, "Format 1"): every stored extent
 * becomes a checksummed, sparse base extent under a fixed key, then the index pages and the head are
 * written — the head last, with If-None-Match — and only then are the format 1 objects deleted. Run
 * again after an interruption, it reuses what it already converted (each checked against its own
 * tables) and finishes; run on a volume already converted, it only removes what format 1 left behind.
 */
export async function upgradeVolume(store: ObjectStore, name: string, opts: UpgradeOptions): Promise<UpgradeReport> {
  const manifestBody = await store.get(legacyManifestKey(name));
  const headExists = (await store.get(headKey(name))) !== undefined;
  if (manifestBody === undefined) {
    if (headExists) throw new VolumeExistsError(`volume ${name} is already in format 2`);
    throw new VolumeNotFoundError(`volume ${name} does not exist in ${store.location}`);
  }
  const shape = parseLegacyManifest(manifestBody, `${store.location}${legacyManifestKey(name)}`);
  await refuseLiveLegacyGateway(store, name);
  const legacy: number[] = [];
  const existing = new Map<string, number>();
  for await (const info of store.listDetailed(`${volumePrefix(name)}extents/`)) {
    const index = legacyExtentIndex(name, info.key);
    if (index !== undefined) legacy.push(index);
    else existing.set(info.key, info.size);
  }
  let converted = 0;
  let reused = 0;
  const backlogSeq = opts.journalDir === undefined ? 0 : await legacyBacklog(opts.journalDir, opts.logger);
  if (!headExists) {
    const bases = new Map<number, BaseRef>();
    let done = 0;
    await opts.run(legacy, async (index) => {
      const key = baseExtentKey(name, index, 0, 0, UPGRADE_TAG);
      const prior = existing.has(key) ? await checkConverted(store, key) : undefined;
      if (prior !== undefined) {
        bases.set(index, prior);
        reused++;
      } else {
        const body = await store.get(legacyExtentKey(name, index), { signal: opts.signal });
        if (body !== undefined) {
          const built = buildBaseExtent(body, index * shape.extentSize, key, 0, 0);
          await store.put(key, built.body, { signal: opts.signal, crc32c: built.bodyCrc });
          bases.set(index, built.ref);
          converted++;
        }
      }
      opts.onExtent?.(++done, legacy.length);
      opts.failpoints?.hit('upgrade.after-extent');
    });
    const head = await headFor(store, name, shape, bases);
    // A format 1 backlog in this journal directory: the head names this journal as its owner's, so the
    // first taker with it replays the backlog and one without it refuses rather than lose it.
    const owner: Owner | null =
      backlogSeq > 0 && opts.journalId !== undefined
        ? {
            gateway: 'upgrade',
            journalId: opts.journalId,
            host: hostname(),
            pid: process.pid,
            instance: `upgrade-${randomUUID()}`,
            admin: null,
          }
        : null;
    await store.putIfAbsent(headKey(name), encodeHead({ ...head, owner, ackedSeq: backlogSeq })).catch((err: unknown) => {
      // Another run of the upgrade finished first: its head stands.
      if (!(err instanceof PreconditionFailedError)) throw err;
    });
  }
  let legacyDeleted = 0;
  for (const index of legacy) {
    await store.delete(legacyExtentKey(name, index));
    legacyDeleted++;
  }
  await store.delete(legacyLeaseKey(name));
  await store.delete(legacyManifestKey(name));
  opts.logger.info({ volume: name, converted, reused, legacyDeleted }, 'volume upgraded to format 2');
  return { backlog: backlogSeq, extents: legacy.length, converted, reused, legacyDeleted };
}

/** The highest sequence in a format 1 journal left in `dir` (0 when there is none). */
async function legacyBacklog(dir: string, logger: Logger): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  if (!names.some((n) => /^\d{16}\.seg$/.test(n))) return 0;
  const { journal, entries } = await Journal.open({
    dir,
    segmentBytes: 64 * 2 ** 20,
    limitBytes: 2 ** 62,
    maxPayload: MAX_WRITE_BYTES,
    logger,
  });
  await journal.close();
  return entries.reduce((max, e) => Math.max(max, e.seq), 0);
}

async function refuseLiveLegacyGateway(store: ObjectStore, name: string): Promise<void> {
  const body = await store.get(legacyLeaseKey(name));
  if (body === undefined) return;
  let renewedAt: unknown;
  try {
    renewedAt = (JSON.parse(body.toString('utf8')) as { renewedAt?: unknown }).renewedAt;
  } catch {
    return;
  }
  if (typeof renewedAt === 'number' && Date.now() - renewedAt < LEGACY_LEASE_MS) {
    throw new VolumeLockedError(
      `volume ${name} is served by a format 1 gateway (its lease was renewed ${Math.round((Date.now() - renewedAt) / 1000)} s ago); stop it first`,
    );
  }
}

/** A base extent an interrupted run wrote, if it is whole: its trailer names its tables, which must check. */
async function checkConverted(store: ObjectStore, key: string): Promise<BaseRef | undefined> {
  const body = await store.get(key);
  if (body === undefined || body.length < 64) return undefined;
  const metaCrc = body.readUInt32LE(body.length - 4);
  const dataLength = body.readUInt32LE(body.length - 64 + 16) + body.readUInt32LE(body.length - 64 + 20) * 0x1_0000_0000;
  try {
    parseMeta(body.subarray(dataLength), metaCrc, key);
  } catch {
    return undefined;
  }
  return { key, seq: 0, size: body.length, metaOffset: dataLength, metaCrc };
}

async function headFor(store: ObjectStore, name: string, shape: VolumeShape, bases: ReadonlyMap<number, BaseRef>): Promise<Head> {
  const pages: PageRef[] = [];
  for (const page of new Set([...bases.keys()].map(pageOf))) {
    const encoded = encodePage(page, bases);
    if (encoded === undefined) continue;
    const key = indexPageKey(name, page, 0, 0);
    await store.put(key, encoded.body);
    pages.push({ page, key, size: encoded.body.length, crc: encoded.crc });
  }
  return { ...emptyHead(shape, DEFAULT_LEASE_MS), pages: pages.sort((a, b) => a.page - b.page) };
}
