/** `length` bytes: a view of `into` when it holds them (a buffer its owner uses again), else a new buffer. */
export function viewOrNew(into: Buffer | undefined, length: number): Buffer {
  return into !== undefined && length <= into.length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
}

/**
 * Gives the memory of `view`'s buffer back to the allocator now, not at V8's next major GC (which it
 * starts only once external memory grew by ~64 MiB): detaching an ArrayBuffer drops its backing store.
 * Every view of it becomes empty, so only an owner that could as well hand the buffer out to be
 * overwritten may call it: the same proof of "nothing reads it any more" that reuse needs.
 */
export function releaseMemory(view: Buffer): void {
  if (view.buffer instanceof ArrayBuffer && !view.buffer.detached) view.buffer.transfer(0);
}

/** Smaller requests get buffers of their own: young garbage, collected cheaply. */
const MIN_POOLED_BYTES = 64 * 1024;

/**
 * Buffers used again instead of left to the garbage collector, for short-lived large buffers whose
 * owner knows when nothing reads them any more. Such a buffer often lives long enough (a journal
 * write, a GET) to reach V8's old generation, where a dead one waits for a major GC, which V8 starts
 * only once external memory grew by ~64 MiB: those were tens of MiB of the gateway's RSS. Buffers
 * come in power-of-two sizes; a request gets a view of the smallest that holds it. At most
 * `maxFreeBytes` wait on the free lists. Users:
 * - the NBD parser joins WRITE payloads that span socket chunks in one (nbd/codec.ts): 1 MiB
 *   sequential writes had left up to 100 MiB of dead payloads; only a write that succeeded gives its
 *   payload back, since the journal may still hold a failed one's;
 * - a range GET of several pieces of an object is read into one before they are copied out (image/pieces.ts);
 * - so is a span of the journal holding several records of a delta being built (journal/payload-reader.ts);
 * - READ replies that are not views of a cached extent, from 4 KiB up (volume/read-path.ts): with 32
 *   requests in flight, a reply often outlives the scavenges its request spans.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private readonly mine = new WeakSet<ArrayBufferLike>();
  private freeBytes = 0;
  /** Buffers taken from a free list instead of allocated. */
  reused = 0;

  constructor(
    private readonly maxFreeBytes: number,
    /** Smaller requests get buffers of their own (see MIN_POOLED_BYTES). */
    private readonly minPooledBytes = MIN_POOLED_BYTES,
  ) {}

  /** `length` bytes, contents undefined, owned by the caller until given back (or never). */
  take(length: number): Buffer {
    if (length < this.minPooledBytes) return Buffer.allocUnsafe(length);
    if (length > this.maxFreeBytes) {
      // Never kept, but freed when given back. Left to the collector, a dead one waits for a major GC,
      // which V8 starts on external memory's growth, and the pooled buffers freed at once no longer
      // make it grow: 32 MiB READ replies of clients that went away stayed resident (254 MiB against 123).
      const oversize = Buffer.allocUnsafeSlow(length);
      this.mine.add(oversize.buffer);
      return oversize;
    }
    const size = 2 ** Math.ceil(Math.log2(length));
    const reusable = this.free.get(size)?.pop();
    if (reusable !== undefined) {
      this.freeBytes -= size;
      this.mine.add(reusable.buffer);
      this.reused++;
      return reusable.subarray(0, length);
    }
    const fresh = Buffer.allocUnsafeSlow(size);
    this.mine.add(fresh.buffer);
    return fresh.subarray(0, length);
  }

  /** Nothing reads `view`'s buffer any more; buffers this pool did not make are ignored. */
  give(view: Buffer): void {
    const memory = view.buffer;
    if (!this.mine.has(memory)) return;
    const size = memory.byteLength;
    // A second give of the same buffer must not put it on the list twice, nor free it.
    this.mine.delete(memory);
    if (this.freeBytes + size > this.maxFreeBytes) {
      releaseMemory(view);
      return;
    }
    let list = this.free.get(size);
    if (list === undefined) this.free.set(size, (list = []));
    list.push(Buffer.from(memory, 0, size));
    this.freeBytes += size;
  }
}
