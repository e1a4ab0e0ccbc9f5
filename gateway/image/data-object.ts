/**
 * The layout shared by deltas and base extents (docs/volume-format-2.md, "Objects"):
 *
 *   data region | CRC32C per 4 KiB block of data | run table | 64-byte trailer
 *
 * Little-endian. A run is a byte range of the volume: its bytes are in the data region at
 * `dataOffset`, or it is a zero run with no data. The trailer's last field is the CRC32C of the
 * tables and the trailer before it ("meta CRC"); the head or index page keeps the same value, so a
 * reader checks the tables against what the head promised, and each data block against the tables.
 *
 * Trailer: 0 magic 'HFO2' | 4 version | 8 kind | 12 run count | 16 data length (u64)
 *          | 24 epoch | 28 reserved | 32 seqFrom (u64) | 40 seqTo (u64) | 48..59 reserved | 60 meta CRC
 * Run:     0 volume offset (u64) | 8 length (u64) | 16 data offset (u32) | 20 flags (bit 0: zero run)
 */
import { crc32c } from '@node-rs/crc32';
import { DataCorruptError } from '../../shared/errors.js';
import { viewOrNew } from '../util/buffer-pool.js';
import { crc32cCombine } from '../util/crc32c-combine.js';

export const CRC_BLOCK = 4096;
const MAGIC = 0x324f4648; // 'HFO2' little-endian
const VERSION = 1;
export const TRAILER_SIZE = 64;
export const RUN_SIZE = 24;
const ZERO_FLAG = 1;
const TWO_32 = 0x1_0000_0000;

export const ObjectKind = { Delta: 1, Base: 2 } as const;
export type ObjectKind = (typeof ObjectKind)[keyof typeof ObjectKind];

/** Runs of one object, column-wise: cheap to hold and to search. */
export interface Runs {
  readonly count: number;
  readonly offset: Float64Array;
  readonly length: Float64Array;
  /** -1 for a zero run. */
  readonly dataOffset: Float64Array;
}

export interface ObjectMeta {
  readonly kind: ObjectKind;
  readonly epoch: number;
  readonly seqFrom: number;
  readonly seqTo: number;
  readonly dataLength: number;
  /** One CRC32C per 4 KiB block of the data region (the last block may be short). */
  readonly crcs: Uint32Array;
  readonly runs: Runs;
}

export interface BuiltObject {
  readonly body: Buffer;
  readonly metaOffset: number;
  readonly metaCrc: number;
  /** CRC32C of the whole body, for the PUT: combined from the block CRCs, not a second pass over the data. */
  readonly bodyCrc: number;
}

export function objectSize(dataLength: number, runCount: number): number {
  return dataLength + 4 * Math.ceil(dataLength / CRC_BLOCK) + RUN_SIZE * runCount + TRAILER_SIZE;
}

/**
 * Builds one object in a single buffer of its final size: the caller adds runs in volume order and
 * copies each data run's bytes straight into `body` at the position `addRun` returns, so the data is
 * written once and never copied again before the PUT.
 */
export class DataObjectWriter {
  readonly body: Buffer;
  private runs = 0;
  private dataAt = 0;
  private readonly runTable: number;
  private readonly metaOffset: number;
  /** 1 for each data block whose CRC the caller gave (setBlockCrc); undefined while none is. */
  private knownCrcs: Uint8Array | undefined;

  constructor(
    private readonly kind: ObjectKind,
    private readonly dataLength: number,
    private readonly runCount: number,
    private readonly epoch: number,
    private readonly seqFrom: number,
    private readonly seqTo: number,
    /** A buffer to build the object in when it fits (one used again), instead of a new one. */
    into?: Buffer,
  ) {
    this.body = viewOrNew(into, objectSize(dataLength, runCount));
    this.metaOffset = dataLength;
    this.runTable = dataLength + 4 * Math.ceil(dataLength / CRC_BLOCK);
  }

