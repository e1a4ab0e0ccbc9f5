/**
 * Memory for request and reply data (WRITE payloads, READ data, replies the client has not read yet)
 * shared by every connection of a server. Each connection may hold `reservePerConnection` bytes
 * whatever the others do — enough for a guest's small requests, so that connections which stop
 * reading their replies cannot starve an honest client — and takes anything beyond it from the
 * shared `limit`. A connection refused a charge stops reading its socket until bytes come back:
 * back-pressure, never buffering. Memory held is at most limit + connections × reservePerConnection.
 */
export class BufferBudget {
  /** Bytes taken from the shared limit. */
  private shared = 0;
  private readonly waiting = new Set<BufferAccount>();
  private wakeScheduled = false;

  constructor(
    readonly limit: number,
    readonly reservePerConnection: number,
  ) {}

  /**
   * A connection's share: it holds at most `maxHeld` bytes (or one request, however large, when it
   * holds nothing), and `onRoom` is called when a refused charge may fit now.
   */
  account(maxHeld: number, onRoom: () => void): BufferAccount {
    return new BufferAccount(this, maxHeld, onRoom);
  }

  /** Bytes taken from the shared limit by all connections. */
  get sharedInUse(): number {
    return this.shared;
  }

  /** @internal BufferAccount's side of the bookkeeping. */
  take(bytes: number): boolean {
    if (bytes > 0 && this.shared + bytes > this.limit) return false;
    this.shared += bytes;
    return true;
  }

  /** @internal */
  giveBack(bytes: number): void {
    this.shared -= bytes;
    if (bytes <= 0 || this.waiting.size === 0 || this.wakeScheduled) return;
    // Bytes come back in bursts when clients go (many sockets close in one poll). Waking the waiting
    // after the poll lets the closes of their own connections be seen first, so that no request is
    // admitted for a client that has already left.
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      // Everyone waiting retries; whoever still does not fit waits again.
      const waiting = [...this.waiting];
      this.waiting.clear();
      for (const account of waiting) account.notifyRoom();
    });
  }

  /** @internal */
  wait(account: BufferAccount): void {
    this.waiting.add(account);
  }

  /** @internal */
  forget(account: BufferAccount): void {
    this.waiting.delete(account);
  }
}

/** One connection's share of a BufferBudget. */
export class BufferAccount {
  /** Bytes this connection holds, its reserve included. */
  held = 0;
  private waiting = false;
  private closed = false;

  constructor(
    private readonly budget: BufferBudget,
    private readonly maxHeld: number,
    private readonly onRoom: () => void,
  ) {}

  /**
   * Takes `bytes` if they fit this connection's limit and its reserve or the shared limit has room;
   * otherwise returns false and calls onRoom once bytes come back, so the caller can try again.
   */
  tryCharge(bytes: number): boolean {
    if (this.closed) return false;
    const fitsConnection = this.held === 0 || this.held + bytes <= this.maxHeld;
    const shared = this.sharedPart(this.held + bytes) - this.sharedPart(this.held);
    if (fitsConnection && this.budget.take(shared)) {
      this.held += bytes;
      return true;
    }
    this.waiting = true;
    this.budget.wait(this);
    return false;
  }

  release(bytes: number): void {
    if (this.closed || bytes <= 0) return;
    const shared = this.sharedPart(this.held) - this.sharedPart(this.held - bytes);
    this.held -= bytes;
    this.budget.giveBack(shared);
    // Its own bytes coming back may be what a refused charge was waiting for.
    if (this.waiting) this.notifyRoom();
  }

  /** The connection is gone: everything it held goes back. */
  close(): void {
    if (this.closed) return;
    this.waiting = false;
    this.budget.forget(this);
    this.release(this.held);
    this.closed = true;
  }

  /** @internal */
  notifyRoom(): void {
    if (this.closed || !this.waiting) return;
    this.waiting = false;
    this.budget.forget(this);
    this.onRoom();
  }

  private sharedPart(held: number): number {
    return Math.max(0, held - this.budget.reservePerConnection);
  }
}
