import { releaseMemory } from '../util/buffer-pool.js';
import type { CacheReservation } from './extent-cache.js';

/** A buffer a delta is built in, and its share of the volume's cache bound while it is held. */
export interface DeltaBody {
  readonly buf: Buffer;
  readonly reservation: CacheReservation;
}

/**
 * Buffers the uploader builds large deltas in, used again instead of left to the garbage collector.
 * A delta body lives through its PUT, long enough to reach V8's old generation, where a dead one waits
 * for a major GC: 1 MiB sequential writes left ~16 MiB of dead body per delta, 1.9 GB in 10 s, and the
 * gateway's RSS carried tens of MiB of them. Each buffer, in use or free, counts against the cache's
 * bound (its reservation), so the bound still holds; the free ones are given up when the uploader has
 * nothing left to ship.
 */
export class DeltaBodies {
  private readonly free: DeltaBody[] = [];
  /** Buffers allocated instead of taken from the free list. */
  allocated = 0;

  constructor(
    /** The largest delta object built in one; larger ones get a buffer of their own. */
    readonly size: number,
    private readonly reserve: (bytes: number) => CacheReservation,
    private readonly maxFree: number,
  ) {}

  take(): DeltaBody {
    const body = this.free.pop();
    if (body !== undefined) return body;
    this.allocated++;
    return { buf: Buffer.allocUnsafeSlow(this.size), reservation: this.reserve(this.size) };
  }

  /** The delta is in the store: its buffer may be built in again. */
  give(body: DeltaBody): void {
    if (this.free.length < this.maxFree) this.free.push(body);
    else this.freeMemory(body);
  }

  /** Nothing left to ship: the free buffers go, and their room goes back to the cache. */
  drain(): void {
    for (const body of this.free.splice(0)) this.freeMemory(body);
  }

  /** At once, not at a major GC: the room its reservation gives back to the cache is then really free. */
  private freeMemory(body: DeltaBody): void {
    body.reservation.release();
    releaseMemory(body.buf);
  }

  get freeCount(): number {
    return this.free.length;
  }
}
