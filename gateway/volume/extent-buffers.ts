import { releaseMemory } from '../util/buffer-pool.js';

/**
 * Extent buffers used again instead of left to the garbage collector. A 4 MiB Buffer lives outside
 * V8's heap; V8 collects dead ones only at a major GC, which it starts once external memory grew by
 * about 64 MiB, and glibc then keeps much of what they freed: evicted extents waiting for the
 * collector were what held the gateway's RSS tens of MiB above `--cache-size`. Here an evicted
 * extent's buffer goes to a short free list and the next load reads into it; one the list has no
 * room for is freed at once (releaseMemory), as are those the list gives up when its room shrinks.
 *
 * Reuse is safe only once nothing still reads the old contents:
 * - a view lent out (a zero-copy read reply) counts until its reader says it is done (`returned`,
 *   when the NBD reply was handed to the kernel); a buffer released while lent becomes free when its
 *   last view comes back, so a reader that never says so costs a reuse, never correctness;
 * - code that awaited a load copies from the extent in the continuation, which can run after a
 *   later eviction in the same turn: released buffers become free only at setImmediate, after
 *   the continuations already queued.
 * Only buffers this pool allocated are taken back; any other Buffer passed in is ignored.
 */
interface Slot {
  /** Taken and not released: an owner uses it. */
  inUse: boolean;
  /** Views lent out and not returned. */
  views: number;
  /** Released while lent: free once the last view comes back. */
  orphaned: boolean;
}

export class ExtentBuffers {
  /** The buffers this pool made, by their memory. */
  private readonly slots = new WeakMap<ArrayBufferLike, Slot>();
  private readonly free: Buffer[] = [];
  private releasing: Buffer[] = [];
  private immediate: NodeJS.Immediate | undefined;
  /** Buffers that callers of `settled` will take once it resolves: kept beyond the free list's room. */
  private wanted = 0;
  private waiters: Array<() => void> = [];
  /** Buffers taken from the free list instead of allocated. */
  reused = 0;
  allocated = 0;
  /** Buffers given back to the allocator (no room on the free list). */
  freed = 0;

  constructor(
    /** Room for an extent and, when it is read whole from the store, its object's tables. */
    readonly size: number,
    /** How many released buffers may wait on the free list now (a number, or asked each time). */
    private readonly maxFree: number | (() => number),
  ) {}

  /** A buffer of `size` bytes, contents undefined; the caller owns it until it releases it. */
  take(): Buffer {
    const reusable = this.free.pop();
    if (reusable !== undefined) this.reused++;
    const buf = reusable ?? this.allocate();
    const slot = this.slots.get(buf.buffer);
    if (slot !== undefined) slot.inUse = true;
    return buf;
  }

  private allocate(): Buffer {
    this.allocated++;
    const fresh = Buffer.allocUnsafeSlow(this.size);
    this.slots.set(fresh.buffer, { inUse: false, views: 0, orphaned: false });
    return fresh;
  }

  /** A view of a pool buffer goes to a reader that will say when it is done with it. */
  lend(view: Buffer): void {
    const slot = this.slots.get(view.buffer);
    if (slot !== undefined) slot.views++;
  }

  /** The reader of a lent view is done with it. */
  returned(view: Buffer): void {
    const slot = this.slots.get(view.buffer);
    if (slot === undefined || slot.views === 0) return;
    slot.views--;
    if (slot.views === 0 && slot.orphaned) {
      slot.orphaned = false;
      this.toSettle(view);
    }
  }

  /** Its owner no longer needs the buffer (given by any view of it): used again once nothing reads it. */
  release(view: Buffer): void {
    const slot = this.slots.get(view.buffer);
    if (slot?.inUse !== true) return;
    slot.inUse = false;
    this.toSettle(view);
  }

  /** The whole buffer of `view` is looked at again at the next settle, after the continuations already queued. */
  private toSettle(view: Buffer): void {
    this.releasing.push(Buffer.from(view.buffer, 0, this.size));
    this.immediate ??= setImmediate(() => {
      this.settle();
    });
  }

  /**
   * Resolves once the buffers released so far can be taken, keeping `count` of them for the caller. A
   * load that has just evicted extents to make room awaits it before it takes buffers: taken at once, they
   * would be new ones (the evicted ones are free only after this turn), and a batch of loads would
   * leave a batch of evicted 4 MiB buffers, beyond the free list's room, to the garbage collector: 20 s
   * of random reads over four times the cache allocated 132 new extent buffers before, 4 with this.
   */
  settled(count: number): Promise<void> {
    if (this.immediate === undefined) return Promise.resolve();
    this.wanted += count;
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private settle(): void {
    this.immediate = undefined;
    const released = this.releasing;
    this.releasing = [];
    const room = this.room();
    // Kept for waiters that took fewer than they asked for: the free list's room again.
    this.trim(room);
    for (const buf of released) {
      const slot = this.slots.get(buf.buffer);
      // Taken again meanwhile: not free. Lent out still: free when the last view comes back. Beyond the room: freed.
      if (slot === undefined || slot.inUse) continue;
      if (slot.views > 0) slot.orphaned = true;
      else if (this.free.length < room) this.free.push(buf);
      else this.freeMemory(buf);
    }
    this.wanted = 0;
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  private room(): number {
    return (typeof this.maxFree === 'number' ? this.maxFree : this.maxFree()) + this.wanted;
  }

  /** The free list's room shrank (the memory it had went to cached or reserved extents): the excess is freed. */
  fit(): void {
    this.trim(this.room());
  }

  private trim(room: number): void {
    for (const buf of this.free.splice(room)) this.freeMemory(buf);
  }

  private freeMemory(buf: Buffer): void {
    this.slots.delete(buf.buffer);
    this.freed++;
    releaseMemory(buf);
  }

  /** Bytes waiting on the free list. */
  get freeBytes(): number {
    return this.free.length * this.size;
  }
}
