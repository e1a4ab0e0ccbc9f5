import type { Clock, Timer } from '../../gateway/util/clock.js';

interface Pending {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** Lets every promise callback that is ready run (a macrotask turn drains the microtask queue). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * A Clock whose time moves only when a test says so: `advance(ms)` runs every timer that falls due
 * in order, letting promises settle after each, so timed behaviour is tested exactly and at once.
 */
export class FakeClock implements Clock {
  private time: number;
  private seq = 0;
  private timers: Pending[] = [];

  constructor(start = Date.parse('2026-01-01T00:00:00.000Z')) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  /** Timers set and not yet run or cancelled. */
  get pending(): number {
    return this.timers.length;
  }

  setTimer(fn: () => void, ms: number): Timer {
    const timer: Pending = { at: this.time + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return {
      cancel: () => {
        this.timers = this.timers.filter((t) => t !== timer);
      },
    };
  }

  /**
   * Moves time forward by `ms` at once, then runs the timers that fell due, each once: for spans too
   * long to step through every periodic timer (a 30-day timeout under a 20 ms probe).
   */
  async jump(ms: number): Promise<void> {
    this.time += ms;
    await this.advance(0);
  }

  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    for (;;) {
      await settle();
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (due === undefined) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.time = Math.max(this.time, due.at);
      due.fn();
    }
    this.time = end;
    await settle();
  }
}
