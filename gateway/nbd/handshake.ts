import type { Logger } from 'pino';
import { formatSize } from '../../shared/units.js';
import type { AccessMode, AccessPolicy } from './access.js';
import { encodeOptionReply, writeUInt64 } from './reply-encoding.js';
import {
  BASE_ALLOCATION,
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

/** `off`: no STARTTLS. `on`: TLS at the client's choice. `require`: no option but STARTTLS before TLS. */
export type TlsMode = 'off' | 'on' | 'require';

/** Who the client proved to be during the TLS handshake. */
export interface TlsPeer {
  /** The PSK identity or the verified client certificate's common name; undefined for neither. */
  readonly identity: string | undefined;
  readonly method: 'psk' | 'x509';
}

/** What negotiation needs from the connection. */
export interface HandshakeIo {
  /** See HandshakeInput.read. */
  read(size: number, atBoundary?: boolean): Promise<Buffer>;
  skip(size: number): Promise<void>;
  /** Must not throw when the socket is already gone (ABORT replies race the client's close). */
  write(data: Buffer): void;
  /**
   * Called after NBD_REP_ACK to NBD_OPT_STARTTLS: runs the TLS handshake on the connection, after
   * which read and write carry TLS. Rejects (and the connection closes) when the handshake fails.
   */
  startTls(): Promise<TlsPeer>;
}

/** The rules negotiation applies; read once per option, so a reload takes effect for the next one. */
export interface NegotiationPolicy {
  readonly registry: ExportRegistry;
  readonly tls: () => TlsMode;
  readonly access: () => AccessPolicy;
}

/** What the client and server agreed on for the transmission phase. */
export interface Session {
  readonly export: NbdExport;
  /** The export is read-only, or the client's identity may only read it. */
  readonly readOnly: boolean;
  readonly structuredReplies: boolean;
  /** The id under which base:allocation was selected, undefined when it was not. */
  readonly allocationContext: number | undefined;
  readonly tls: TlsPeer | undefined;
}

export type HandshakeResult = { readonly kind: 'transmission'; readonly session: Session } | { readonly kind: 'aborted' };

const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES;
const KNOWN_CLIENT_FLAGS = ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES;
/** NBD_INFO_BLOCK_SIZE minimum: the volume accepts any alignment (it reads, modifies, writes). */
const MINIMUM_BLOCK_SIZE = 1;
/** The id base:allocation gets when selected: transient per connection, any non-zero value does. */
const ALLOCATION_CONTEXT_ID = 1;

/** Transmission flags of `exp` as this client will use it. */
export function transmissionFlags(
  exp: NbdExport,
  access: { readonly readOnly: boolean; readonly structuredReplies: boolean } = { readOnly: false, structuredReplies: false },
): number {
  let flags =
    TransmissionFlag.HAS_FLAGS |
    TransmissionFlag.SEND_FLUSH |
    TransmissionFlag.SEND_FUA |
    TransmissionFlag.SEND_TRIM |
    TransmissionFlag.SEND_WRITE_ZEROES |
    TransmissionFlag.SEND_FAST_ZERO |
    TransmissionFlag.SEND_CACHE;
  if (exp.readOnly || access.readOnly) flags |= TransmissionFlag.READ_ONLY;
  if (exp.canMultiConn) flags |= TransmissionFlag.CAN_MULTI_CONN;
  // Every READ is answered with one data chunk, so "do not fragment" always holds.
  if (access.structuredReplies) flags |= TransmissionFlag.SEND_DF;
  return flags;
}

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

function greeting(): Buffer {
  const message = Buffer.allocUnsafe(18);
  INIT_PASSWD.copy(message, 0);
  message.writeBigUInt64BE(IHAVEOPT, 8);
  message.writeUInt16BE(SERVER_HANDSHAKE_FLAGS, 16);
  return message;
}

function infoExport(exp: NbdExport, flags: number): Buffer {
  const payload = Buffer.allocUnsafe(12);
  payload.writeUInt16BE(Info.EXPORT, 0);
  writeUInt64(payload, exp.size, 2);
  payload.writeUInt16BE(flags, 10);
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
  const description = limitedString(exportDescription(exp));
  const payload = Buffer.allocUnsafe(4 + name.length + description.length);
  payload.writeUInt32BE(name.length, 0);
  name.copy(payload, 4);
  description.copy(payload, 4 + name.length);
  return payload;
}

function metaContextEntry(id: number, name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  const payload = Buffer.allocUnsafe(4 + bytes.length);
  payload.writeUInt32BE(id, 0);
  bytes.copy(payload, 4);
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

interface MetaContextRequest {
  readonly name: string;
  readonly queries: readonly string[];
}

/** Parses NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data, or returns why it is invalid. */
function parseMetaContextRequest(data: Buffer): MetaContextRequest | string {
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
function selectsAllocation(query: string, listing: boolean): boolean {
  return query === BASE_ALLOCATION || (listing && query === 'base:');
}

function quoted(name: string): string {
  return JSON.stringify(name.length > 256 ? `${name.slice(0, 256)}…` : name);
}

/** The export a client asked for and its access to it, or the option reply that refuses it. */
type Resolution =
  | { readonly ok: true; readonly export: NbdExport; readonly mode: AccessMode }
  | { readonly ok: false; readonly reply: number; readonly message: string };

/**
 * Fixed newstyle negotiation up to the transmission phase. Throws ProtocolError when the client
 * breaks a rule that leaves closing the connection as the only answer.
 */
export async function negotiate(io: HandshakeIo, policy: NegotiationPolicy, log: Logger): Promise<HandshakeResult> {
  io.write(greeting());

  const clientFlags = (await io.read(4, true)).readUInt32BE(0);
  if ((clientFlags & ~KNOWN_CLIENT_FLAGS) !== 0 || (clientFlags & ClientFlag.C_FIXED_NEWSTYLE) === 0) {
    throw new ProtocolError(ProtocolErrorReason.BadClientFlags, `client flags 0x${clientFlags.toString(16)}`);
  }
  const noZeroes = (clientFlags & ClientFlag.C_NO_ZEROES) !== 0;

  let tls: TlsPeer | undefined;
  let structuredReplies = false;
  /** The export named by the last NBD_OPT_SET_META_CONTEXT and whether it selected base:allocation. */
  let metaContext: { readonly exportName: string; readonly allocation: boolean } | undefined;

  /** Looks `name` up and checks the client may open it; refusals are logged with the identity. */
  const resolve = (name: string): Resolution => {
    const exp = policy.registry.lookup(name);
    const access = policy.access();
    const mode = access.grant(tls?.identity, exp?.name ?? name);
    if (mode === undefined) {
      // In `on` mode, an access file makes every export TLS-only (SELECTIVETLS): say so before TLS.
      if (tls === undefined && access.needsIdentity && policy.tls() !== 'off') {
        return { ok: false, reply: Rep.ERR_TLS_REQD, message: 'start TLS and authenticate to open exports' };
      }
      log.warn(
        { identity: tls?.identity ?? null, export: name, tls: tls?.method ?? 'none' },
        'nbd access refused: the client may not open this export',
      );
      return { ok: false, reply: Rep.ERR_POLICY, message: `access to export ${quoted(name)} is not allowed for this client` };
    }
    // Checked after access, so a client learns nothing about exports it may not open.
    if (exp === undefined) return { ok: false, reply: Rep.ERR_UNKNOWN, message: `unknown export ${quoted(name)}` };
    return { ok: true, export: exp, mode };
  };

  const sessionFor = (exp: NbdExport, mode: AccessMode, requestedName: string): Session => ({
    export: exp,
    readOnly: exp.readOnly || mode === 'ro',
    structuredReplies,
    allocationContext: metaContext?.allocation === true && metaContext.exportName === requestedName ? ALLOCATION_CONTEXT_ID : undefined,
    tls,
  });

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

    const reply = (type: number, payload?: Buffer): void => {
      io.write(encodeOptionReply(option, type, payload));
    };
    const replyError = (type: number, message: string): void => {
      reply(type, limitedString(message));
    };
    /** Options that carry no data refuse some (skipped unread) with NBD_REP_ERR_INVALID. */
    const refusedData = async (name: string): Promise<boolean> => {
      if (length === 0) return false;
      await io.skip(length);
      replyError(Rep.ERR_INVALID, `${name} takes no data`);
      return true;
    };

    // FORCEDTLS: before TLS only STARTTLS and ABORT are served; EXPORT_NAME cannot be refused, so it ends the session.
    if (tls === undefined && policy.tls() === 'require' && option !== Opt.STARTTLS && option !== Opt.ABORT) {
      if (option === Opt.EXPORT_NAME) {
        throw new ProtocolError(ProtocolErrorReason.TlsRequired, 'NBD_OPT_EXPORT_NAME before TLS');
      }
      await io.skip(length);
      replyError(Rep.ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
      continue;
    }

    switch (option) {
      case Opt.STARTTLS: {
        if (await refusedData('NBD_OPT_STARTTLS')) continue;
        if (policy.tls() === 'off') {
          replyError(Rep.ERR_POLICY, 'TLS is not enabled on this server');
          continue;
        }
        if (tls !== undefined) {
          replyError(Rep.ERR_INVALID, 'TLS is already negotiated');
          continue;
        }
        reply(Rep.ACK);
        tls = await io.startTls();
        // The spec forbids keeping state negotiated in clear text.
        structuredReplies = false;
        metaContext = undefined;
        log.debug({ identity: tls.identity ?? null, method: tls.method }, 'nbd TLS established');
        continue;
      }

      case Opt.EXPORT_NAME: {
        const name = (await io.read(length)).toString('utf8');
        const resolution = resolve(name);
        if (!resolution.ok) {
          throw new ProtocolError(
            resolution.reply === Rep.ERR_UNKNOWN ? ProtocolErrorReason.UnknownExport : ProtocolErrorReason.AccessDenied,
            `NBD_OPT_EXPORT_NAME ${quoted(name)}: ${resolution.message}`,
          );
        }
        const session = sessionFor(resolution.export, resolution.mode, name);
        const message = Buffer.alloc(noZeroes ? 10 : 10 + EXPORT_NAME_ZEROES);
        writeUInt64(message, resolution.export.size, 0);
        message.writeUInt16BE(transmissionFlags(resolution.export, session), 8);
        io.write(message);
        return { kind: 'transmission', session };
      }

      case Opt.INFO:
      case Opt.GO: {
        const request = parseInfoRequest(await io.read(length));
        if (typeof request === 'string') {
          replyError(Rep.ERR_INVALID, request);
          continue;
        }
        const resolution = resolve(request.name);
        if (!resolution.ok) {
          replyError(resolution.reply, resolution.message);
          continue;
        }
        const exp = resolution.export;
        const session = sessionFor(exp, resolution.mode, request.name);
        reply(Rep.INFO, infoExport(exp, transmissionFlags(exp, session)));
        reply(Rep.INFO, infoBlockSize(exp));
        if (request.wantsName) reply(Rep.INFO, infoString(Info.NAME, exp.name));
        if (request.wantsDescription) reply(Rep.INFO, infoString(Info.DESCRIPTION, exportDescription(exp)));
        reply(Rep.ACK);
        if (option === Opt.GO) return { kind: 'transmission', session };
        continue;
      }

      case Opt.LIST: {
        if (await refusedData('NBD_OPT_LIST')) continue;
        const access = policy.access();
        for (const exp of policy.registry.list()) {
          if (access.grant(tls?.identity, exp.name) !== undefined) reply(Rep.SERVER, serverEntry(exp));
        }
        reply(Rep.ACK);
        continue;
      }

      case Opt.STRUCTURED_REPLY: {
        if (await refusedData('NBD_OPT_STRUCTURED_REPLY')) continue;
        structuredReplies = true;
        reply(Rep.ACK);
        continue;
      }

      case Opt.LIST_META_CONTEXT:
      case Opt.SET_META_CONTEXT: {
        const setting = option === Opt.SET_META_CONTEXT;
        // A failed SET still replaces the earlier selection.
        if (setting) metaContext = undefined;
        const request = parseMetaContextRequest(await io.read(length));
        if (typeof request === 'string') {
          replyError(Rep.ERR_INVALID, request);
          continue;
        }
        if (!structuredReplies) {
          replyError(Rep.ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY first');
          continue;
        }
        const resolution = resolve(request.name);
        if (!resolution.ok) {
          replyError(resolution.reply, resolution.message);
          continue;
        }
        // No query: LIST names every context, SET selects none.
        const allocation = request.queries.length === 0 ? !setting : request.queries.some((query) => selectsAllocation(query, !setting));
        if (allocation) reply(Rep.META_CONTEXT, metaContextEntry(setting ? ALLOCATION_CONTEXT_ID : 0, BASE_ALLOCATION));
        if (setting) metaContext = { exportName: request.name, allocation };
        reply(Rep.ACK);
        continue;
      }

      case Opt.ABORT:
        // The spec asks servers to ignore data sent with ABORT rather than reject it.
        await io.skip(length);
        reply(Rep.ACK);
        return { kind: 'aborted' };

      default:
        // Extended headers are not offered.
        await io.skip(length);
        replyError(Rep.ERR_UNSUP, `option ${option} is not supported`);
        continue;
    }
  }
  throw new ProtocolError(ProtocolErrorReason.TooManyOptions, `more than ${MAX_OPTIONS} options`);
}