  /** Adds the next run; returns where its data goes in `body` (-1 for a zero run). */
  addRun(offset: number, length: number, zero: boolean): number {
    if (this.runs >= this.runCount) throw new RangeError('more runs than announced');
    const at = this.runTable + this.runs * RUN_SIZE;
    writeU64(this.body, at, offset);
    writeU64(this.body, at + 8, length);
    const dataOffset = zero ? 0 : this.dataAt;
    this.body.writeUInt32LE(dataOffset, at + 16);
    this.body.writeUInt32LE(zero ? ZERO_FLAG : 0, at + 20);
    this.runs++;
    if (zero) return -1;
    this.dataAt += length;
    if (this.dataAt > this.dataLength) throw new RangeError('runs hold more data than announced');
    return dataOffset;
  }

  /**
   * The CRC32C of data block `block`, already known to the caller (a journal record's payload that is
   * the whole block): written to the table now and not computed again from the data. The data must be
   * copied in before the object is PUT, not before finish.
   */
  setBlockCrc(block: number, crc: number): void {
    this.knownCrcs ??= new Uint8Array(Math.ceil(this.dataLength / CRC_BLOCK));
    if (block < 0 || block >= this.knownCrcs.length) throw new RangeError(`no data block ${block}`);
    this.knownCrcs[block] = 1;
    this.body.writeUInt32LE(crc, this.metaOffset + 4 * block);
  }

  finish(): BuiltObject {
    if (this.runs !== this.runCount || this.dataAt !== this.dataLength)
      throw new RangeError('object finished before all its runs were added');
    const body = this.body;
    const known = this.knownCrcs;
    let dataCrc = 0;
    for (let start = 0, at = this.metaOffset; start < this.dataLength; start += CRC_BLOCK, at += 4) {
      const length = Math.min(CRC_BLOCK, this.dataLength - start);
      let crc: number;
      if (known?.[start / CRC_BLOCK] === 1) crc = body.readUInt32LE(at);
      else {
        crc = crc32c(body.subarray(start, start + length));
        body.writeUInt32LE(crc, at);
      }
      dataCrc = crc32cCombine(dataCrc, crc, length);
    }
    const t = body.length - TRAILER_SIZE;
    body.fill(0, t, body.length);
    body.writeUInt32LE(MAGIC, t);
    body.writeUInt32LE(VERSION, t + 4);
    body.writeUInt32LE(this.kind, t + 8);
    body.writeUInt32LE(this.runCount, t + 12);
    writeU64(body, t + 16, this.dataLength);
    body.writeUInt32LE(this.epoch, t + 24);
    writeU64(body, t + 32, this.seqFrom);
    writeU64(body, t + 40, this.seqTo);
    const metaCrc = crc32c(body.subarray(this.metaOffset, body.length - 4));
    body.writeUInt32LE(metaCrc, body.length - 4);
    const bodyCrc = crc32c(body.subarray(body.length - 4), crc32cCombine(dataCrc, metaCrc, body.length - 4 - this.metaOffset));
    return { body, metaOffset: this.metaOffset, metaCrc, bodyCrc };
  }
}

/**
 * Parses an object's tables from `meta` (its bytes from metaOffset to the end) and checks them
 * against the CRC the head promised. Anything that does not add up is corruption.
 */
