// What a journal directory holds on disk: segment files (header, then records) named by writer epoch
// and number, and seal files; encoding a group commit's records, and scanning a segment on replay.
// The Journal (journal.ts, live-segments.ts) decides when to write, retire and seal; this module only
// knows the format.
import { readFile } from 'node:fs/promises';
import { elementAt } from '../../shared/checked.js';
import { JournalCorruptError } from '../../shared/errors.js';
import { RECORD_HEADER_SIZE, RECORD_MAGIC, RecordKind, checkedPayloadCrc, decodeRecordHeader, encodeRecordHeader } from './record.js';
import type { SegmentFile } from './segment-file.js';

export const SEGMENT_MAGIC = 0x48464a53;
export const SEGMENT_VERSION = 1;
export const SEGMENT_HEADER_SIZE = 16;
/** `<writer epoch, 8 hex>-<number, 16 digits>.seg`; format 1 journals have no epoch (read as epoch 0). */
export const SEGMENT_NAME = /^(?:([0-9a-f]{8})-)?(\d{16})\.seg$/;
/** `seal-<epoch>`: the highest sequence a later owner adopted from that epoch's segments. */
export const SEAL_NAME = /^seal-([0-9a-f]{8})$/;
export class Segment {
  /** Records in this segment that are durable and not yet released (uploaded). */
  live = 0;
  sealed = false;
  retired = false;
  constructor(
    readonly epoch: number,
    readonly no: number,
    readonly path: string,
    readonly file: SegmentFile,
    /** Bytes of the file that hold records (or were attempted), header included. */
    public size: number,
  ) {}
}

/**
 * One change owed to the object store. Until it is durable its payload is held here (it is queued
 * for the next group commit); afterwards it is read back from its segment file on demand, so that
 * the backlog lives on disk, not in memory.
 */
export interface JournalEntry {
  readonly seq: number;
  readonly kind: RecordKind;
  readonly offset: number;
  readonly length: number;
  data: Buffer | undefined;
  segment: Segment | undefined;
  payloadPosition: number;
  /**
   * CRC32C of the payload as it was appended: set when the record is encoded (or read back on
   * replay), -1 before. It vouches for the payload end to end: a delta block that is this payload
   * carries it, not a CRC of what the journal file gave back.
   */
  payloadCrc: number;
  durable: boolean;
  /** When it was appended (monotonic ms; 0 when replayed): how long it has waited for an upload. */
  readonly arrivedAt: number;
}

export function segmentName(epoch: number, no: number): string {
  return `${epoch.toString(16).padStart(8, '0')}-${String(no).padStart(16, '0')}.seg`;
}

/** The header a new segment starts with: magic, version, and its number (high and low 32 bits). */
export function encodeSegmentHeader(no: number): Buffer {
  const header = Buffer.alloc(SEGMENT_HEADER_SIZE);
  header.writeUInt32LE(SEGMENT_MAGIC, 0);
  header.writeUInt32LE(SEGMENT_VERSION, 4);
  header.writeUInt32LE(Math.floor(no / 0x1_0000_0000), 8);
  header.writeUInt32LE(no % 0x1_0000_0000, 12);
  return header;
}

export function sealName(epoch: number): string {
  return `seal-${epoch.toString(16).padStart(8, '0')}`;
}

export async function readSeal(path: string): Promise<number> {
  const text = await readFile(path, 'utf8');
  let maxSeq: unknown;
  try {
    maxSeq = (JSON.parse(text) as { maxSeq?: unknown }).maxSeq;
  } catch (cause) {
    throw new JournalCorruptError(`journal seal ${path} is not JSON`, { cause });
  }
  if (typeof maxSeq !== 'number' || !Number.isSafeInteger(maxSeq) || maxSeq < 0)
    throw new JournalCorruptError(`journal seal ${path} has no valid maxSeq`);
  return maxSeq;
}

/** The records of a batch as one writev: header, payload, header, payload ... */
export function encodeBatch(batch: readonly JournalEntry[]): { iov: Buffer[]; bytes: number } {
  let bytes = 0;
  const headers = Buffer.allocUnsafe(batch.length * RECORD_HEADER_SIZE);
  const iov: Buffer[] = [];
  for (let i = 0; i < batch.length; i++) {
    const e = elementAt(batch, i);
    const at = i * RECORD_HEADER_SIZE;
    const payloadLength = e.kind === RecordKind.Write ? e.length : 0;
    e.payloadCrc = encodeRecordHeader(headers, at, { seq: e.seq, kind: e.kind, offset: e.offset, length: e.length, payloadLength }, e.data);
    iov.push(headers.subarray(at, at + RECORD_HEADER_SIZE));
    if (e.data !== undefined && e.data.length > 0) iov.push(e.data);
    bytes += RECORD_HEADER_SIZE + (e.data?.length ?? 0);
  }
  return { iov, bytes };
}

