import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { HoldfastEvent, RequestedBy } from '../../shared/events.js';
import { DEFAULT_HANG_POLICY } from '../../shared/hang-policy.js';
import { snapshot, writeRefusal } from '../../gateway/hang/machine.js';
import { transition, type HangAction } from '../../gateway/hang/transition.js';
import { BY, HELD_READ, HELD_WRITES, T0, machine, transitionTable } from '../helpers/hang-machines.js';

/** The hang engine's decisions on storage health, operator actions, pressure and shutdown; and details of its events and queries. */

transitionTable('hang transitions: storage health, operators, pressure, shutdown', [
  // Storage health.
  {
    name: 'a failed upload raises storage-unavailable',
    given: {},
    input: { type: 'store-failed', path: 'write', errorClass: 'no-space', message: 'ENOSPC' },
    state: 'normal',
    store: 'writes',
    actions: ['log warn', 'emit storage-unavailable:true'],
  },
  {
    name: 'a failed read adds to a failing store',
    given: { store: 'writes' },
    input: { type: 'store-failed', path: 'read', errorClass: 'transient', message: 'ECONNRESET' },
    state: 'normal',
    store: 'reads+writes',
    actions: [],
  },
  {
    name: 'a failed probe only refreshes the last error',
    given: { store: 'writes' },
    input: { type: 'store-failed', path: 'probe', errorClass: 'transient', message: 'ECONNREFUSED' },
    state: 'normal',
    store: 'writes',
    actions: [],
  },
  {
    name: 'corrupt data is reported, not a storage failure',
    given: {},
    input: { type: 'store-failed', path: 'read', errorClass: 'corrupt', message: 'extent 3: CRC32C mismatch' },
    state: 'normal',
    store: 'ok',
    actions: ['log error', 'emit data-corrupt'],
  },
  {
    name: 'a journal failure the policy holds waits',
    given: { state: 'hang', journal: 'io', held: HELD_WRITES },
    input: { type: 'journal-failed', errorClass: 'io', message: 'EIO' },
    state: 'hang',
    actions: [],
  },
  {
    name: 'a journal failure the policy fails fails the journal waiters only',
    given: {
      state: 'hang',
      store: 'reads',
      held: { requests: 3, bytes: 12288, reads: 1 },
      policy: { classes: { ...DEFAULT_HANG_POLICY.classes, 'no-space': 'fail' } },
    },
    input: { type: 'journal-failed', errorClass: 'no-space', message: 'ENOSPC' },
    state: 'hang',
    actions: ['fail journal policy'],
  },

  // Operators.
  {
    name: 'pause fails what is held and ends the episode',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'pause', by: BY },
    state: 'normal',
    actions: ['fail all paused', 'disarm', 'log info', 'emit io-hang:false', 'log info', 'emit volume-paused'],
  },
  {
    name: 'resume',
    given: { paused: true },
    input: { type: 'resume', by: BY },
    state: 'normal',
    actions: ['log info', 'emit volume-resumed'],
  },
  {
    name: 'release fails what is held, once',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'release', by: BY },
    state: 'normal',
    actions: ['fail all released', 'disarm', 'log info', 'emit io-hang:false', 'log info', 'emit held-released'],
  },
  {
    name: 'release with nothing held is still recorded',
    given: {},
    input: { type: 'release', by: BY },
    state: 'normal',
    actions: ['log info', 'emit held-released'],
  },
  {
    name: 'a shorter timeout that has passed fires at once',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'policy', policy: { ...DEFAULT_HANG_POLICY, timeout: 10_000 }, by: BY },
    at: T0 + 15_000,
    state: 'timed-out',
    actions: ['log info', 'log error', 'emit io-hang-timeout:true', 'fail all timeout', 'disarm', 'log info', 'emit io-hang:false'],
  },
  {
    name: 'a longer timeout moves the deadline',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'policy', policy: { ...DEFAULT_HANG_POLICY, timeout: 300_000 }, by: BY },
    at: T0 + 15_000,
    state: 'hang',
    actions: ['log info', 'arm +300000'],
  },
  {
    name: 'forever disarms the deadline',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'policy', policy: { ...DEFAULT_HANG_POLICY, timeout: 'forever' }, by: BY },
    state: 'hang',
    actions: ['log info', 'disarm'],
  },
  {
    name: 'failing the episode class fails what is held',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'policy', policy: { ...DEFAULT_HANG_POLICY, classes: { ...DEFAULT_HANG_POLICY.classes, transient: 'fail' } }, by: BY },
    state: 'normal',
    actions: ['log info', 'fail all policy', 'disarm', 'log info', 'emit io-hang:false'],
  },
  {
    name: 'timeout off fails what is held',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'policy', policy: { ...DEFAULT_HANG_POLICY, timeout: 'off' }, by: BY },
    state: 'normal',
    actions: ['log info', 'fail all policy', 'disarm', 'log info', 'emit io-hang:false'],
  },

  // Journal pressure and shutdown.
  {
    name: 'journal pressure high',
    given: {},
    input: { type: 'journal-usage', bytes: 80, limit: 100, waiting: 0 },
    state: 'normal',
    actions: ['emit journal-pressure'],
  },
  {
    name: 'journal pressure unchanged',
    given: {},
    input: { type: 'journal-usage', bytes: 10, limit: 100, waiting: 0 },
    state: 'normal',
    actions: [],
  },
  {
    name: 'close drops what is held',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'close' },
    state: 'hang',
    actions: ['drop', 'disarm', 'log info', 'emit io-hang:false', 'disarm'],
  },
]);

