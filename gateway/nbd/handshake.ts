import type { Logger } from 'pino';
import type { AccessMode, AccessPolicy } from './access.js';
import { encodeOptionReply, writeUInt64 } from './reply-encoding.js';
import {
  BASE_ALLOCATION,
  ClientFlag,
  EXPORT_NAME_ZEROES,
  IHAVEOPT,
  Info,
  MAX_OPTION_LENGTH,
  MAX_OPTIONS,
  OPTION_HEADER_SIZE,
  Opt,
  Rep,
  TransmissionFlag,
} from './constants.js';
import { ProtocolError, ProtocolErrorReason } from './errors.js';
import {
  exportDescription,
  limitedString,
  greeting,
  infoExport,
  infoBlockSize,
  infoString,
  serverEntry,
  metaContextEntry,
  parseInfoRequest,
  parseMetaContextRequest,
  selectsAllocation,
  quoted,
} from './handshake-messages.js';
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

const KNOWN_CLIENT_FLAGS = ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES;
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
