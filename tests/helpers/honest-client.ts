import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type { NbdClient } from './nbd-client.js';

/**
 * A well-behaved client writing and verifying 4 KiB blocks in a loop, run beside hostile ones to
 * show that what they do costs it nothing: it must keep completing round trips.
 */
export class HonestClient {
  rounds = 0;
  failure: unknown;
  /** Slowest round trip so far, in ms. */
  slowestMs = 0;
  private stopping = false;
  private loop: Promise<void> = Promise.resolve();

  constructor(
    private readonly client: NbdClient,
    /** Blocks the loop cycles over, from offset 0. */
    private readonly blocks = 512,
  ) {}

  start(): void {
    this.loop = (async () => {
      while (!this.stopping) {
        try {
          const offset = (this.rounds % this.blocks) * 4096;
          const data = randomBytes(4096);
          const started = performance.now();
          await this.client.write(offset, data);
          assert.deepEqual(await this.client.read(offset, 4096), data);
          this.slowestMs = Math.max(this.slowestMs, performance.now() - started);
          this.rounds++;
          await delay(2);
        } catch (err) {
          this.failure = err;
          return;
        }
      }
    })();
  }

  /** Resolves after `count` more verified round trips; fails if they do not come within `timeoutMs`. */
  async advance(count: number, timeoutMs = 30_000): Promise<void> {
    const target = this.rounds + count;
    const deadline = performance.now() + timeoutMs;
    while (this.rounds < target && this.failure === undefined && performance.now() < deadline) await delay(5);
    assert.equal(this.failure, undefined);
    assert.ok(this.rounds >= target, `the honest client is stuck at ${this.rounds} round trips`);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
    assert.equal(this.failure, undefined);
    await this.client.disconnect();
  }
}
