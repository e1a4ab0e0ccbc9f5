/** What a request may ask, what it holds in memory until answered, and what an error reply says: one connection's rules, without its state. */
import type { NbdRequest } from './codec.js';
import { Cmd, CmdFlag, Errno, MAX_BLOCK_SIZE } from './constants.js';
import type { Session } from './handshake.js';

/** Command flags each command accepts. FUA is valid on every command once SEND_FUA is advertised. */
function allowedFlags(type: Cmd, structuredReplies: boolean): number {
  switch (type) {
    case Cmd.WRITE_ZEROES:
      return CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO;
    case Cmd.READ:
      return structuredReplies ? CmdFlag.FUA | CmdFlag.DF : CmdFlag.FUA;
    case Cmd.BLOCK_STATUS:
      return CmdFlag.FUA | CmdFlag.REQ_ONE;
    default:
      return CmdFlag.FUA;
  }
}

/** What a structured error reply tells a person, by error number. */
const ERROR_MESSAGES: Readonly<Record<Errno, string>> = {
  [Errno.OK]: '',
  [Errno.EPERM]: 'the export is read-only for this client',
  [Errno.EIO]: 'input/output error',
  [Errno.ENOMEM]: 'out of memory',
  [Errno.EINVAL]: 'invalid request',
  [Errno.ENOSPC]: 'no space left, or beyond the end of the export',
  [Errno.EOVERFLOW]: 'value too large',
  [Errno.ENOTSUP]: 'operation not supported',
  [Errno.ESHUTDOWN]: 'the server is shutting down',
};
export const ERROR_MESSAGE_BYTES = Object.fromEntries(
  Object.entries(ERROR_MESSAGES).map(([errno, text]) => [errno, Buffer.from(text, 'utf8')]),
) as Record<string, Buffer>;

/** What a request holds in memory until it is answered: its payload or its reply data. */
export function requestBytes(request: NbdRequest): number {
  if (request.error !== Errno.OK) return 0;
  switch (request.type) {
    case Cmd.READ:
    case Cmd.WRITE:
    case Cmd.CACHE:
      return request.length;
    default:
      return 0;
  }
}

/** Errno.OK for a request this session may run, else the error its reply carries (the NBD spec's choices). */
export function validateRequest(request: NbdRequest, session: Session, exportSize: number): Errno {
  const { type } = request;
  switch (type) {
    case Cmd.DISC:
      return Errno.OK;
    case Cmd.READ:
    case Cmd.WRITE:
    case Cmd.FLUSH:
    case Cmd.TRIM:
    case Cmd.WRITE_ZEROES:
    case Cmd.CACHE:
    case Cmd.BLOCK_STATUS:
      break;
    default:
      return Errno.EINVAL;
  }
  if ((request.flags & ~allowedFlags(type, session.structuredReplies)) !== 0) return Errno.EINVAL;
  if (type === Cmd.FLUSH) {
    return request.offset === 0 && request.length === 0 ? Errno.OK : Errno.EINVAL;
  }
  // Without a selected context there is nothing to report; with one, an answer needs a range.
  if (type === Cmd.BLOCK_STATUS && (session.allocationContext === undefined || request.length === 0)) return Errno.EINVAL;
  if ((type === Cmd.WRITE || type === Cmd.TRIM || type === Cmd.WRITE_ZEROES) && session.readOnly) return Errno.EPERM;
  // TRIM and WRITE_ZEROES carry no payload and are cheap journal records: any length is fine.
  if ((type === Cmd.READ || type === Cmd.WRITE || type === Cmd.CACHE) && request.length > MAX_BLOCK_SIZE) {
    return Errno.EINVAL;
  }
  if (request.offset + request.length > exportSize) {
    // The spec's answers: ENOSPC for writing past the end, EINVAL for reading or trimming there.
    return type === Cmd.WRITE || type === Cmd.WRITE_ZEROES ? Errno.ENOSPC : Errno.EINVAL;
  }
  return Errno.OK;
}
