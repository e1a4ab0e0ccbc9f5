/**
 * Wire values of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md), named as in the spec
 * without the NBD_ prefix, plus the limits this server enforces.
 */

/** 'NBDMAGIC', the first 8 bytes a server sends. */
export const INIT_PASSWD = Buffer.from('NBDMAGIC', 'latin1');
/** 'IHAVEOPT': sent by the server after INIT_PASSWD and by the client before every option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** 64-bit wire integers (offsets) are read and written as two 32-bit halves; offsets stay below 2^53. */
export const TWO_POW_32 = 2 ** 32;
/** Magic of every option reply in fixed newstyle negotiation. */
export const REP_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_HEADER_SIZE = 16;
export const STRUCTURED_REPLY_HEADER_SIZE = 20;
export const OPTION_HEADER_SIZE = 16;
export const OPTION_REPLY_HEADER_SIZE = 20;
/** Reserved bytes after the NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was negotiated. */
export const EXPORT_NAME_ZEROES = 124;

export const HandshakeFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

export const ClientFlag = {
  C_FIXED_NEWSTYLE: 1 << 0,
  C_NO_ZEROES: 1 << 1,
} as const;

export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const REP_ERR = 0x80000000;

export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: REP_ERR + 1,
  ERR_POLICY: REP_ERR + 2,
  ERR_INVALID: REP_ERR + 3,
  ERR_PLATFORM: REP_ERR + 4,
  ERR_TLS_REQD: REP_ERR + 5,
  ERR_UNKNOWN: REP_ERR + 6,
  ERR_SHUTDOWN: REP_ERR + 7,
  ERR_BLOCK_SIZE_REQD: REP_ERR + 8,
  ERR_TOO_BIG: REP_ERR + 9,
} as const;

export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

export const TransmissionFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

/** A command type the spec defines. */
export type Cmd = (typeof Cmd)[keyof typeof Cmd];

const COMMAND_VALUES: ReadonlySet<number> = new Set(Object.values(Cmd));

/** `type` as a Cmd when the spec defines it, else undefined. */
export function knownCommand(type: number): Cmd | undefined {
  return COMMAND_VALUES.has(type) ? (type as Cmd) : undefined;
}

export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

/** Types of structured reply chunks. */
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;

export const ReplyFlag = {
  DONE: 1 << 0,
} as const;

/** Status flags of the base:allocation metadata context. */
export const AllocationState = {
  HOLE: 1 << 0,
  ZERO: 1 << 1,
} as const;

/** The one metadata context this server offers. */
export const BASE_ALLOCATION = 'base:allocation';

/** Error numbers of simple replies; the spec fixes these values whatever the host's errno. */
export const Errno = {
  OK: 0,
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export type Errno = (typeof Errno)[keyof typeof Errno];

/**
 * Largest READ or WRITE length accepted, advertised in NBD_INFO_BLOCK_SIZE. 32 MiB is the size the
 * spec says clients should stay within and that must not be treated as a denial of service.
 */
export const MAX_BLOCK_SIZE = 32 * 1024 * 1024;

/**
 * Option payloads longer than this close the connection unread. GO/INFO carry at most a 4096-byte
 * name plus a few info requests, so 64 KiB leaves room for options we merely skip.
 */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Options per connection before the server gives up on a client looping in negotiation. */
export const MAX_OPTIONS = 256;
/** The spec's upper bound on any string (export names, messages). */
export const MAX_STRING_LENGTH = 4096;

/** Commands counted separately in stats and named in logs; anything unknown is 'other'. */
export type CommandName = 'read' | 'write' | 'disc' | 'flush' | 'trim' | 'writeZeroes' | 'cache' | 'blockStatus' | 'other';

export function commandName(type: Cmd | undefined): CommandName {
  switch (type) {
    case Cmd.READ:
      return 'read';
    case Cmd.WRITE:
      return 'write';
    case Cmd.DISC:
      return 'disc';
    case Cmd.FLUSH:
      return 'flush';
    case Cmd.TRIM:
      return 'trim';
    case Cmd.WRITE_ZEROES:
      return 'writeZeroes';
    case Cmd.CACHE:
      return 'cache';
    case Cmd.BLOCK_STATUS:
      return 'blockStatus';
    default:
      return 'other';
  }
}
