import type { Clock } from '../util/clock.js';
import type { Sleep } from '../util/sleep.js';

/** A held read's attempt was given up because the store answers again: try again at once. */
export class RetryNow extends Error {
  constructor() {
    super('the store answers again; retrying the held read at once');
    this.name = 'RetryNow';
  }
}

/**
 * One guest read held through a store failure. It stops waiting the moment it is failed (timeout,
 * pause, release, disconnect, shutdown) — not when its store attempt gives up — and its back-off
 * ends early when the engine wakes retries.
 */
export class HeldRead {
  failed: Error | undefined;
  private waker: (() => void) | undefined;

  constructor(
    readonly bytes: number,
    /** Called once when holding ends with a failure: the store attempt under way is abandoned. */
    private readonly onFail: () => void,
  ) {}

  /** Ends holding: the read is answered with `err`. False when it had ended already. */
  fail(err: Error): boolean {
    if (this.failed !== undefined) return false;
    this.failed = err;
    this.onFail();
    this.waker?.();
    return true;
  }

  /** Cuts a back-off short (storage may answer again). */
  wake(): void {
    this.waker?.();
  }

  /**
   * Waits for a store attempt, or rejects as soon as the read is failed — or with RetryNow when the
   * engine wakes retries while the attempt is still unanswered (`abandon` gives it up first); an
   * abandoned attempt runs on unobserved.
   */
  watch<T>(pending: Promise<T>, abandon?: () => void): Promise<T> {
    const failed = this.failed;
    if (failed !== undefined) {
      pending.catch(() => undefined);
      return Promise.reject(failed);
    }
    return new Promise<T>((resolve, reject) => {
      this.waker = () => {
        if (this.failed !== undefined) reject(this.failed);
        else if (abandon !== undefined) {
          this.waker = undefined;
          pending.catch(() => undefined);
          abandon();
          reject(new RetryNow());
        }
      };
      pending.then(
        (value) => {
          this.waker = undefined;
          resolve(value);
        },
        (err: unknown) => {
          this.waker = undefined;
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }

  /** Waits out a back-off, which `wake` or `fail` end early. */
  async pause(backoff: Sleep): Promise<void> {
    this.waker = () => {
      backoff.wake();
    };
    await backoff.done;
    this.waker = undefined;
  }
}

/**
 * The first attempt of a read, not yet held: it becomes held once the store has not answered for
 * `stallMs`, and from then on it is watched like any held attempt (and given up with `abandon` like one).
 */
export function firstAttempt<T>(
  pending: Promise<T>,
  clock: Clock,
  stallMs: number,
  stalled: () => HeldRead,
  abandon: () => void,
): Promise<T> {
  let watched: Promise<T> | undefined;
  return new Promise<T>((resolve, reject) => {
    const timer = clock.setTimer(() => {
      watched = stalled().watch(pending, abandon);
      watched.then(resolve, reject);
    }, stallMs);
    pending.then(
      (value) => {
        timer.cancel();
        if (watched === undefined) resolve(value);
      },
      (err: unknown) => {
        timer.cancel();
        if (watched === undefined) reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
