import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HoldfastEventSchema, type HoldfastEvent, type RequestedBy } from '../../shared/events.js';
import { DEFAULT_HANG_POLICY, type HangPolicy } from '../../shared/hang-policy.js';
import {
  initialMachine,
  snapshot,
  writeRefusal,
  type HangMachine,
  type HangState,
  type StorageHealth,
} from '../../gateway/hang/machine.js';
import { transition, type HangAction, type HangInput } from '../../gateway/hang/transition.js';

/**
 * The hang engine's decisions, one row per edge: a machine, an input, the machine after and the
 * actions in order. No timers, no storage: `now` is a number in each row.
 */

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const EPISODE = { id: 'ep', startedAt: T0, errorClass: 'transient' as const, lastError: 'connect ECONNREFUSED' };
const BY: RequestedBy = { address: '127.0.0.1:50000', token: null };

interface Given {
  readonly state?: 'normal' | 'hang' | 'timed-out';
  /** Which store directions fail; absent: the store answers. */
  readonly store?: 'reads' | 'writes' | 'both';
  readonly storeClass?: 'transient' | 'denied' | 'no-space';
  readonly journal?: 'io' | 'no-space';
  readonly paused?: boolean;
  readonly policy?: Partial<HangPolicy>;
  readonly held?: { requests: number; bytes: number; reads: number };
}

function machine(g: Given = {}): HangMachine {
  const base = initialMachine({ volume: 'v1', gateway: 'gw', policy: { ...DEFAULT_HANG_POLICY, ...g.policy }, idPrefix: 't' });
  const state: HangState =
    g.state === 'hang'
      ? { kind: 'hang', episode: EPISODE }
      : g.state === 'timed-out'
        ? { kind: 'timed-out', since: T0 + 120_000, episode: EPISODE }
        : { kind: 'normal' };
  const health: StorageHealth = {
    store:
      g.store === undefined
        ? null
        : {
            id: 'su',
            since: T0 - 1000,
            errorClass: g.storeClass ?? 'transient',
            lastError: 'connect ECONNREFUSED',
            reads: g.store !== 'writes',
            writes: g.store !== 'reads',
          },
    journal: g.journal === undefined ? null : { id: 'jf', since: T0 - 500, errorClass: g.journal, lastError: 'EIO: i/o error, write' },
  };
  return { ...base, state, health, paused: g.paused ?? false, held: g.held ?? { requests: 0, bytes: 0, reads: 0 } };
}

/** An action as one short string, so that a row states the whole sequence. */
function describeAction(a: HangAction): string {
  switch (a.type) {
    case 'emit':
      return `emit ${a.event.kind}${'set' in a.event ? `:${a.event.set}` : ''}`;
    case 'log':
      return `log ${a.level}`;
    case 'fail-held':
      return `fail ${a.scope} ${a.reason}`;
    case 'drop-held':
      return 'drop';
    case 'arm-deadline':
      return `arm +${a.at - T0}`;
    case 'disarm-deadline':
      return 'disarm';
    case 'wake-retries':
      return 'wake';
  }
}

function storeFlags(m: HangMachine): string {
  const s = m.health.store;
  return s === null ? 'ok' : `${s.reads ? 'reads' : ''}${s.reads && s.writes ? '+' : ''}${s.writes ? 'writes' : ''}`;
}

interface Row {
  readonly name: string;
  readonly given: Given;
  readonly input: HangInput;
  readonly at?: number;
  readonly state: 'normal' | 'hang' | 'timed-out';
  readonly store?: string;
  readonly actions: readonly string[];
}

const HELD_READ = { requests: 1, bytes: 4096, reads: 1 };
const HELD_WRITES = { requests: 2, bytes: 8192, reads: 0 };

