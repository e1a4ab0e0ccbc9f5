import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { probeWhileFailing } from '../../gateway/hang/store-probe.js';
import { systemClock } from '../../gateway/util/clock.js';

/** A probe that stays unanswered until it is given up, and reports that it was. */
function stuck(signal: AbortSignal, givenUp: AbortSignal[]): Promise<void> {
  return new Promise((_, reject) => {
    signal.addEventListener(
      'abort',
      () => {
        givenUp.push(signal);
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      },
      { once: true },
    );
  });
}

describe('store probe loop', () => {
  it('a probe stuck on a connection does not hold back the next one, and is given up when the loop ends', async () => {
    let failing = true;
    let sent = 0;
    let answeredAfter = 0;
    const failures: unknown[] = [];
    const givenUp: AbortSignal[] = [];
    await probeWhileFailing({
      // The first probe reaches a server that took the connection and never answers; the second one answers.
      probe: (signal) => (++sent === 1 ? stuck(signal, givenUp) : Promise.resolve()),
      intervalMs: 10,
      clock: systemClock,
      wanted: () => failing,
      answered: () => {
        answeredAfter = sent;
        failing = false;
      },
      failed: (err) => failures.push(err),
    });
    assert.equal(answeredAfter, 2, 'the second probe went out while the first was unanswered, and its answer counted');
    assert.equal(givenUp.length, 1, 'the stuck probe was given up when the loop ended');
    assert.equal(sent, 2);
    assert.deepEqual(failures, [], 'a probe given up by the loop, or sent before one that answered, is no news about the store');
  });

  it('reports a failed probe, and keeps at most five unanswered at once', async () => {
    let sent = 0;
    let waiting = 0;
    let mostWaiting = 0;
    const failures: unknown[] = [];
    const givenUp: AbortSignal[] = [];
    await probeWhileFailing({
      probe: (signal) => {
        sent++;
        if (sent === 1) return Promise.reject(new Error('connection refused'));
        waiting++;
        mostWaiting = Math.max(mostWaiting, waiting);
        return stuck(signal, givenUp).finally(() => waiting--);
      },
      intervalMs: 5,
      clock: systemClock,
      // Long enough for many intervals: the stuck probes' one-second time-out is not reached first.
      wanted: () => sent < 30 && failures.length < 2,
      answered: () => assert.fail('nothing answered'),
      failed: (err) => failures.push(err),
    });
    assert.equal((failures[0] as Error).message, 'connection refused');
    assert.ok(mostWaiting <= 5, `${mostWaiting} probes unanswered at once`);
  });
});
