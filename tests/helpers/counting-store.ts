import { isDataObjectKey } from '../../gateway/image/layout.js';
import type { StoreReadOptions } from '../../gateway/store/object-store.js';
import { MemoryStore } from './memory-store.js';

/** A store that counts the reads of data objects (deltas, base extents): what caches and read heuristics should save. */
export class CountingStore extends MemoryStore {
  dataReads = 0;

  override async get(key: string, opts?: StoreReadOptions): Promise<Buffer | undefined> {
    if (isDataObjectKey(key)) this.dataReads++;
    return super.get(key, opts);
  }

  override async getRange(key: string, offset: number, length: number): Promise<Buffer | undefined> {
    if (isDataObjectKey(key)) this.dataReads++;
    return super.getRange(key, offset, length);
  }
}