function emitted(step: { actions: readonly HangAction[] }): HoldfastEvent[] {
  return step.actions.flatMap((a) => (a.type === 'emit' ? [a.event] : []));
}

describe('hang transition details', () => {
  it('operator events and logs say who asked and how many requests were failed', () => {
    const by: RequestedBy = { address: '[::1]:41000', token: 'sha256:0123456789ab' };
    const step = transition(
      machine({ state: 'hang', store: 'reads', held: { requests: 3, bytes: 12288, reads: 3 } }),
      { type: 'pause', by },
      T0 + 2000,
    );
    const paused = emitted(step).find((e) => e.kind === 'volume-paused');
    assert.ok(paused?.kind === 'volume-paused');
    assert.deepEqual(paused.requestedBy, by);
    assert.equal(paused.failed, 3);
    assert.equal(paused.episode, 'ep');
    const log = step.actions.find((a) => a.type === 'log' && a.msg.includes('paused'));
    assert.ok(log?.type === 'log');
    assert.deepEqual(log.fields, { volume: 'v1', requestedBy: by, failed: 3 });
    assert.equal(step.machine.paused, true);
  });

  it('set and clear events of one episode share its id; every event has its own', () => {
    let m = machine({ store: 'reads' });
    const events: HoldfastEvent[] = [];
    for (const [input, at] of [
      [{ type: 'held', held: HELD_READ }, T0],
      [{ type: 'drained' }, T0 + 4000],
    ] as const) {
      const step = transition(m, input, at);
      m = step.machine;
      events.push(...emitted(step));
    }
    assert.deepEqual(
      events.map((e) => e.kind),
      ['io-hang', 'io-hang'],
    );
    assert.equal(events[0]!.episode, events[1]!.episode);
    assert.notEqual(events[0]!.id, events[1]!.id);
    const clear = events[1]!;
    assert.ok(clear.kind === 'io-hang' && !clear.set && clear.durationMs === 4000);
  });

  it('the status shows the deadline from the episode start and the policy as the API writes it', () => {
    const s = snapshot(machine({ state: 'hang', store: 'writes', held: HELD_WRITES, policy: { timeout: 3000 } }), T0 + 1200);
    assert.equal(s.state, 'hang');
    assert.deepEqual(s.episode, {
      id: 'ep',
      startedAt: '2026-01-01T00:00:00.000Z',
      durationMs: 1200,
      deadline: '2026-01-01T00:00:03.000Z',
    });
    assert.equal(s.policy.timeout, '3s');
    assert.equal(s.storageUnavailableSince, '2025-12-31T23:59:59.000Z');
  });

  it('writes that must wait for room are refused or let wait as the state says', () => {
    assert.equal(writeRefusal(machine({ store: 'writes' }), false), undefined, 'a write with room never waits for the store');
    assert.equal(writeRefusal(machine({ store: 'writes' }), true), undefined, 'held');
    assert.equal(writeRefusal(machine({ store: 'reads' }), true), undefined, 'failing reads do not stop uploads');
    assert.equal(writeRefusal(machine({ store: 'writes', paused: true }), true)?.reason, 'paused');
    assert.equal(writeRefusal(machine({ store: 'writes', storeClass: 'denied' }), true)?.reason, 'policy');
    assert.equal(writeRefusal(machine({ state: 'timed-out', store: 'writes' }), true)?.reason, 'timed-out');
    assert.equal(
      writeRefusal(machine({ state: 'timed-out', store: 'writes' }), false),
      undefined,
      'timed out, a write with room still goes to the journal',
    );
    assert.equal(
      writeRefusal(machine({ journal: 'no-space', policy: { classes: { ...DEFAULT_HANG_POLICY.classes, 'no-space': 'fail' } } }), false)
        ?.reason,
      'policy',
    );
    assert.equal(writeRefusal(machine({ state: 'timed-out', journal: 'io' }), false)?.reason, 'timed-out');
  });

  it('a closed machine ignores everything', () => {
    const closed = transition(machine(), { type: 'close' }, T0).machine;
    const step = transition(closed, { type: 'store-failed', path: 'read', errorClass: 'transient', message: 'x' }, T0);
    assert.equal(step.machine, closed);
    assert.deepEqual(step.actions, []);
  });
});
