import type { ObjectStore } from '../../gateway/store/object-store.js';
import { StoreError } from '../../gateway/store/object-store.js';

/** An in-memory ObjectStore for model tests; `failing` makes every call fail like an unreachable server. */
export class MemoryStore implements ObjectStore {
  readonly location = 'memory://';
  readonly objects = new Map<string, Buffer>();
  failing = false;
  gets = 0;
  puts = 0;

  private check(op: 'get' | 'get-range' | 'put' | 'delete' | 'list' | 'probe', key: string): void {
    if (this.failing) throw new StoreError(op, key, { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
  }

  async get(key: string): Promise<Buffer | undefined> {
    await Promise.resolve();
    this.check('get', key);
    this.gets++;
    const b = this.objects.get(key);
    return b === undefined ? undefined : Buffer.from(b);
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer | undefined> {
    await Promise.resolve();
    this.check('get-range', key);
    this.gets++;
    const b = this.objects.get(key);
    return b === undefined ? undefined : Buffer.from(b.subarray(offset, offset + length));
  }

  async put(key: string, body: Buffer): Promise<void> {
    await Promise.resolve();
    this.check('put', key);
    this.puts++;
    this.objects.set(key, Buffer.from(body));
  }

  async delete(key: string): Promise<void> {
    await Promise.resolve();
    this.check('delete', key);
    this.objects.delete(key);
  }

  async *list(prefix: string): AsyncIterable<string> {
    this.check('list', prefix);
    for (const k of [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort()) yield k;
  }

  async probe(): Promise<void> {
    this.check('probe', '');
  }

  async close(): Promise<void> {}
}
