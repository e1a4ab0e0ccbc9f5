import type { Logger } from 'pino';
import { encodeOptionReply, writeUInt64 } from './codec.js';
import {
  ClientFlag,
  EXPORT_NAME_ZEROES,
  HandshakeFlag,
  IHAVEOPT,
  INIT_PASSWD,
  Info,
  MAX_BLOCK_SIZE,
  MAX_OPTION_LENGTH,
  MAX_OPTIONS,
  MAX_STRING_LENGTH,
  OPTION_HEADER_SIZE,
  Opt,
  Rep,
  TransmissionFlag,
} from './constants.js';
import { ProtocolError, ProtocolErrorReason } from './errors.js';
import type { ExportRegistry, NbdExport } from './export.js';

/** What negotiation needs from the connection. */
export interface HandshakeIo {
  /** See HandshakeInput.read. */
  read(size: number, atBoundary?: boolean): Promise<Buffer>;
  skip(size: number): Promise<void>;
  /** Must not throw when the socket is already gone (ABORT replies race the client's close). */
  write(data: Buffer): void;
}

export type HandshakeResult =
  | { readonly kind: 'transmission'; readonly export: NbdExport }
  | { readonly kind: 'aborted' };

const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES;
const KNOWN_CLIENT_FLAGS = ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES;
/** NBD_INFO_BLOCK_SIZE minimum: the volume accepts any alignment (it reads, modifies, writes). */
const MINIMUM_BLOCK_SIZE = 1;

/** Flags sent in NBD_INFO_EXPORT and in the NBD_OPT_EXPORT_NAME reply. */
export function transmissionFlags(exp: NbdExport): number {
  let flags =
    TransmissionFlag.HAS_FLAGS |
    TransmissionFlag.SEND_FLUSH |
    TransmissionFlag.SEND_FUA |
    TransmissionFlag.SEND_TRIM |
    TransmissionFlag.SEND_WRITE_ZEROES |
    TransmissionFlag.SEND_FAST_ZERO;
  if (exp.readOnly) flags |= TransmissionFlag.READ_ONLY;
  if (exp.canMultiConn) flags |= TransmissionFlag.CAN_MULTI_CONN;
  return flags;
}

/** UTF-8 bytes of `text` cut to the spec's string limit without splitting a character. */
export function limitedString(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= MAX_STRING_LENGTH) return bytes;
  let end = MAX_STRING_LENGTH;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

function greeting(): Buffer {
  const message = Buffer.allocUnsafe(18);
  INIT_PASSWD.copy(message, 0);
  message.writeBigUInt64BE(IHAVEOPT, 8);
  message.writeUInt16BE(SERVER_HANDSHAKE_FLAGS, 16);
  return message;
}

function infoExport(exp: NbdExport): Buffer {
  const payload = Buffer.allocUnsafe(12);
  payload.writeUInt16BE(Info.EXPORT, 0);
  writeUInt64(payload, exp.size, 2);
  payload.writeUInt16BE(transmissionFlags(exp), 10);
  return payload;
}

function infoBlockSize(exp: NbdExport): Buffer {
  const payload = Buffer.allocUnsafe(14);
  payload.writeUInt16BE(Info.BLOCK_SIZE, 0);
  payload.writeUInt32BE(MINIMUM_BLOCK_SIZE, 2);
  payload.writeUInt32BE(exp.preferredBlockSize, 6);
  payload.writeUInt32BE(MAX_BLOCK_SIZE, 10);
  return payload;
}

function infoString(type: number, text: string): Buffer {
  const bytes = limitedString(text);
  const payload = Buffer.allocUnsafe(2 + bytes.length);
  payload.writeUInt16BE(type, 0);
  bytes.copy(payload, 2);
  return payload;
}

function serverEntry(exp: NbdExport): Buffer {
  const name = Buffer.from(exp.name, 'utf8');
  const description = limitedString(exp.description);
  const payload = Buffer.allocUnsafe(4 + name.length + description.length);
  payload.writeUInt32BE(name.length, 0);
  name.copy(payload, 4);
  description.copy(payload, 4 + name.length);
  return payload;
}

interface InfoRequest {
  readonly name: string;
  readonly wantsName: boolean;
  readonly wantsDescription: boolean;
}

