/**
 * Garbage collection of a whole store (docs/volume-format-2.md, "Snapshots, clones, garbage"): every
 * data object that no head, snapshot or trash entry names, and that is older than the grace period,
 * is deleted. Clones name their parents' objects, so references are collected across all volumes.
 */
import { elementAt } from '../../shared/checked.js';
import type { Logger } from 'pino';
import type { Failpoints } from '../failpoints.js';
import type { ObjectInfo, ObjectStore } from '../store/object-store.js';
import { type Head, parseHead } from './head.js';
import { parsePage } from './index-page.js';
import { isDataObjectKey, trashPrefix, trashTime, VOLUMES_PREFIX } from './layout.js';

export interface GcOptions {
  /** Objects younger than this, and objects a head released less than this ago, are kept. */
  readonly graceMs: number;
  readonly dryRun?: boolean;
  readonly now?: () => Date;
  readonly logger?: Logger;
  readonly failpoints?: Failpoints;
  /** Told after each object deleted, for progress bars. */
  readonly onDelete?: (done: number, of: number) => void;
}

export interface GcReport {
  /** Data objects in the store, and their bytes. */
  readonly objects: number;
  readonly bytes: number;
  /** Named by a head, snapshot or trash entry (or released less than the grace period ago). */
  readonly referencedObjects: number;
  readonly referencedBytes: number;
  /** Not named by anything, but younger than the grace period. */
  readonly youngObjects: number;
  /** Deleted (or, in a dry run, to be deleted). */
  readonly deletedObjects: number;
  readonly deletedBytes: number;
  /** Trash entries past the grace period, removed. */
  readonly trashDeleted: number;
  readonly dryRun: boolean;
}

export async function collectGarbage(store: ObjectStore, opts: GcOptions): Promise<GcReport> {
  const now = (opts.now ?? (() => new Date()))();
  const cutoff = now.getTime() - opts.graceMs;
  // One listing of everything first: a head or snapshot that goes away while we read is still found
  // in the trash, which is written before anything is deleted.
  const data: ObjectInfo[] = [];
  const named: string[] = [];
  const trash: ObjectInfo[] = [];
  for await (const info of store.listDetailed(VOLUMES_PREFIX)) {
    if (isDataObjectKey(info.key)) data.push(info);
    else if (/^volumes\/[^/]+\/(head|snapshots\/[^/]+)$/.test(info.key)) named.push(info.key);
    else if (/^volumes\/[^/]+\/trash\/[^/]+$/.test(info.key)) trash.push(info);
  }
  const referenced = new Set<string>();
  const pagesRead = new Set<string>();
  const collect = async (head: Head): Promise<void> => {
    for (const d of head.deltas) referenced.add(d.key);
    for (const r of head.released) if (Date.parse(r.at) >= cutoff) referenced.add(r.key);
    for (const p of head.pages) {
      referenced.add(p.key);
      if (pagesRead.has(p.key)) continue;
      pagesRead.add(p.key);
      const body = await store.get(p.key);
      if (body === undefined) {
        opts.logger?.warn({ page: p.key, volume: head.name }, 'index page named by a head is missing');
        continue;
      }
      for (const base of parsePage(body, p.crc, p.page, p.key).values()) referenced.add(base.key);
    }
  };
  const vanished = new Set<string>();
  for (const key of named) {
    const body = await store.get(key);
    if (body === undefined) vanished.add(elementAt(key.split('/'), 1));
    else await collect(parseHead(body, key));
  }
  // A head or snapshot deleted since the listing went to the trash first: read that volume's trash again.
  for (const volume of vanished)
    for await (const info of store.listDetailed(trashPrefix(volume))) if (!trash.some((t) => t.key === info.key)) trash.push(info);
  let trashDeleted = 0;
  for (const t of trash) {
    const at = trashTime(t.key) ?? t.lastModified;
    if (at.getTime() >= cutoff) {
      const body = await store.get(t.key);
      if (body !== undefined) await collect(parseHead(body, t.key));
    } else if (opts.dryRun !== true) {
      await store.delete(t.key);
      trashDeleted++;
    }
  }
  let referencedObjects = 0;
  let referencedBytes = 0;
  let bytes = 0;
  const doomed: ObjectInfo[] = [];
  let young = 0;
  for (const d of data) {
    bytes += d.size;
    if (referenced.has(d.key)) {
      referencedObjects++;
      referencedBytes += d.size;
    } else if (d.lastModified.getTime() >= cutoff) young++;
    else doomed.push(d);
  }
  let deletedBytes = 0;
  let done = 0;
  if (opts.dryRun !== true) {
    opts.failpoints?.hit('gc.before-delete');
    for (const d of doomed) {
      await store.delete(d.key);
      deletedBytes += d.size;
      opts.onDelete?.(++done, doomed.length);
      if (done === Math.ceil(doomed.length / 2)) opts.failpoints?.hit('gc.mid-delete');
    }
  } else for (const d of doomed) deletedBytes += d.size;
  const report: GcReport = {
    objects: data.length,
    bytes,
    referencedObjects,
    referencedBytes,
    youngObjects: young,
    deletedObjects: doomed.length,
    deletedBytes,
    trashDeleted,
    dryRun: opts.dryRun === true,
  };
  opts.logger?.info(report, opts.dryRun === true ? 'garbage collection (dry run)' : 'garbage collected');
  return report;
}