const ROWS: readonly Row[] = [
  // A request held: an episode begins, its deadline armed from its start.
  {
    name: 'a held read begins an episode',
    given: { store: 'reads' },
    input: { type: 'held', held: HELD_READ },
    at: T0,
    state: 'hang',
    actions: ['log warn', 'emit io-hang:true', 'arm +120000'],
  },
  {
    name: 'writes held behind failing uploads begin an episode',
    given: { store: 'writes' },
    input: { type: 'held', held: HELD_WRITES },
    at: T0,
    state: 'hang',
    actions: ['log warn', 'emit io-hang:true', 'arm +120000'],
  },
  {
    name: 'forever arms no deadline',
    given: { store: 'reads', policy: { timeout: 'forever' } },
    input: { type: 'held', held: HELD_READ },
    state: 'hang',
    actions: ['log warn', 'emit io-hang:true'],
  },
  {
    name: 'a timeout beyond a Node timer is armed as it is (the shell waits in steps)',
    given: { store: 'reads', policy: { timeout: 597 * 3_600_000 } },
    input: { type: 'held', held: HELD_READ },
    at: T0,
    state: 'hang',
    actions: ['log warn', 'emit io-hang:true', `arm +${597 * 3_600_000}`],
  },
  {
    name: 'paused: held requests fail at once',
    given: { store: 'reads', paused: true },
    input: { type: 'held', held: HELD_READ },
    state: 'normal',
    actions: ['fail all paused'],
  },
  {
    name: 'timeout off: nothing is held',
    given: { store: 'reads', policy: { timeout: 'off' } },
    input: { type: 'held', held: HELD_READ },
    state: 'normal',
    actions: ['fail all policy'],
  },
  {
    name: 'a class the policy fails is not held',
    given: { store: 'writes', storeClass: 'denied' },
    input: { type: 'held', held: HELD_WRITES },
    state: 'normal',
    actions: ['fail all policy'],
  },
  {
    name: 'timed out: newly held requests fail fast',
    given: { state: 'timed-out', store: 'writes' },
    input: { type: 'held', held: HELD_WRITES },
    state: 'timed-out',
    actions: ['fail all timed-out'],
  },
  {
    name: 'more held during an episode changes nothing else',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'held', held: { requests: 2, bytes: 8192, reads: 2 } },
    state: 'hang',
    actions: [],
  },

  // The episode ends when the held work is done, and only then.
  {
    name: 'drained ends the episode',
    given: { state: 'hang', held: HELD_READ },
    input: { type: 'drained' },
    at: T0 + 5000,
    state: 'normal',
    actions: ['disarm', 'log info', 'emit io-hang:false'],
  },
  {
    name: 'a probe answer while uploads fail only wakes retries',
    given: { state: 'hang', store: 'writes', held: HELD_WRITES },
    input: { type: 'probe-answered' },
    state: 'hang',
    store: 'writes',
    actions: ['wake'],
  },
  {
    name: 'a probe answer while a read is held only wakes it',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'probe-answered' },
    state: 'hang',
    store: 'reads',
    actions: ['wake'],
  },
  {
    name: 'a probe answer clears failed reads none waits to prove, not the episode',
    given: { state: 'hang', store: 'reads', held: HELD_WRITES },
    input: { type: 'probe-answered' },
    state: 'hang',
    store: 'ok',
    actions: ['log info', 'emit storage-unavailable:false', 'wake'],
  },
  {
    name: 'a probe answer leaves failed writes failing',
    given: { state: 'hang', store: 'both', held: HELD_WRITES },
    input: { type: 'probe-answered' },
    state: 'hang',
    store: 'writes',
    actions: ['wake'],
  },
  {
    name: 'an upload that succeeds ends storage-unavailable, not the episode',
    given: { state: 'hang', store: 'writes', held: HELD_WRITES },
    input: { type: 'store-answered', path: 'write' },
    state: 'hang',
    store: 'ok',
    actions: ['log info', 'emit storage-unavailable:false', 'wake'],
  },
  {
    name: 'a read that succeeds does not clear failing writes',
    given: { state: 'hang', store: 'both', held: HELD_WRITES },
    input: { type: 'store-answered', path: 'read' },
    state: 'hang',
    store: 'writes',
    actions: [],
  },

  // The timeout.
  {
    name: 'the deadline fails held requests and times out',
    given: { state: 'hang', store: 'writes', held: HELD_WRITES },
    input: { type: 'deadline', episode: 'ep', at: T0 + 120_000 },
    at: T0 + 120_000,
    state: 'timed-out',
    actions: ['log error', 'emit io-hang-timeout:true', 'fail all timeout', 'disarm', 'log info', 'emit io-hang:false'],
  },
  {
    name: 'a deadline of another episode is ignored',
    given: { state: 'hang', store: 'reads', held: HELD_READ },
    input: { type: 'deadline', episode: 'old', at: T0 + 120_000 },
    state: 'hang',
    actions: [],
  },
  {
    name: 'a deadline the policy moved is ignored',
    given: { state: 'hang', store: 'reads', held: HELD_READ, policy: { timeout: 300_000 } },
    input: { type: 'deadline', episode: 'ep', at: T0 + 120_000 },
    state: 'hang',
    actions: [],
  },
  {
    name: 'timed out: a probe answer while uploads fail changes nothing',
    given: { state: 'timed-out', store: 'writes' },
    input: { type: 'probe-answered' },
    state: 'timed-out',
    store: 'writes',
    actions: ['wake'],
  },
  {
    name: 'timed out: a successful upload clears the timeout',
    given: { state: 'timed-out', store: 'writes' },
    input: { type: 'store-answered', path: 'write' },
    at: T0 + 130_000,
    state: 'normal',
    store: 'ok',
    actions: ['log info', 'emit storage-unavailable:false', 'wake', 'log info', 'emit io-hang-timeout:false'],
  },
  {
    name: 'timed out: a probe answer clears failed reads none waits on',
    given: { state: 'timed-out', store: 'reads' },
    input: { type: 'probe-answered' },
    at: T0 + 130_000,
    state: 'normal',
    store: 'ok',
    actions: ['log info', 'emit storage-unavailable:false', 'wake', 'log info', 'emit io-hang-timeout:false'],
  },
  {
    name: 'timed out: the store answering leaves a failing journal timed out',
    given: { state: 'timed-out', store: 'writes', journal: 'io' },
    input: { type: 'store-answered', path: 'write' },
    state: 'timed-out',
    store: 'ok',
    actions: ['log info', 'emit storage-unavailable:false', 'wake'],
  },
  {
    name: 'timed out: the journal recovering clears the timeout',
    given: { state: 'timed-out', journal: 'io' },
    input: { type: 'journal-recovered' },
    at: T0 + 130_000,
    state: 'normal',
    actions: ['log info', 'emit io-hang-timeout:false'],
  },

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
];

describe('hang transitions', () => {
  for (const row of ROWS) {
    it(row.name, () => {
      const before = machine(row.given);
      const step = transition(before, row.input, row.at ?? T0 + 1000);
      assert.deepEqual(step.actions.map(describeAction), row.actions);
      assert.equal(step.machine.state.kind, row.state);
      if (row.store !== undefined) assert.equal(storeFlags(step.machine), row.store);
      for (const a of step.actions) if (a.type === 'emit') HoldfastEventSchema.parse(a.event);
      if (step.actions.length === 0 && step.machine === before)
        assert.equal(step.machine, before, 'nothing happened: the same machine comes back');
    });
  }
});

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
