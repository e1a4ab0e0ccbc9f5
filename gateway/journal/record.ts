import { crc32c } from '@node-rs/crc32';
import { crc32cCombine } from '../util/crc32c-combine.js';

/**
 * On-disk layout of one journal record. Little-endian, fixed 40-byte header followed by the
 * payload (WRITE only). The checksum covers everything after itself, so a torn or bit-flipped
 * record is recognised on replay.
 *
 *   0  u32 magic 'HFJR'
 *   4  u32 crc32c of bytes 8 .. end of payload
 *   8  u32 seq (high 32 bits)      12 u32 seq (low 32 bits)
 *  16  u8  kind (1 write, 2 zero)  17..19 reserved, zero
 *  20  u32 offset high             24 u32 offset low
 *  28  u32 length (bytes covered on the volume)
 *  32  u32 payload length (== length for a write, 0 for a zero record)
 *  36  u32 reserved, zero
 */
export const RECORD_MAGIC = 0x48464a52;
export const RECORD_HEADER_SIZE = 40;

export const RecordKind = { Write: 1, Zero: 2 } as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

const TWO_32 = 0x1_0000_0000;

export interface RecordHeader {
  readonly seq: number;
  readonly kind: RecordKind;
  readonly offset: number;
  readonly length: number;
  readonly payloadLength: number;
}

/**
 * The record's checksum, from its header and its payload's own CRC32C: the same value as one CRC over
 * both, and the payload's CRC is then known by itself too (a delta block that is one 4 KiB record's
 * payload takes it as its block CRC, data-object.ts).
 */
function recordCrc(header: Buffer, at: number, payloadCrc: number, payloadLength: number): number {
  return crc32cCombine(crc32c(header.subarray(at + 8, at + RECORD_HEADER_SIZE)), payloadCrc, payloadLength);
}

/**
 * Writes the header for `rec` at `at` in `buf`; `payload` is only read for the checksum. Returns the
 * payload's CRC32C (0 for none).
 */
export function encodeRecordHeader(buf: Buffer, at: number, rec: RecordHeader, payload: Buffer | undefined): number {
  buf.writeUInt32LE(RECORD_MAGIC, at);
  buf.writeUInt32LE(Math.floor(rec.seq / TWO_32), at + 8);
  buf.writeUInt32LE(rec.seq % TWO_32, at + 12);
  buf.writeUInt32LE(rec.kind, at + 16);
  buf.writeUInt32LE(Math.floor(rec.offset / TWO_32), at + 20);
  buf.writeUInt32LE(rec.offset % TWO_32, at + 24);
  buf.writeUInt32LE(rec.length, at + 28);
  buf.writeUInt32LE(rec.payloadLength, at + 32);
  buf.writeUInt32LE(0, at + 36);
  const payloadCrc = payload === undefined ? 0 : crc32c(payload);
  buf.writeUInt32LE(recordCrc(buf, at, payloadCrc, payload?.length ?? 0), at + 4);
  return payloadCrc;
}

export type HeaderCheck =
  { readonly ok: true; readonly header: RecordHeader } | { readonly ok: false; readonly reason: 'bad-magic' | 'bad-kind' | 'bad-length' };

/** Parses the fixed header at `at`; the checksum is verified separately once the payload is read. */
export function decodeRecordHeader(buf: Buffer, at: number, maxPayload: number): HeaderCheck {
  if (buf.readUInt32LE(at) !== RECORD_MAGIC) return { ok: false, reason: 'bad-magic' };
  const kind = buf.readUInt8(at + 16);
  if (kind !== RecordKind.Write && kind !== RecordKind.Zero) return { ok: false, reason: 'bad-kind' };
  const length = buf.readUInt32LE(at + 28);
  const payloadLength = buf.readUInt32LE(at + 32);
  const expectedPayload = kind === RecordKind.Write ? length : 0;
  if (payloadLength !== expectedPayload || payloadLength > maxPayload) return { ok: false, reason: 'bad-length' };
  return {
    ok: true,
    header: {
      seq: buf.readUInt32LE(at + 8) * TWO_32 + buf.readUInt32LE(at + 12),
      kind,
      offset: buf.readUInt32LE(at + 20) * TWO_32 + buf.readUInt32LE(at + 24),
      length,
      payloadLength,
    },
  };
}

/** The payload's CRC32C when the stored checksum matches header bytes 8..40 plus the payload; -1 when it does not. */
export function checkedPayloadCrc(header: Buffer, at: number, payload: Buffer): number {
  const payloadCrc = crc32c(payload);
  return recordCrc(header, at, payloadCrc, payload.length) === header.readUInt32LE(at + 4) ? payloadCrc : -1;
}
