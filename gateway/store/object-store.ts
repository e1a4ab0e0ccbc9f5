// gateway/store owns the object store interface (this file) and its implementations: S3
// (s3-store.ts), a local directory (local-store.ts), a retrying wrapper, and opening the configured one.
import { HoldfastError } from '../../shared/errors.js';

/**
 * The object store behind the volumes: S3 in production, a local directory by default.
 * Keys are relative to the store's own prefix; implementations add it. Every method either
 * succeeds or throws a StoreError whose `cause` is the underlying failure, so that the hang
 * engine can classify it — except a conditional write that lost, which throws
 * PreconditionFailedError.
 *
 * Two kinds of object live here. Data objects (extents, deltas, index pages) are written once
 * under a key nobody else uses and never overwritten. Conditional objects (a volume's head, its
 * snapshots) change only through putIfAbsent / putIfMatch, which is what fences a deposed writer.
 */
export interface ObjectStore {
  /** Human-readable location, for logs: `s3://bucket/prefix` or `file:///path`. */
  readonly location: string;
  /** The object's bytes, or undefined when no object has that key. */
  get(key: string, opts?: StoreReadOptions): Promise<Buffer | undefined>;
  /**
   * `length` bytes of the object from `offset` (fewer if it ends sooner), or undefined when no
   * object has that key. Lets a cold small read fetch what it needs instead of a whole object.
   */
  getRange(key: string, offset: number, length: number, opts?: StoreReadOptions): Promise<Buffer | undefined>;
  put(key: string, body: Buffer, opts?: StorePutOptions): Promise<void>;
  /** Deleting a missing key is not an error. */
  delete(key: string, opts?: StoreCallOptions): Promise<void>;
  /** Every key that starts with `prefix`, in lexicographic order. */
  list(prefix: string, opts?: StoreCallOptions): AsyncIterable<string>;
  /** Like list, with each object's size and last-modified time (garbage collection needs both). */
  listDetailed(prefix: string, opts?: StoreCallOptions): AsyncIterable<ObjectInfo>;
  /**
   * The names one level below `prefix` (which ends in `/`) that have objects under them, in order —
   * S3's common prefixes with the delimiter `/`. Finding the volumes costs one listing page this way,
   * however many objects they hold.
   */
  listFolders(prefix: string, opts?: StoreCallOptions): AsyncIterable<string>;
  /** The object and the tag a conditional write must name to replace it; undefined when absent. */
  getVersioned(key: string, opts?: StoreCallOptions): Promise<VersionedObject | undefined>;
  /** Creates the object only if no object has the key (S3 `If-None-Match: *`); returns its tag. */
  putIfAbsent(key: string, body: Buffer, opts?: StoreCallOptions): Promise<string>;
  /** Replaces the object only if its tag is still `etag` (S3 `If-Match`); returns the new tag. */
  putIfMatch(key: string, body: Buffer, etag: string, opts?: StoreCallOptions): Promise<string>;
  /** A cheap request that succeeds only when the store answers (used to notice recovery). */
  probe(opts?: StoreCallOptions): Promise<void>;
  close(): Promise<void>;
}

export interface StoreCallOptions {
  /** Aborts the request: the call rejects at once and the request is not retried. */
  readonly signal?: AbortSignal | undefined;
}

export interface StorePutOptions extends StoreCallOptions {
  /**
   * The body's CRC32C when the caller has it already (a data object's writer combines it from its
   * block CRCs): sent as the upload's checksum instead of one computed by another pass over the body.
   */
  readonly crc32c?: number | undefined;
}

export interface StoreReadOptions extends StoreCallOptions {
  /**
   * A buffer the bytes may be read into when they fit (one the caller reuses, instead of a new one
   * each time): the result is then a view of it. An implementation may ignore it; the caller uses
   * what is returned either way.
   */
  readonly into?: Buffer | undefined;
}

export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
  readonly lastModified: Date;
}

export interface VersionedObject {
  readonly body: Buffer;
  /** Opaque; passed back to putIfMatch. */
  readonly etag: string;
}

export type StoreOperation = 'get' | 'get-range' | 'put' | 'delete' | 'list' | 'probe' | 'put-if-absent' | 'put-if-match';

/** An object-store operation failed; `operation` and `key` say which, `cause` says why. */
export class StoreError extends HoldfastError {
  constructor(
    readonly operation: StoreOperation,
    readonly key: string,
    options: { cause: unknown },
  ) {
    super(`object store ${operation} ${key} failed: ${describeCause(options.cause)}`, options);
  }
}

/**
 * A conditional write lost: the key already exists (putIfAbsent) or changed since it was read
 * (putIfMatch). Never a transient failure to retry blindly — the caller reads the object again and
 * decides anew (for a volume head: another gateway may have taken the volume).
 */
export class PreconditionFailedError extends HoldfastError {
  constructor(
    readonly key: string,
    options: { cause?: unknown } = {},
  ) {
    super(`conditional write of ${key} refused: the object changed or already exists`, options);
  }
}

function describeCause(cause: unknown): string {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${cause.message}` : `${cause.name}: ${cause.message}`;
  }
  return String(cause);
}
