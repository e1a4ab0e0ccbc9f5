/** Control requests (the head: lease renewals, commits, takeovers) go first and may use the reserved slots. */
export type RequestLane = 'control' | 'data';

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
}

/**
 * Requests to the store in flight at once, at most as many as the HTTP client has sockets. The SDK
 * starts a request's timeout when the request is made, not when it gets a socket: a burst of range
 * GETs beyond the sockets (16 extent loads of 32 GETs each) waited in the agent's queue, timed out
 * there after 5 s, and was retried, so the store looked down while it answered every request it
 * got, and a lease renewal queued behind the burst failed for a minute and more. Here a request
 * waits before it is made, and head requests pass the data requests waiting, with `reserved` slots
 * the data requests never take.
 */
export class RequestSlots {
  private inFlight = 0;
  private readonly waiting: Record<RequestLane, Waiter[]> = { control: [], data: [] };

  private readonly reserved: number;

  /** `reserved` is capped so that data requests keep at least one slot. */
  constructor(
    private readonly capacity: number,
    reserved: number,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`request slots: capacity ${capacity} is not a positive integer`);
    this.reserved = Math.max(0, Math.min(reserved, capacity - 1));
  }

  /** Runs `fn` once a slot of `lane` is free; a request aborted while it waits is never made. */
  async run<T>(lane: RequestLane, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (!this.take(lane)) await this.wait(lane, signal);
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  /** Requests waiting for a slot now (both lanes). */
  get queued(): number {
    return this.waiting.control.length + this.waiting.data.length;
  }

  get active(): number {
    return this.inFlight;
  }

  private take(lane: RequestLane): boolean {
    const limit = lane === 'control' ? this.capacity : this.capacity - this.reserved;
    if (this.inFlight >= limit || (lane === 'data' && this.waiting.control.length > 0)) return false;
    this.inFlight++;
    return true;
  }

  private wait(lane: RequestLane, signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    return new Promise<void>((resolve, reject) => {
      const queue = this.waiting[lane];
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const at = queue.indexOf(waiter);
          if (at >= 0) queue.splice(at, 1);
          reject(signal?.reason instanceof Error ? signal.reason : new Error('the request was aborted while it waited for a slot'));
        },
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      queue.push(waiter);
    });
  }

  /** A request ended: its slot goes to the next control request, else the next data request that fits. */
  private release(): void {
    this.inFlight--;
    const next = this.waiting.control.shift() ?? (this.inFlight < this.capacity - this.reserved ? this.waiting.data.shift() : undefined);
    if (next === undefined) return;
    next.signal?.removeEventListener('abort', next.onAbort);
    this.inFlight++;
    next.resolve();
  }
}