/** Reads a segment's records, sets `segment.size` to the end of the last good record. */
export async function scanSegment(segment: Segment, maxPayload: number): Promise<JournalEntry[]> {
  const fileSize = await segment.file.size();
  const entries: JournalEntry[] = [];
  if (fileSize < SEGMENT_HEADER_SIZE) {
    segment.size = fileSize;
    return entries;
  }
  const head = Buffer.alloc(SEGMENT_HEADER_SIZE);
  await segment.file.read(head, 0, SEGMENT_HEADER_SIZE, 0);
  if (head.readUInt32LE(0) !== SEGMENT_MAGIC || head.readUInt32LE(4) !== SEGMENT_VERSION) {
    throw new JournalCorruptError(`${segment.path} is not a Holdfast journal segment (bad header)`);
  }
  const header = Buffer.alloc(RECORD_HEADER_SIZE);
  let pos = SEGMENT_HEADER_SIZE;
  while (pos < fileSize) {
    const bad = await readRecordAt(segment.file, pos, fileSize, header, maxPayload);
    if (typeof bad === 'string') {
      // A torn tail (crash mid-append, or the unsynced end of an abandoned segment) is expected and
      // dropped; a damaged record followed by good ones means the disk lost data we had synced.
      if (await anyGoodRecordAfter(segment.file, pos, fileSize, maxPayload)) {
        throw new JournalCorruptError(
          `journal segment ${segment.path}: record at byte ${pos} is corrupt (${bad}) and later records are intact`,
        );
      }
      break;
    }
    entries.push({
      seq: bad.seq,
      kind: bad.kind,
      offset: bad.offset,
      length: bad.length,
      data: undefined,
      segment,
      payloadPosition: pos + RECORD_HEADER_SIZE,
      payloadCrc: bad.payloadCrc,
      durable: true,
      arrivedAt: 0,
    });
    pos += RECORD_HEADER_SIZE + bad.payloadLength;
  }
  segment.size = Math.min(pos, fileSize);
  return entries;
}

export type ScannedRecord = { seq: number; kind: RecordKind; offset: number; length: number; payloadLength: number; payloadCrc: number };

export async function readRecordAt(
  file: SegmentFile,
  pos: number,
  fileSize: number,
  header: Buffer,
  maxPayload: number,
): Promise<ScannedRecord | string> {
  if (pos + RECORD_HEADER_SIZE > fileSize) return 'truncated header';
  await file.read(header, 0, RECORD_HEADER_SIZE, pos);
  const check = decodeRecordHeader(header, 0, maxPayload);
  if (!check.ok) return check.reason;
  const h = check.header;
  if (pos + RECORD_HEADER_SIZE + h.payloadLength > fileSize) return 'truncated payload';
  const payload = Buffer.allocUnsafe(h.payloadLength);
  await file.read(payload, 0, h.payloadLength, pos + RECORD_HEADER_SIZE);
  const payloadCrc = checkedPayloadCrc(header, 0, payload);
  if (payloadCrc < 0) return 'checksum mismatch';
  return { ...h, payloadCrc };
}

/**
 * Looks for an intact record anywhere after a damaged one. Records start on no fixed boundary,
 * so every byte position is tried; this runs only on the rare damaged segment.
 */
export async function anyGoodRecordAfter(file: SegmentFile, damagedAt: number, fileSize: number, maxPayload: number): Promise<boolean> {
  const length = fileSize - damagedAt;
  const rest = Buffer.allocUnsafe(length);
  await file.read(rest, 0, length, damagedAt);
  for (let at = 1; at + RECORD_HEADER_SIZE <= length; at++) {
    if (rest.readUInt32LE(at) !== RECORD_MAGIC) continue;
    const check = decodeRecordHeader(rest, at, maxPayload);
    if (!check.ok) continue;
    const end = at + RECORD_HEADER_SIZE + check.header.payloadLength;
    if (end > length) continue;
    if (checkedPayloadCrc(rest, at, rest.subarray(at + RECORD_HEADER_SIZE, end)) >= 0) return true;
  }
  return false;
}
