import type { ErrorClass, JournalPressureLevel } from '../../shared/events.js';
import { holdsClass, policyDocument, type HangPolicy, type HangPolicyDocument } from '../../shared/hang-policy.js';
import { StorageFailedError, type FailReason } from './errors.js';

/**
 * The state of one volume's hang engine as plain immutable data: what `transition` (transition.ts)
 * reads and returns, and what the queries below answer from. Nothing here does I/O or reads a clock.
 */

/** A hang episode: from the first request held until none is (or the timeout fails them). */
export interface Episode {
  /** Shared by the episode's set and clear events. */
  readonly id: string;
  readonly startedAt: number;
  readonly errorClass: ErrorClass | null;
  readonly lastError: string | null;
}

/** Whether guest requests are being held: exactly one of these at a time. */
export type HangState =
  | { readonly kind: 'normal' }
  | { readonly kind: 'hang'; readonly episode: Episode }
  /** The timeout fired: requests that need failing storage fail at once until it answers again. */
  | { readonly kind: 'timed-out'; readonly since: number; readonly episode: Episode };

export type HangStateKind = HangState['kind'];

/** Something failing: since when, under which id (shared by its set and clear events), and how. */
export interface Condition {
  readonly id: string;
  readonly since: number;
  readonly errorClass: ErrorClass;
  readonly lastError: string;
}

/**
 * The object store is failing (storage-unavailable). Reads and writes are told apart: a store that
 * lists and reads but refuses writes (a full disk, PUTs throttled) is still failing for the writes
 * waiting on uploads, however often a probe or a read succeeds. Each flag is cleared only by proof
 * for its own direction: a write by an upload that succeeds; a read by a read that succeeds, or by a
 * probe answer while no read waits to prove it.
 */
export interface StoreCondition extends Condition {
  readonly reads: boolean;
  readonly writes: boolean;
}

export interface StorageHealth {
  readonly store: StoreCondition | null;
  /** The journal disk fails writes or syncs. */
  readonly journal: Condition | null;
}

/** Guest requests held now, as the shell last counted them; `reads` of them wait on store reads. */
export interface Held {
  readonly requests: number;
  readonly bytes: number;
  readonly reads: number;
}

export const NOTHING_HELD: Held = { requests: 0, bytes: 0, reads: 0 };

export interface HangMachine {
  readonly volume: string;
  readonly gateway: string;
  readonly state: HangState;
  readonly health: StorageHealth;
  /** Set by an operator: nothing is held until resume. */
  readonly paused: boolean;
  readonly policy: HangPolicy;
  readonly held: Held;
  readonly pressure: JournalPressureLevel;
  readonly closed: boolean;
  /** Ids are `${idPrefix}-${nextId}`: unique per engine, and predictable in tests. */
  readonly idPrefix: string;
  readonly nextId: number;
}

export function initialMachine(opts: { volume: string; gateway: string; policy: HangPolicy; idPrefix: string }): HangMachine {
  return {
    volume: opts.volume,
    gateway: opts.gateway,
    state: { kind: 'normal' },
    health: { store: null, journal: null },
    paused: false,
    policy: opts.policy,
    held: NOTHING_HELD,
    pressure: 'normal',
    closed: false,
    idPrefix: opts.idPrefix,
    nextId: 1,
  };
}

export function healthy(m: HangMachine): boolean {
  return m.health.store === null && m.health.journal === null;
}

/** The class that decides what happens to held requests: the journal's failure first, then the store's. */
export function currentErrorClass(m: HangMachine): ErrorClass | null {
  return m.health.journal?.errorClass ?? m.health.store?.errorClass ?? null;
}

function currentLastError(m: HangMachine): string | null {
  return m.health.journal?.lastError ?? m.health.store?.lastError ?? null;
}

export function deadlineOf(m: HangMachine, episode: Episode): number | null {
  return typeof m.policy.timeout === 'number' ? episode.startedAt + m.policy.timeout : null;
}

/** Why a request that needs storage failing with `errorClass` must not be held; undefined: hold it. */
export function refusalFor(m: HangMachine, errorClass: ErrorClass | null): FailReason | undefined {
  if (errorClass === 'corrupt') return 'corrupt';
  if (m.policy.timeout === 'off' || (errorClass !== null && !holdsClass(m.policy, errorClass))) return 'policy';
  if (m.paused) return 'paused';
  return undefined;
}

/**
 * Asked before a write is appended: an error to answer it with now, or undefined to go on. A write
 * with journal room needs no failing storage and always goes on, unless the journal disk itself
 * fails and the policy (or a pause, or the timed-out state) says not to wait for it; one that must
 * wait for room behind failing uploads is held, or refused the same way.
 */
export function writeRefusal(m: HangMachine, mustWaitForRoom: boolean): StorageFailedError | undefined {
  const journal = m.health.journal;
  if (journal !== null) {
    if (m.state.kind === 'timed-out') return new StorageFailedError('timed-out', journal.errorClass);
    const reason = refusalFor(m, journal.errorClass);
    if (reason !== undefined) return new StorageFailedError(reason, journal.errorClass, { cause: journal.lastError });
  }
  if (!mustWaitForRoom) return undefined;
  if (m.state.kind === 'timed-out') return new StorageFailedError('timed-out', m.state.episode.errorClass);
  const store = m.health.store;
  if (store === null || !store.writes) return undefined;
  const reason = refusalFor(m, store.errorClass);
  return reason === undefined ? undefined : new StorageFailedError(reason, store.errorClass, { cause: store.lastError });
}

/** The store is asked whether it answers again while it is failing. */
export function wantsProbe(m: HangMachine): boolean {
  return !m.closed && m.health.store !== null;
}

/** What the admin API and `holdfast status` show of the engine (times as ISO strings). */
export interface HangSnapshot {
  readonly state: HangStateKind;
  readonly paused: boolean;
  readonly held: { readonly requests: number; readonly bytes: number };
  readonly episode: { id: string; startedAt: string; durationMs: number; deadline: string | null } | null;
  readonly timedOutSince: string | null;
  readonly storageUnavailableSince: string | null;
  readonly journalFailing: boolean;
  readonly errorClass: ErrorClass | null;
  readonly lastError: string | null;
  readonly journalPressure: JournalPressureLevel;
  readonly policy: HangPolicyDocument;
}

export function snapshot(m: HangMachine, now: number): HangSnapshot {
  const s = m.state;
  const iso = (t: number): string => new Date(t).toISOString();
  const episode = s.kind === 'hang' ? s.episode : null;
  const deadline = episode === null ? null : deadlineOf(m, episode);
  const source = s.kind === 'normal' ? null : s.episode;
  return {
    state: s.kind,
    paused: m.paused,
    held: { requests: m.held.requests, bytes: m.held.bytes },
    episode:
      episode === null
        ? null
        : {
            id: episode.id,
            startedAt: iso(episode.startedAt),
            durationMs: now - episode.startedAt,
            deadline: deadline === null ? null : iso(deadline),
          },
    timedOutSince: s.kind === 'timed-out' ? iso(s.since) : null,
    storageUnavailableSince: m.health.store === null ? null : iso(m.health.store.since),
    journalFailing: m.health.journal !== null,
    errorClass: m.health.journal?.errorClass ?? source?.errorClass ?? currentErrorClass(m),
    lastError: m.health.journal?.lastError ?? source?.lastError ?? currentLastError(m),
    journalPressure: m.pressure,
    policy: policyDocument(m.policy),
  };
}
