import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HoldfastEventSchema, type RequestedBy } from '../../shared/events.js';
import { DEFAULT_HANG_POLICY, type HangPolicy } from '../../shared/hang-policy.js';
import { initialMachine, type HangMachine, type HangState, type StorageHealth } from '../../gateway/hang/machine.js';
import { transition, type HangAction, type HangInput } from '../../gateway/hang/transition.js';

/** Machines in a given state, and a runner for tables of transitions: for the hang engine's table tests. */

export const T0 = Date.parse('2026-01-01T00:00:00.000Z');
export const EPISODE = { id: 'ep', startedAt: T0, errorClass: 'transient' as const, lastError: 'connect ECONNREFUSED' };
export const BY: RequestedBy = { address: '127.0.0.1:50000', token: null };

export interface Given {
  readonly state?: 'normal' | 'hang' | 'timed-out';
  /** Which store directions fail; absent: the store answers. */
  readonly store?: 'reads' | 'writes' | 'both';
  readonly storeClass?: 'transient' | 'denied' | 'no-space';
  readonly journal?: 'io' | 'no-space';
  readonly paused?: boolean;
  readonly policy?: Partial<HangPolicy>;
  readonly held?: { requests: number; bytes: number; reads: number };
}

export function machine(g: Given = {}): HangMachine {
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
export function describeAction(a: HangAction): string {
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

export function storeFlags(m: HangMachine): string {
  const s = m.health.store;
  return s === null ? 'ok' : `${s.reads ? 'reads' : ''}${s.reads && s.writes ? '+' : ''}${s.writes ? 'writes' : ''}`;
}

export interface Row {
  readonly name: string;
  readonly given: Given;
  readonly input: HangInput;
  readonly at?: number;
  readonly state: 'normal' | 'hang' | 'timed-out';
  readonly store?: string;
  readonly actions: readonly string[];
}

export const HELD_READ = { requests: 1, bytes: 4096, reads: 1 };
export const HELD_WRITES = { requests: 2, bytes: 8192, reads: 0 };

/** Runs each row: the machine it gives, the input at its time, then the state and the actions in order. */
export function transitionTable(title: string, rows: readonly Row[]): void {
  describe(title, () => {
    for (const row of rows) {
      it(row.name, () => {
        const before = machine(row.given);
        const step = transition(before, row.input, row.at ?? T0 + 1000);
        assert.deepEqual(step.actions.map(describeAction), row.actions);
        assert.equal(step.machine.state.kind, row.state);
        if (row.store !== undefined) assert.equal(storeFlags(step.machine), row.store);
        for (const a of step.actions) if (a.type === 'emit') HoldfastEventSchema.parse(a.event);
      });
    }
  });
}
