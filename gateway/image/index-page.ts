/**
 * Index pages: which base object holds each extent. One page per EXTENTS_PER_PAGE extents, a small
 * JSON object rewritten under a new key only when compaction or an import changes one of its extents;
 * the head names each page with its CRC32C.
 */
import { crc32c } from '@node-rs/crc32';
import { z } from 'zod';
import { DataCorruptError } from '../../shared/errors.js';

export const EXTENTS_PER_PAGE = 1024;

/** An extent's base object: its contents as of `seq`, with what it takes to check its tables. */
export interface BaseRef {
  readonly key: string;
  readonly seq: number;
  readonly size: number;
  readonly metaOffset: number;
  readonly metaCrc: number;
}

const EntrySchema = z.tuple([
  z.number().int().nonnegative(),
  z.string().min(1),
  z.number().int().nonnegative(),
  z.number().int().positive(),
  z.number().int().nonnegative(),
  z.number().int().nonnegative().max(0xffff_ffff),
]);
const PageSchema = z.object({ page: z.number().int().nonnegative(), entries: z.array(EntrySchema) });

export function pageOf(extent: number): number {
  return Math.floor(extent / EXTENTS_PER_PAGE);
}

/** The page's object, or undefined when none of its extents has a base (the page is dropped). */
export function encodePage(page: number, bases: ReadonlyMap<number, BaseRef>): { body: Buffer; crc: number } | undefined {
  const entries: z.infer<typeof EntrySchema>[] = [];
  const first = page * EXTENTS_PER_PAGE;
  for (let i = first; i < first + EXTENTS_PER_PAGE; i++) {
    const b = bases.get(i);
    if (b !== undefined) entries.push([i, b.key, b.seq, b.size, b.metaOffset, b.metaCrc]);
  }
  if (entries.length === 0) return undefined;
  const body = Buffer.from(JSON.stringify({ page, entries }));
  return { body, crc: crc32c(body) };
}

export function parsePage(body: Buffer, expectedCrc: number, page: number, where: string): Map<number, BaseRef> {
  if (crc32c(body) !== expectedCrc) throw new DataCorruptError(`${where}: index page fails its CRC32C`);
  let parsed;
  try {
    parsed = PageSchema.safeParse(JSON.parse(body.toString('utf8')));
  } catch (cause) {
    throw new DataCorruptError(`${where}: index page is not JSON`, { cause });
  }
  if (!parsed.success || parsed.data.page !== page) throw new DataCorruptError(`${where}: not index page ${page}`);
  const out = new Map<number, BaseRef>();
  for (const [extent, key, seq, size, metaOffset, metaCrc] of parsed.data.entries) {
    if (pageOf(extent) !== page) throw new DataCorruptError(`${where}: extent ${extent} does not belong to page ${page}`);
    out.set(extent, { key, seq, size, metaOffset, metaCrc });
  }
  return out;
}