export function parseMeta(meta: Buffer, expectedCrc: number, where: string): ObjectMeta {
  if (meta.length < TRAILER_SIZE) throw new DataCorruptError(`${where}: ${meta.length} bytes of tables, shorter than a trailer`);
  const crc = crc32c(meta.subarray(0, meta.length - 4));
  const stored = meta.readUInt32LE(meta.length - 4);
  if (crc !== expectedCrc || stored !== expectedCrc) {
    throw new DataCorruptError(
      `${where}: tables fail their CRC32C (computed ${hex(crc)}, stored ${hex(stored)}, expected ${hex(expectedCrc)})`,
    );
  }
  const t = meta.length - TRAILER_SIZE;
  if (meta.readUInt32LE(t) !== MAGIC || meta.readUInt32LE(t + 4) !== VERSION)
    throw new DataCorruptError(`${where}: not a Holdfast data object`);
  const kind = meta.readUInt32LE(t + 8);
  if (kind !== ObjectKind.Delta && kind !== ObjectKind.Base) throw new DataCorruptError(`${where}: unknown object kind ${kind}`);
  const runCount = meta.readUInt32LE(t + 12);
  const dataLength = readU64(meta, t + 16);
  const blocks = Math.ceil(dataLength / CRC_BLOCK);
  if (4 * blocks + RUN_SIZE * runCount + TRAILER_SIZE !== meta.length) throw new DataCorruptError(`${where}: table sizes do not add up`);
  const crcs = new Uint32Array(blocks);
  for (let i = 0; i < blocks; i++) crcs[i] = meta.readUInt32LE(4 * i);
  const runs = {
    count: runCount,
    offset: new Float64Array(runCount),
    length: new Float64Array(runCount),
    dataOffset: new Float64Array(runCount),
  };
  let end = -1;
  for (let i = 0, at = 4 * blocks; i < runCount; i++, at += RUN_SIZE) {
    const offset = readU64(meta, at);
    const length = readU64(meta, at + 8);
    const zero = (meta.readUInt32LE(at + 20) & ZERO_FLAG) !== 0;
    const dataOffset = meta.readUInt32LE(at + 16);
    if (offset < end || length <= 0 || (!zero && dataOffset + length > dataLength))
      throw new DataCorruptError(`${where}: run ${i} is out of order or out of bounds`);
    end = offset + length;
    runs.offset[i] = offset;
    runs.length[i] = length;
    runs.dataOffset[i] = zero ? -1 : dataOffset;
  }
  return { kind, epoch: meta.readUInt32LE(t + 24), seqFrom: readU64(meta, t + 32), seqTo: readU64(meta, t + 40), dataLength, crcs, runs };
}

/** The whole 4 KiB blocks of the data region that cover [from, from + length): what a reader fetches. */
export function blockSpan(from: number, length: number, dataLength: number): { start: number; end: number } {
  const start = Math.floor(from / CRC_BLOCK) * CRC_BLOCK;
  const end = Math.min(Math.ceil((from + length) / CRC_BLOCK) * CRC_BLOCK, dataLength);
  return { start, end };
}

/** Checks fetched data blocks (`bytes` starts at block-aligned `start`) against the CRC table. */
export function verifyBlocks(crcs: Uint32Array, dataLength: number, start: number, bytes: Buffer, where: string): void {
  const block = firstBadBlock(crcs, dataLength, start, bytes);
  if (block < 0) return;
  const from = block * CRC_BLOCK;
  throw new DataCorruptError(
    `${where}: data block ${block} (bytes ${from}..${Math.min(from + CRC_BLOCK, start + bytes.length)}) fails its CRC32C`,
  );
}

/** The first data block of `bytes` (starting at block-aligned `start`) that fails its CRC32C, or -1. */
export function firstBadBlock(crcs: Uint32Array, dataLength: number, start: number, bytes: Buffer): number {
  for (let at = 0; at < bytes.length; at += CRC_BLOCK) {
    const end = Math.min(at + CRC_BLOCK, bytes.length);
    if (start + end > dataLength || crc32c(bytes.subarray(at, end)) !== crcs[(start + at) / CRC_BLOCK]) return (start + at) / CRC_BLOCK;
  }
  return -1;
}

function writeU64(buf: Buffer, at: number, n: number): void {
  buf.writeUInt32LE(n % TWO_32, at);
  buf.writeUInt32LE(Math.floor(n / TWO_32), at + 4);
}

function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at + 4) * TWO_32 + buf.readUInt32LE(at);
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}
