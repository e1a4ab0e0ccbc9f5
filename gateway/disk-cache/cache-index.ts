/**
 * The disk cache's index file: which objects the cache directory holds and which of their blocks,
 * so that a restarted gateway finds its cache warm. Written whole (atomically) now and then and at a
 * clean stop; a stale or lost index costs refetches, never wrong bytes, because every byte read from
 * the cache is checked against the object's CRCs anyway.
 *
 *   header (32 B): magic 'HFDC' | version | entry count | reserved | first 16 bytes of SHA-256(store location)
 *   entry:         key length (u16) | key (UTF-8) | size (u64) | metaOffset (u64) | metaCrc | fetches
 *                  | flags (bit 0: tables held) | priority above the clock (f64) | block bitmap
 *   trailer:       CRC32C of everything before it
 */
import { crc32c } from '@node-rs/crc32';
import { createHash } from 'node:crypto';
import type { ObjectRef } from '../image/object-reader.js';

const MAGIC = 0x43444648; // 'HFDC' little-endian
const VERSION = 1;
const HEADER = 32;
const TABLES_FLAG = 1;

export interface IndexedEntry {
  readonly ref: ObjectRef;
  readonly present: Uint8Array;
  readonly tables: boolean;
  readonly fetches: number;
  /** Priority relative to the cache's clock when the index was written. */
  readonly priority: number;
}

/** Identifies the store the cached objects came from: a cache directory never serves another store's keys. */
export function storeFingerprint(location: string): Buffer {
  return createHash('sha256').update(location).digest().subarray(0, 16);
}

export function encodeIndex(store: Buffer, entries: readonly IndexedEntry[]): Buffer {
  const keyed = entries.map((e) => ({ e, key: Buffer.from(e.ref.key, 'utf8') }));
  let size = HEADER + 4;
  for (const { e, key } of keyed) size += 2 + key.length + 36 + e.present.length;
  const buf = Buffer.alloc(size);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(VERSION, 4);
  buf.writeUInt32LE(entries.length, 8);
  store.copy(buf, 16, 0, 16);
  let at = HEADER;
  for (const { e, key } of keyed) {
    buf.writeUInt16LE(key.length, at);
    key.copy(buf, at + 2);
    at += 2 + key.length;
    buf.writeBigUInt64LE(BigInt(e.ref.size), at);
    buf.writeBigUInt64LE(BigInt(e.ref.metaOffset), at + 8);
    buf.writeUInt32LE(e.ref.metaCrc, at + 16);
    buf.writeUInt32LE(Math.min(e.fetches, 0xffff_ffff), at + 20);
    buf.writeUInt32LE(e.tables ? TABLES_FLAG : 0, at + 24);
    buf.writeDoubleLE(e.priority, at + 28);
    at += 36;
    buf.set(e.present, at);
    at += e.present.length;
  }
  buf.writeUInt32LE(crc32c(buf.subarray(0, at)), at);
  return buf;
}

/** The entries, or undefined when the file is not an intact index of this store's cache. */
export function decodeIndex(buf: Buffer, store: Buffer, bitmapBytes: (metaOffset: number) => number): IndexedEntry[] | undefined {
  if (buf.length < HEADER + 4) return undefined;
  if (crc32c(buf.subarray(0, buf.length - 4)) !== buf.readUInt32LE(buf.length - 4)) return undefined;
  if (buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== VERSION || !buf.subarray(16, 32).equals(store)) return undefined;
  const count = buf.readUInt32LE(8);
  const end = buf.length - 4;
  const entries: IndexedEntry[] = [];
  let at = HEADER;
  for (let i = 0; i < count; i++) {
    if (at + 2 > end) return undefined;
    const keyLength = buf.readUInt16LE(at);
    if (at + 2 + keyLength + 36 > end) return undefined;
    const key = buf.toString('utf8', at + 2, at + 2 + keyLength);
    at += 2 + keyLength;
    const ref = {
      key,
      size: Number(buf.readBigUInt64LE(at)),
      metaOffset: Number(buf.readBigUInt64LE(at + 8)),
      metaCrc: buf.readUInt32LE(at + 16),
    };
    const fetches = buf.readUInt32LE(at + 20);
    const tables = (buf.readUInt32LE(at + 24) & TABLES_FLAG) !== 0;
    const priority = buf.readDoubleLE(at + 28);
    at += 36;
    const n = bitmapBytes(ref.metaOffset);
    if (ref.metaOffset > ref.size || at + n > end || !Number.isFinite(priority)) return undefined;
    entries.push({ ref, present: buf.subarray(at, at + n), tables, fetches, priority });
    at += n;
  }
  return at === end ? entries : undefined;
}
