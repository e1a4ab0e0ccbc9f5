import type { ErrorClass } from '../../shared/events.js';
import { JournalIoError } from '../../shared/errors.js';
import { StoreError } from '../store/object-store.js';

const TRANSIENT_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN',
  'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE',
]);
const TRANSIENT_NAMES = new Set([
  'TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'SlowDown', 'Throttling', 'ThrottlingException',
  'TooManyRequestsException', 'RequestLimitExceeded', 'InternalError', 'ServiceUnavailable', 'BadGateway',
  'GatewayTimeout', 'NetworkingError', 'AbortError',
]);
const DENIED_NAMES = new Set([
  'AccessDenied', 'Forbidden', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'ExpiredTokenException',
  'TokenRefreshRequired', 'CredentialsProviderError', 'InvalidToken', 'AllAccessDisabled', 'AccountProblem',
]);
const MISSING_NAMES = new Set(['NoSuchBucket', 'NotFound', 'NoSuchVolume', 'VolumeNotFoundError']);
const NO_SPACE_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG']);
const NO_SPACE_NAMES = new Set(['QuotaExceeded', 'EntityTooLarge']);
const IO_CODES = new Set(['EIO', 'EROFS', 'ESTALE', 'EBADF']);
const DENIED_CODES = new Set(['EACCES', 'EPERM']);

interface ErrorFacts {
  readonly code: string | undefined;
  readonly name: string | undefined;
  readonly status: number | undefined;
}

/**
 * Puts a failed storage operation (S3 call, local store, journal write or sync) in the class the
 * hang policy decides on. Unknown failures count as transient: holding is the safe default for a
 * storage system whose job is not to fail the guest, and the hang timeout bounds it.
 */
export function classifyError(err: unknown): ErrorClass {
  const chain = causes(err);
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

function causes(err: unknown): unknown[] {
  const out: unknown[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    out.push(cur);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  // A StoreError's own name says nothing about the failure; its causes do.
  return out.filter((e) => !(e instanceof StoreError));
}

function facts(e: unknown): ErrorFacts {
  if (typeof e !== 'object' || e === null) return { code: undefined, name: undefined, status: undefined };
  const o = e as { code?: unknown; name?: unknown; Code?: unknown; $metadata?: { httpStatusCode?: unknown } };
  const code = typeof o.code === 'string' ? o.code : undefined;
  const name = typeof o.Code === 'string' ? o.Code : typeof o.name === 'string' && o.name !== 'Error' ? o.name : undefined;
  const status = typeof o.$metadata?.httpStatusCode === 'number' ? o.$metadata.httpStatusCode : undefined;
  return { code, name, status };
}
