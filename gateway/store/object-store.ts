import { HoldfastError } from '../../shared/errors.js';

/**
 * The object store behind the volumes: S3 in production, a local directory by default.
 * Keys are relative to the store's own prefix; implementations add it. Every method either
 * succeeds or throws a StoreError whose `cause` is the underlying failure, so that the hang
 * engine can classify it.
 */
export interface ObjectStore {
  /** Human-readable location, for logs: `s3://bucket/prefix` or `file:///path`. */
  readonly location: string;
  /** The object's bytes, or undefined when no object has that key. */
  get(key: string): Promise<Buffer | undefined>;
  /**
   * `length` bytes of the object from `offset` (fewer if it ends sooner), or undefined when no
   * object has that key. Lets a cold small read fetch what it needs instead of a whole extent.
   */
  getRange(key: string, offset: number, length: number): Promise<Buffer | undefined>;
  put(key: string, body: Buffer): Promise<void>;
  /** Deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Every key that starts with `prefix`, in lexicographic order. */
  list(prefix: string): AsyncIterable<string>;
  /** A cheap request that succeeds only when the store answers (used to notice recovery). */
  probe(): Promise<void>;
  close(): Promise<void>;
}

/** An object-store operation failed; `operation` and `key` say which, `cause` says why. */
export class StoreError extends HoldfastError {
  constructor(
    readonly operation: 'get' | 'get-range' | 'put' | 'delete' | 'list' | 'probe',
    readonly key: string,
    options: { cause: unknown },
  ) {
    super(`object store ${operation} ${key} failed: ${describeCause(options.cause)}`, options);
  }
}

function describeCause(cause: unknown): string {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${cause.message}` : `${cause.name}: ${cause.message}`;
  }
  return String(cause);
}
