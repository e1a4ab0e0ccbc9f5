import { crc32c } from '@node-rs/crc32';
import type {
  ObjectInfo,
  ObjectStore,
  StoreOperation,
  StorePutOptions,
  StoreReadOptions,
  VersionedObject,
} from '../../gateway/store/object-store.js';
import { PreconditionFailedError, StoreError } from '../../gateway/store/object-store.js';

/** An in-memory ObjectStore for model tests; `failing` makes every call fail like an unreachable server. */
export class MemoryStore implements ObjectStore {
  readonly location = 'memory://';
  readonly objects = new Map<string, Buffer>();
  /** When each object was written (for garbage-collection grace periods). */
  readonly written = new Map<string, Date>();
  /** Bumped on every conditional write, so an etag names one version only. */
  private version = 0;
  private readonly etags = new Map<string, string>();
  failing = false;
  gets = 0;
  puts = 0;

  private check(op: StoreOperation, key: string): void {
    if (this.failing) throw new StoreError(op, key, { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
  }

  async get(key: string, opts?: StoreReadOptions): Promise<Buffer | undefined> {
    await Promise.resolve();
    this.check('get', key);
    this.gets++;
    const b = this.objects.get(key);
    if (b === undefined) return undefined;
    if (opts?.into === undefined || b.length > opts.into.length) return Buffer.from(b);
    b.copy(opts.into);
    return opts.into.subarray(0, b.length);
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer | undefined> {
    await Promise.resolve();
    this.check('get-range', key);
    this.gets++;
    const b = this.objects.get(key);
    return b === undefined ? undefined : Buffer.from(b.subarray(offset, offset + length));
  }

  /** Checks a checksum sent with the body as AWS does (BadDigest): a wrong one is a bug in the caller. */
  async put(key: string, body: Buffer, opts?: StorePutOptions): Promise<void> {
    await Promise.resolve();
    this.check('put', key);
    if (opts?.crc32c !== undefined && opts.crc32c !== crc32c(body))
      throw new Error(`put ${key}: the CRC32C sent (${opts.crc32c}) is not the body's (${crc32c(body)})`);
    this.puts++;
    this.set(key, body);
  }

  private set(key: string, body: Buffer): string {
    this.objects.set(key, Buffer.from(body));
    this.written.set(key, new Date());
    const etag = `${++this.version}-${crc32c(body).toString(16)}`;
    this.etags.set(key, etag);
    return etag;
  }

  async getVersioned(key: string): Promise<VersionedObject | undefined> {
    await Promise.resolve();
    this.check('get', key);
    this.gets++;
    const b = this.objects.get(key);
    return b === undefined ? undefined : { body: Buffer.from(b), etag: this.etags.get(key)! };
  }

  async putIfAbsent(key: string, body: Buffer): Promise<string> {
    await Promise.resolve();
    this.check('put-if-absent', key);
    if (this.objects.has(key)) throw new PreconditionFailedError(key);
    this.puts++;
    return this.set(key, body);
  }

  async putIfMatch(key: string, body: Buffer, etag: string): Promise<string> {
    await Promise.resolve();
    this.check('put-if-match', key);
    if (this.etags.get(key) !== etag || !this.objects.has(key)) throw new PreconditionFailedError(key);
    this.puts++;
    return this.set(key, body);
  }

  async delete(key: string): Promise<void> {
    await Promise.resolve();
    this.check('delete', key);
    this.objects.delete(key);
    this.written.delete(key);
    this.etags.delete(key);
  }

  async *listDetailed(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const key of this.list(prefix)) {
      const body = this.objects.get(key);
      if (body !== undefined) yield { key, size: body.length, lastModified: this.written.get(key)! };
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    this.check('list', prefix);
    for (const k of [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort()) yield k;
  }

  async *listFolders(prefix: string): AsyncIterable<string> {
    this.check('list', prefix);
    const names = new Set<string>();
    for (const k of this.objects.keys()) {
      if (!k.startsWith(prefix)) continue;
      const slash = k.indexOf('/', prefix.length);
      if (slash > prefix.length) names.add(k.slice(prefix.length, slash));
    }
    yield* [...names].sort();
  }

  async probe(): Promise<void> {
    this.check('probe', '');
  }

  async close(): Promise<void> {}
}