/** Parses NBD_OPT_INFO / NBD_OPT_GO data, or returns why it is invalid. */
function parseInfoRequest(data: Buffer): InfoRequest | string {
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

function quoted(name: string): string {
  return JSON.stringify(name.length > 256 ? `${name.slice(0, 256)}…` : name);
}

/**
 * Fixed newstyle negotiation up to the transmission phase. Throws ProtocolError when the client
 * breaks a rule that leaves closing the connection as the only answer.
 */
export async function negotiate(io: HandshakeIo, registry: ExportRegistry, log: Logger): Promise<HandshakeResult> {
  io.write(greeting());

  const clientFlags = (await io.read(4, true)).readUInt32BE(0);
  if ((clientFlags & ~KNOWN_CLIENT_FLAGS) !== 0 || (clientFlags & ClientFlag.C_FIXED_NEWSTYLE) === 0) {
    throw new ProtocolError(ProtocolErrorReason.BadClientFlags, `client flags 0x${clientFlags.toString(16)}`);
  }
  const noZeroes = (clientFlags & ClientFlag.C_NO_ZEROES) !== 0;

  for (let count = 0; count < MAX_OPTIONS; count++) {
    const header = await io.read(OPTION_HEADER_SIZE, true);
    const magic = header.readBigUInt64BE(0);
    if (magic !== IHAVEOPT) {
      throw new ProtocolError(ProtocolErrorReason.BadMagic, `option magic 0x${magic.toString(16)}`);
    }
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > MAX_OPTION_LENGTH) {
      throw new ProtocolError(ProtocolErrorReason.OptionTooLarge, `option ${option} announces ${length} bytes`);
    }
    log.debug({ option, length }, 'nbd option');

    const reply = (type: number, payload?: Buffer): void => io.write(encodeOptionReply(option, type, payload));
    const replyError = (type: number, message: string): void => reply(type, limitedString(message));

    switch (option) {
      case Opt.EXPORT_NAME: {
        const name = (await io.read(length)).toString('utf8');
        const exp = registry.lookup(name);
        if (exp === undefined) {
          throw new ProtocolError(ProtocolErrorReason.UnknownExport, `NBD_OPT_EXPORT_NAME ${quoted(name)}`);
        }
        const size = noZeroes ? 10 : 10 + EXPORT_NAME_ZEROES;
        const message = Buffer.alloc(size);
        writeUInt64(message, exp.size, 0);
        message.writeUInt16BE(transmissionFlags(exp), 8);
        io.write(message);
        return { kind: 'transmission', export: exp };
      }

      case Opt.INFO:
      case Opt.GO: {
        const request = parseInfoRequest(await io.read(length));
        if (typeof request === 'string') {
          replyError(Rep.ERR_INVALID, request);
          continue;
        }
        const exp = registry.lookup(request.name);
        if (exp === undefined) {
          replyError(Rep.ERR_UNKNOWN, `unknown export ${quoted(request.name)}`);
          continue;
        }
        reply(Rep.INFO, infoExport(exp));
        reply(Rep.INFO, infoBlockSize(exp));
        if (request.wantsName) reply(Rep.INFO, infoString(Info.NAME, exp.name));
        if (request.wantsDescription) reply(Rep.INFO, infoString(Info.DESCRIPTION, exp.description));
        reply(Rep.ACK);
        if (option === Opt.GO) return { kind: 'transmission', export: exp };
        continue;
      }

      case Opt.LIST: {
        if (length !== 0) {
          await io.skip(length);
          replyError(Rep.ERR_INVALID, 'NBD_OPT_LIST takes no data');
          continue;
        }
        for (const exp of registry.list()) reply(Rep.SERVER, serverEntry(exp));
        reply(Rep.ACK);
        continue;
      }

      case Opt.ABORT:
        // The spec asks servers to ignore data sent with ABORT rather than reject it.
        await io.skip(length);
        reply(Rep.ACK);
        return { kind: 'aborted' };

      default:
        // STRUCTURED_REPLY, STARTTLS, meta contexts and extended headers are not offered.
        await io.skip(length);
        replyError(Rep.ERR_UNSUP, `option ${option} is not supported`);
        continue;
    }
  }
  throw new ProtocolError(ProtocolErrorReason.TooManyOptions, `more than ${MAX_OPTIONS} options`);
}
