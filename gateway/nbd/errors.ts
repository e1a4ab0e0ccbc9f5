import { HoldfastError, InvalidArgumentError, ReadOnlyError, RequestAbortedError } from '../../shared/errors.js';
import { isNoSpace } from '../util/classify-error.js';
import { Errno } from './constants.js';

/**
 * Why a connection was dropped. Each input the server refuses to parse further has its own reason
 * so that logs and stats can tell a confused client from a hostile one.
 */
export const ProtocolErrorReason = {
  /** Option or request magic is not the one the spec fixes: the stream is out of sync. */
  BadMagic: 'BadMagic',
  /** The peer closed its side in the middle of a handshake message or a request. */
  TruncatedFrame: 'TruncatedFrame',
  /** The peer closed its side between two handshake messages, before choosing an export. */
  ClosedDuringHandshake: 'ClosedDuringHandshake',
  /** An option announced more data than MAX_OPTION_LENGTH; it is not read. */
  OptionTooLarge: 'OptionTooLarge',
  /** Client flags lack FIXED_NEWSTYLE or carry a bit the server did not offer. */
  BadClientFlags: 'BadClientFlags',
  /** More than MAX_OPTIONS options in one negotiation. */
  TooManyOptions: 'TooManyOptions',
  /** Negotiation did not finish in time. */
  HandshakeTimeout: 'HandshakeTimeout',
  /** NBD_OPT_EXPORT_NAME named no export; that option cannot answer with an error. */
  UnknownExport: 'UnknownExport',
  /** NBD_OPT_EXPORT_NAME named an export the client may not open. */
  AccessDenied: 'AccessDenied',
  /** NBD_OPT_EXPORT_NAME before STARTTLS on a server that requires TLS. */
  TlsRequired: 'TlsRequired',
  /** The TLS handshake after NBD_OPT_STARTTLS failed (wrong key, untrusted certificate, garbage). */
  TlsHandshakeFailed: 'TlsHandshakeFailed',
  /** Bytes arrived behind NBD_OPT_STARTTLS before its reply: they cannot belong to the TLS handshake. */
  DataBeforeTls: 'DataBeforeTls',
} as const;

export type ProtocolErrorReason = (typeof ProtocolErrorReason)[keyof typeof ProtocolErrorReason];

/** Malformed or abusive input: the connection it arrived on is closed. */
export class ProtocolError extends HoldfastError {
  readonly reason: ProtocolErrorReason;

  constructor(reason: ProtocolErrorReason, message: string, options?: { cause?: unknown }) {
    super(`${reason}: ${message}`, options);
    this.reason = reason;
  }
}

/** The NBD error number a client receives when an export method fails with `err`. */
export function errnoFor(err: unknown): Errno {
  if (err instanceof ReadOnlyError) return Errno.EPERM;
  if (err instanceof InvalidArgumentError) return Errno.EINVAL;
  if (err instanceof RequestAbortedError) return Errno.ESHUTDOWN;
  if (isNoSpace(err)) return Errno.ENOSPC;
  return Errno.EIO;
}

/** An export broke the NbdExport contract (a READ returned the wrong number of bytes). */
export class ExportContractError extends HoldfastError {}
