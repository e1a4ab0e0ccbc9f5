/** `length` bytes: a view of `into` when it holds them (a buffer its owner uses again), else a new buffer. */
export function viewOrNew(into: Buffer | undefined, length: number): Buffer {
  return into !== undefined && length <= into.length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
}

/**
 * Gives `buf`'s memory back to the allocator now rather than at V8's next major GC, which starts only
 * once external memory grew by ~64 MiB: a dead buffer of MiBs kept that much of the RSS meanwhile.
 * Only for a buffer its owner knows nothing reads any more (the same condition as using it again):
 * any view of it left reads as empty (detached), never as other data. A buffer that shares its memory
 * (a slice, Node's small-buffer slab) is left to the collector.
 */
export function discard(buf: Buffer): void {
  const memory = buf.buffer;
  if (memory instanceof ArrayBuffer && !memory.detached && buf.byteOffset === 0 && buf.byteLength === memory.byteLength) memory.transfer(0);
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
 * - so is a span of the journal holding several records of a delta being built (journal/payload-reader.ts).
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private readonly mine = new WeakSet<ArrayBufferLike>();
  private freeBytes = 0;
  /** Buffers taken from a free list instead of allocated. */
  reused = 0;

  constructor(private readonly maxFreeBytes: number) {}

  /** `length` bytes, contents undefined, owned by the caller until given back (or never). */
  take(length: number): Buffer {
    if (length < MIN_POOLED_BYTES || length > this.maxFreeBytes) return Buffer.allocUnsafe(length);
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
    // A second give of the same buffer must neither list it twice nor discard it.
    this.mine.delete(memory);
    if (this.freeBytes + size > this.maxFreeBytes) {
      discard(Buffer.from(memory, 0, size));
      return;
    }
    let list = this.free.get(size);
    if (list === undefined) this.free.set(size, (list = []));
    list.push(Buffer.from(memory, 0, size));
    this.freeBytes += size;
  }
}
