/**
 * Small reads are done on the event loop while the page cache answers them: a few µs, where a hop
 * to the thread pool and back costs several times that in CPU. A read slower than SYNC_READ_LIMIT_MS
 * went to the disk itself (or the process was preempted: on a busy machine a few percent are). When
 * more than SLOW_SHARE of the recent ones were (a moving average over about 16), the page cache is
 * missing: reads go to the thread pool (several at once, the loop free) for SYNC_PAUSE_MS.
 */
import { readSync } from 'node:fs';

const SYNC_READ_MAX_BYTES = 64 * 1024;
const SYNC_READ_LIMIT_MS = 0.2;
const SLOW_SHARE = 0.25;
const SYNC_PAUSE_MS = 1000;

export class LoopReads {
  /** Until then (performance.now()), reads go to the thread pool: the page cache missed lately. */
  private asyncUntil = 0;
  /** Moving average of how many reads on the loop were slow. */
  private slowShare = 0;

  /** Bytes read from `fd`, or -1 when the read belongs in the thread pool (too large, or the page cache missed lately). */
  read(fd: number, out: Buffer, at: number, length: number, offset: number): number {
    if (length > SYNC_READ_MAX_BYTES) return -1;
    const start = performance.now();
    if (start < this.asyncUntil) return -1;
    const n = readSync(fd, out, at, length, offset);
    const end = performance.now();
    this.slowShare += ((end - start > SYNC_READ_LIMIT_MS ? 1 : 0) - this.slowShare) / 16;
    if (this.slowShare > SLOW_SHARE) {
      this.asyncUntil = end + SYNC_PAUSE_MS;
      // After the pause, a few slow reads are enough to pause again.
      this.slowShare = SLOW_SHARE * 0.75;
    }
    return n;
  }
}
