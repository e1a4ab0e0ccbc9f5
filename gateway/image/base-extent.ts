/**
 * Base extents: one extent's contents as of a sequence number, as written by compaction, import and
 * the format 1 upgrade. All-zero 4 KiB blocks are left out, so a base is as sparse as its data and
 * `base:allocation` sees the holes; an all-zero extent still gets a (tiny) base, because a base is also
 * what says "no delta older than this applies here".
 */
import { CRC_BLOCK, DataObjectWriter, ObjectKind } from './data-object.js';
import type { BaseRef } from './index-page.js';
import type { ObjectMeta } from './data-object.js';

export function buildBaseExtent(
  content: Buffer | null,
  extentStart: number,
  key: string,
  epoch: number,
  seq: number,
  into?: Buffer,
): { body: Buffer; bodyCrc: number; ref: BaseRef } {
  const spans: Array<[number, number]> = [];
  if (content !== null) {
    for (let at = 0; at < content.length; at += CRC_BLOCK) {
      const end = Math.min(at + CRC_BLOCK, content.length);
      if (isAllZero(content, at, end)) continue;
      const last = spans[spans.length - 1];
      if (last !== undefined && last[1] === at) last[1] = end;
      else spans.push([at, end]);
    }
  }
  let dataLength = 0;
  for (const [s, t] of spans) dataLength += t - s;
  const writer = new DataObjectWriter(ObjectKind.Base, dataLength, spans.length, epoch, seq, seq, into);
  for (const [s, t] of spans) {
    const at = writer.addRun(extentStart + s, t - s, false);
    // Spans come only from content: there are none without it.
    content?.copy(writer.body, at, s, t);
  }
  const built = writer.finish();
  return {
    body: built.body,
    bodyCrc: built.bodyCrc,
    ref: { key, seq, size: built.body.length, metaOffset: built.metaOffset, metaCrc: built.metaCrc },
  };
}

/** True when buf[start, end) holds only zero bytes; compares eight bytes at a time where it can. */
export function isAllZero(buf: Buffer, start = 0, end = buf.length): boolean {
  let i = start;
  const aligned = (buf.byteOffset + i) % 8 === 0;
  if (aligned) {
    const words = Math.floor((end - i) / 8);
    const view = new BigUint64Array(buf.buffer, buf.byteOffset + i, words);
    for (let w = 0; w < words; w++) if (view[w] !== 0n) return false;
    i += words * 8;
  }
  for (; i < end; i++) if (buf[i] !== 0) return false;
  return true;
}

/** A span of the volume as `allocation` reports it: data, or a hole that reads as zeros. */
export interface AllocationSpan {
  readonly length: number;
  readonly hole: boolean;
}

/** The data and holes of a base extent between two offsets within the extent. */
export function baseSpans(meta: ObjectMeta, extentStart: number, s: number, t: number): AllocationSpan[] {
  const out: AllocationSpan[] = [];
  const { count, offset, length, dataOffset } = meta.runs;
  let pos = s;
  const base = extentStart;
  for (let i = 0; i < count && pos < t; i++) {
    const rs = (offset[i] ?? 0) - base;
    const re = rs + (length[i] ?? 0);
    if (re <= pos) continue;
    if (rs >= t) break;
    if (rs > pos) out.push({ length: rs - pos, hole: true });
    const to = Math.min(re, t);
    out.push({ length: to - Math.max(rs, pos), hole: (dataOffset[i] ?? -1) < 0 });
    pos = to;
  }
  if (pos < t) out.push({ length: t - pos, hole: true });
  return out;
}
