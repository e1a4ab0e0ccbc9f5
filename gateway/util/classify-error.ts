import { DataCorruptError, JournalIoError } from '../../shared/errors.js';
import type { ErrorClass } from '../../shared/events.js';

/**
 * What a failure is, read from its whole cause chain (a StoreError or JournalIoError wraps the SDK's
 * or the system's error): the class the hang policy decides on, and whether the client should hear
 * ENOSPC. One reading of errors for the hang engine and the NBD error mapping alike.
 */

const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'UND_ERR_SOCKET',
  'ERR_STREAM_PREMATURE_CLOSE',
]);
const TRANSIENT_NAMES = new Set([
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'InternalError',
  'ServiceUnavailable',
  'BadGateway',
  'GatewayTimeout',
  'NetworkingError',
  'AbortError',
]);
const DENIED_NAMES = new Set([
  'AccessDenied',
  'Forbidden',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'ExpiredTokenException',
  'TokenRefreshRequired',
  'CredentialsProviderError',
  'InvalidToken',
  'AllAccessDisabled',
  'AccountProblem',
]);
const MISSING_NAMES = new Set(['NoSuchBucket', 'NotFound', 'NoSuchVolume', 'VolumeNotFoundError']);
/** System error codes that mean "out of space", whatever layer saw them. */
const NO_SPACE_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG']);
const NO_SPACE_NAMES = new Set(['QuotaExceeded', 'EntityTooLarge']);
const IO_CODES = new Set(['EIO', 'EROFS', 'ESTALE', 'EBADF']);
const DENIED_CODES = new Set(['EACCES', 'EPERM']);

/** Guards against cause cycles. */
const MAX_CAUSE_DEPTH = 8;

interface ErrorFacts {
  readonly code: string | undefined;
  readonly name: string | undefined;
  readonly status: number | undefined;
}

/** The error and its causes, outermost first. */
export function causeChain(err: unknown): unknown[] {
  const out: unknown[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < MAX_CAUSE_DEPTH; depth++) {
    out.push(cur);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return out;
}

/**
 * Puts a failed storage operation (S3 call, local store, journal write or sync) in the class the
 * hang policy decides on. Unknown failures count as transient: holding is the safe default for a
 * storage system whose job is not to fail the guest, and the hang timeout bounds it. Corrupt data
 * comes first: waiting never mends it, so nothing else it may have caused matters.
 */
export function classifyError(err: unknown): ErrorClass {
  const chain = causeChain(err);
  if (chain.some((e) => e instanceof DataCorruptError)) return 'corrupt';
  const journal = chain.some((e) => e instanceof JournalIoError);
  for (const e of chain) {
    const f = facts(e);
    if (f.code !== undefined && NO_SPACE_CODES.has(f.code)) return 'no-space';
    if (f.name !== undefined && NO_SPACE_NAMES.has(f.name)) return 'no-space';
    if (f.code !== undefined && IO_CODES.has(f.code)) return journal ? 'io' : 'transient';
    if (f.code !== undefined && DENIED_CODES.has(f.code)) return 'denied';
    if (f.code === 'ENOENT' && !journal) return 'missing';
    if (f.name !== undefined && DENIED_NAMES.has(f.name)) return 'denied';
    if (f.name !== undefined && MISSING_NAMES.has(f.name)) return 'missing';
    if (f.code !== undefined && TRANSIENT_CODES.has(f.code)) return 'transient';
    if (f.name !== undefined && TRANSIENT_NAMES.has(f.name)) return 'transient';
    if (f.status !== undefined) {
      if (f.status === 403 || f.status === 401) return 'denied';
      if (f.status === 404) return 'missing';
      if (f.status === 429 || f.status === 408 || f.status >= 500) return 'transient';
      if (f.status >= 400) return 'invalid';
    }
  }
  return journal ? 'io' : 'transient';
}

/** True when a system error in the chain says the disk is full (the client should hear ENOSPC). */
export function isNoSpace(err: unknown): boolean {
  return causeChain(err).some((e) => {
    const code = facts(e).code;
    return code !== undefined && NO_SPACE_CODES.has(code);
  });
}

function facts(e: unknown): ErrorFacts {
  if (typeof e !== 'object' || e === null) return { code: undefined, name: undefined, status: undefined };
  const o = e as { code?: unknown; name?: unknown; Code?: unknown; $metadata?: { httpStatusCode?: unknown } };
  const code = typeof o.code === 'string' ? o.code : undefined;
  const name = typeof o.Code === 'string' ? o.Code : typeof o.name === 'string' && o.name !== 'Error' ? o.name : undefined;
  const status = typeof o.$metadata?.httpStatusCode === 'number' ? o.$metadata.httpStatusCode : undefined;
  return { code, name, status };
}
