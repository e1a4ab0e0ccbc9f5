import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';

/** Polls `condition` until it holds, failing with `what` after `timeoutMs` (generous: the machine may be loaded). */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) assert.fail(`gave up waiting for ${what}`);
    await delay(5);
  }
}
