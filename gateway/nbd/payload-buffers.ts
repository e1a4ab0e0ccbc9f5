/** Payloads smaller than this are assembled in buffers of their own: young garbage, collected cheaply. */
const MIN_POOLED_BYTES = 64 * 1024;

/**
 * Buffers the parser joins WRITE payloads that span socket chunks in, used again once a write was
 * acknowledged. A 1 MiB payload lives until its journal record is durable; at a few hundred writes a
 * second V8 collected them only after external memory grew by ~64 MiB, so sequential writes carried up
 * to 100 MiB of dead payloads in the gateway's RSS. Buffers come in power-of-two sizes; a payload
 * uses a view of the smallest that holds it. At most `maxFreeBytes` wait on the free lists, shared by
 * every connection of a server.
 *
 * Only a write that succeeded gives its payload back: one that failed may still be queued for the
 * journal, which would then write a later payload's bytes.
 */
export class PayloadBuffers {
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
    if (this.freeBytes + size > this.maxFreeBytes) return;
    // A second give of the same buffer must not put it on the list twice.
    this.mine.delete(memory);
    let list = this.free.get(size);
    if (list === undefined) this.free.set(size, (list = []));
    list.push(Buffer.from(memory, 0, size));
    this.freeBytes += size;
  }
}
