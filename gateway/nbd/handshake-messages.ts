// The handshake's fixed messages and option payloads: the greeting, NBD_INFO and NBD_REP_SERVER /
// META_CONTEXT replies built, NBD_OPT_INFO/GO and META_CONTEXT requests parsed. negotiate() in
// handshake.ts decides which to send.
import { formatSize } from '../../shared/units.js';
import { writeUInt64 } from './reply-encoding.js';
import { BASE_ALLOCATION, HandshakeFlag, IHAVEOPT, INIT_PASSWD, Info, MAX_BLOCK_SIZE, MAX_STRING_LENGTH } from './constants.js';
import type { NbdExport } from './export.js';

const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES;
/** NBD_INFO_BLOCK_SIZE minimum: the volume accepts any alignment (it reads, modifies, writes). */
const MINIMUM_BLOCK_SIZE = 1;

/**
 * What clients are told about an export: its name and size, nothing about where it is stored
 * (the store location or bucket is none of a client's business).
 */
export function exportDescription(exp: NbdExport): string {
  return `Holdfast volume ${exp.name}, ${formatSize(exp.size)}`;
}

/** UTF-8 bytes of `text` cut to the spec's string limit without splitting a character. */
export function limitedString(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= MAX_STRING_LENGTH) return bytes;
  let end = MAX_STRING_LENGTH;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

export function greeting(): Buffer {
  const message = Buffer.allocUnsafe(18);
  INIT_PASSWD.copy(message, 0);
  message.writeBigUInt64BE(IHAVEOPT, 8);
  message.writeUInt16BE(SERVER_HANDSHAKE_FLAGS, 16);
  return message;
}

export function infoExport(exp: NbdExport, flags: number): Buffer {
  const payload = Buffer.allocUnsafe(12);
  payload.writeUInt16BE(Info.EXPORT, 0);
  writeUInt64(payload, exp.size, 2);
  payload.writeUInt16BE(flags, 10);
  return payload;
}

export function infoBlockSize(exp: NbdExport): Buffer {
  const payload = Buffer.allocUnsafe(14);
  payload.writeUInt16BE(Info.BLOCK_SIZE, 0);
  payload.writeUInt32BE(MINIMUM_BLOCK_SIZE, 2);
  payload.writeUInt32BE(exp.preferredBlockSize, 6);
  payload.writeUInt32BE(MAX_BLOCK_SIZE, 10);
  return payload;
}

export function infoString(type: number, text: string): Buffer {
  const bytes = limitedString(text);
  const payload = Buffer.allocUnsafe(2 + bytes.length);
  payload.writeUInt16BE(type, 0);
  bytes.copy(payload, 2);
  return payload;
}

export function serverEntry(exp: NbdExport): Buffer {
  const name = Buffer.from(exp.name, 'utf8');
  const description = limitedString(exportDescription(exp));
  const payload = Buffer.allocUnsafe(4 + name.length + description.length);
  payload.writeUInt32BE(name.length, 0);
  name.copy(payload, 4);
  description.copy(payload, 4 + name.length);
  return payload;
}

export function metaContextEntry(id: number, name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  const payload = Buffer.allocUnsafe(4 + bytes.length);
  payload.writeUInt32BE(id, 0);
  bytes.copy(payload, 4);
  return payload;
}

export interface InfoRequest {
  readonly name: string;
  readonly wantsName: boolean;
  readonly wantsDescription: boolean;
}

/** Parses NBD_OPT_INFO / NBD_OPT_GO data, or returns why it is invalid. */
export function parseInfoRequest(data: Buffer): InfoRequest | string {
  if (data.length < 6) return 'option data shorter than 6 bytes';
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return 'export name length exceeds the option data';
  const nameBytes = data.subarray(4, 4 + nameLength);
  if (nameBytes.includes(0)) return 'export name contains NUL';
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + 2 * count) return 'number of information requests does not match the option length';
  let wantsName = false;
  let wantsDescription = false;
  for (let i = 0; i < count; i++) {
    const type = data.readUInt16BE(6 + nameLength + 2 * i);
    if (type === Info.NAME) wantsName = true;
    if (type === Info.DESCRIPTION) wantsDescription = true;
  }
  return { name: nameBytes.toString('utf8'), wantsName, wantsDescription };
}

export interface MetaContextRequest {
  readonly name: string;
  readonly queries: readonly string[];
}

/** Parses NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data, or returns why it is invalid. */
export function parseMetaContextRequest(data: Buffer): MetaContextRequest | string {
  if (data.length < 8) return 'option data shorter than 8 bytes';
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8 || nameLength > MAX_STRING_LENGTH) return 'export name length exceeds the option data';
  const name = data.subarray(4, 4 + nameLength);
  let at = 4 + nameLength;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return 'number of queries exceeds the option data';
    const length = data.readUInt32BE(at);
    at += 4;
    if (length > data.length - at || length > MAX_STRING_LENGTH) return 'query length exceeds the option data';
    queries.push(data.subarray(at, at + length).toString('utf8'));
    at += length;
  }
  if (at !== data.length) return 'option data longer than its queries';
  return { name: name.toString('utf8'), queries };
}

/** Whether a query names base:allocation; `listing` also accepts the namespace alone as a wildcard. */
export function selectsAllocation(query: string, listing: boolean): boolean {
  return query === BASE_ALLOCATION || (listing && query === 'base:');
}

export function quoted(name: string): string {
  return JSON.stringify(name.length > 256 ? `${name.slice(0, 256)}…` : name);
}
