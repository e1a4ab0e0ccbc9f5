import type { ErrorClass, HoldfastEvent, RequestedBy } from '../../shared/events.js';
import { policyDocument, type HangPolicy } from '../../shared/hang-policy.js';
import type { FailReason } from './errors.js';
import {
  NOTHING_HELD,
  currentErrorClass,
  deadlineOf,
  healthy,
  refusalFor,
  type Condition,
  type Episode,
  type HangMachine,
  type Held,
  type StoreCondition,
} from './machine.js';

/**
 * The hang engine's decisions, as one pure function: `transition(machine, input, now)` returns the
 * next machine and the actions the shell (hang-monitor.ts) carries out — publish an event, log, fail
 * or drop held requests, arm or disarm the deadline timer, wake held retries. Deciding is kept apart
 * from acting (as QEMU keeps blk_get_error_action apart from blk_error_action), so that every edge
 * can be tested from a table, without timers or storage.
 */

/** Which store operations failed or answered: reads of extents, writes of uploads, or the probe. */
export type StorePath = 'read' | 'write' | 'probe';

export type HangInput =
  /** The shell counted held requests (more than none). */
  | { readonly type: 'held'; readonly held: Held }
  /** No request is held any more: each completed, failed or left. */
  | { readonly type: 'drained' }
  /** The deadline timer armed for `episode` at `at` fired. */
  | { readonly type: 'deadline'; readonly episode: string; readonly at: number }
  | { readonly type: 'store-failed'; readonly path: StorePath; readonly errorClass: ErrorClass; readonly message: string }
  | { readonly type: 'store-answered'; readonly path: 'read' | 'write' }
  /** The probe got an answer. It only wakes retries: the requests themselves prove recovery. */
  | { readonly type: 'probe-answered' }
  | { readonly type: 'journal-failed'; readonly errorClass: ErrorClass; readonly message: string }
  | { readonly type: 'journal-recovered' }
  | { readonly type: 'pause'; readonly by: RequestedBy }
  | { readonly type: 'resume'; readonly by: RequestedBy }
  | { readonly type: 'release'; readonly by: RequestedBy }
  | { readonly type: 'policy'; readonly policy: HangPolicy; readonly by: RequestedBy }
  /** Stored data failed its check: never held, reported. */
  | { readonly type: 'corrupt'; readonly message: string }
  | { readonly type: 'journal-usage'; readonly bytes: number; readonly limit: number; readonly waiting: number }
  /** Gateway shutdown: held requests are dropped unanswered. */
  | { readonly type: 'close' };

export type HangInputType = HangInput['type'];

export type HangAction =
  | { readonly type: 'emit'; readonly event: HoldfastEvent }
  | {
      readonly type: 'log';
      readonly level: 'info' | 'warn' | 'error';
      readonly msg: string;
      readonly fields: Readonly<Record<string, unknown>>;
    }
  /** Answer held requests with this failure: all of them, or only those waiting on the journal. */
  | {
      readonly type: 'fail-held';
      readonly reason: FailReason;
      readonly errorClass: ErrorClass | null;
      readonly cause: string | null;
      readonly scope: 'all' | 'journal';
    }
  | { readonly type: 'drop-held' }
  | { readonly type: 'arm-deadline'; readonly episode: string; readonly at: number }
  | { readonly type: 'disarm-deadline' }
  | { readonly type: 'wake-retries' };

export interface Step {
  readonly machine: HangMachine;
  readonly actions: readonly HangAction[];
}

const NO_ACTIONS: readonly HangAction[] = [];

export function transition(machine: HangMachine, input: HangInput, now: number): Step {
  if (machine.closed) return { machine, actions: NO_ACTIONS };
  const b = new StepBuilder(machine, now);
  switch (input.type) {
    case 'held':
      onHeld(b, input.held);
      break;
    case 'drained':
      b.set({ held: NOTHING_HELD });
      if (b.m.state.kind === 'hang') endEpisode(b, b.m.state.episode);
      break;
    case 'deadline': {
      const s = b.m.state;
      if (s.kind === 'hang' && s.episode.id === input.episode && deadlineOf(b.m, s.episode) === input.at) fireTimeout(b, s.episode);
      break;
    }
    case 'store-failed':
      onStoreFailed(b, input.path, input.errorClass, input.message);
      break;
    case 'store-answered':
      onStoreAnswered(b, input.path);
      break;
    case 'probe-answered':
      onProbeAnswered(b);
      break;
    case 'journal-failed':
      onJournalFailed(b, input.errorClass, input.message);
      break;
    case 'journal-recovered':
      b.set({ health: { ...b.m.health, journal: null } });
      break;
    case 'pause':
    case 'release':
      onOperatorFail(b, input.type, input.by);
      break;
    case 'resume':
      b.set({ paused: false });
      b.log('info', 'hang handling resumed by an operator', { requestedBy: input.by });
      b.emit({ kind: 'volume-resumed', requestedBy: input.by, ...b.base(null) });
      break;
    case 'policy':
      onPolicy(b, input.policy, input.by);
      break;
    case 'corrupt':
      reportCorrupt(b, input.message);
      break;
    case 'journal-usage':
      onJournalUsage(b, input.bytes, input.limit, input.waiting);
      break;
    case 'close':
      b.set({ closed: true, held: NOTHING_HELD });
      b.act({ type: 'drop-held' });
      if (b.m.state.kind === 'hang') closeEpisode(b, b.m.state.episode);
      b.act({ type: 'disarm-deadline' });
      break;
  }
  settle(b);
  return b.result();
}

/** Collects the next machine and the actions of one step; ids come from the machine's counter. */
class StepBuilder {
  private readonly actions: HangAction[] = [];
  private changed = false;

  constructor(
    public m: HangMachine,
    readonly now: number,
  ) {}

  set(patch: Partial<HangMachine>): void {
    this.m = { ...this.m, ...patch };
    this.changed = true;
  }

  id(): string {
    const id = `${this.m.idPrefix}-${this.m.nextId}`;
    this.set({ nextId: this.m.nextId + 1 });
    return id;
  }

  act(action: HangAction): void {
    this.actions.push(action);
  }

  log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown>): void {
    this.act({ type: 'log', level, msg, fields: { volume: this.m.volume, ...fields } });
  }

  emit(event: HoldfastEvent): void {
    this.act({ type: 'emit', event });
  }

  /** The fields every event carries; `condition` names the episode and what failed. */
  base(condition: { readonly id: string; readonly errorClass: ErrorClass | null; readonly lastError: string | null } | null) {
    return {
      id: this.id(),
      volume: this.m.volume,
      gateway: this.m.gateway,
      episode: condition?.id ?? 'none',
      time: new Date(this.now).toISOString(),
      held: { requests: this.m.held.requests, bytes: this.m.held.bytes },
      errorClass: condition?.errorClass ?? null,
      lastError: condition?.lastError ?? null,
    };
  }

  emitCondition(kind: 'io-hang' | 'io-hang-timeout' | 'storage-unavailable', set: boolean, c: Condition | Episode, since: number): void {
    const base = this.base(c);
    this.emit(set ? { ...base, kind, set: true } : { ...base, kind, set: false, durationMs: this.now - since });
  }

  result(): Step {
    return this.changed || this.actions.length > 0 ? { machine: this.m, actions: this.actions } : { machine: this.m, actions: NO_ACTIONS };
  }
}

function onHeld(b: StepBuilder, held: Held): void {
  b.set({ held });
  const s = b.m.state;
  if (s.kind === 'hang') return;
  if (s.kind === 'timed-out') {
    failHeld(b, 'timed-out', s.episode.errorClass, s.episode.lastError, 'all');
    return;
  }
  const errorClass = currentErrorClass(b.m);
  const reason = refusalFor(b.m, errorClass);
  if (reason !== undefined) {
    failHeld(b, reason, errorClass, null, 'all');
    return;
  }
  const h = b.m.health;
  const episode: Episode = { id: b.id(), startedAt: b.now, errorClass, lastError: h.journal?.lastError ?? h.store?.lastError ?? null };
  b.set({ state: { kind: 'hang', episode } });
  b.log('warn', 'I/O hang: holding guest requests until storage answers', { episode: episode.id, errorClass });
  b.emitCondition('io-hang', true, episode, episode.startedAt);
  const at = deadlineOf(b.m, episode);
  if (at !== null) b.act({ type: 'arm-deadline', episode: episode.id, at });
}

/** The episode is over; `closeEpisode` says so, the state goes back to normal. */
function endEpisode(b: StepBuilder, episode: Episode): void {
  b.set({ state: { kind: 'normal' } });
  closeEpisode(b, episode);
}

function closeEpisode(b: StepBuilder, episode: Episode): void {
  b.act({ type: 'disarm-deadline' });
  b.log('info', 'I/O hang over', { episode: episode.id, durationMs: b.now - episode.startedAt });
  b.emitCondition('io-hang', false, episode, episode.startedAt);
}

/** The timeout: held requests fail now, and requests that need failing storage fail fast until it answers. */
function fireTimeout(b: StepBuilder, episode: Episode): void {
  b.set({ state: { kind: 'timed-out', since: b.now, episode } });
  b.log('error', 'hang timeout: failing held requests with EIO', { episode: episode.id, timeoutMs: b.m.policy.timeout });
  b.emitCondition('io-hang-timeout', true, episode, b.now);
  b.act({ type: 'fail-held', reason: 'timeout', errorClass: episode.errorClass, cause: episode.lastError, scope: 'all' });
  b.set({ held: NOTHING_HELD });
  closeEpisode(b, episode);
}

/** Answers held requests with an error; when that is all of them, the episode ends with it. */
function failHeld(b: StepBuilder, reason: FailReason, errorClass: ErrorClass | null, cause: string | null, scope: 'all' | 'journal'): void {
  b.act({ type: 'fail-held', reason, errorClass, cause, scope });
  if (scope === 'journal') return;
  b.set({ held: NOTHING_HELD });
  if (b.m.state.kind === 'hang') endEpisode(b, b.m.state.episode);
}

function noteEpisodeError(b: StepBuilder, errorClass: ErrorClass, message: string): void {
  const s = b.m.state;
  if (s.kind === 'hang') b.set({ state: { kind: 'hang', episode: { ...s.episode, errorClass, lastError: message } } });
}

function setStore(b: StepBuilder, store: StoreCondition | null): void {
  b.set({ health: { ...b.m.health, store } });
}

function onStoreFailed(b: StepBuilder, path: StorePath, errorClass: ErrorClass, message: string): void {
  if (errorClass === 'corrupt') {
    reportCorrupt(b, message);
    return;
  }
  const store = b.m.health.store;
  if (path === 'probe') {
    // A probe failure only refreshes what is known; the probe runs only while the store is failing.
    if (store !== null) setStore(b, { ...store, errorClass, lastError: message });
    return;
  }
  const reads = path === 'read';
  if (store === null) {
    const c: StoreCondition = { id: b.id(), since: b.now, errorClass, lastError: message, reads, writes: !reads };
    setStore(b, c);
    b.log('warn', 'object store unavailable', { errorClass, err: message });
    b.emitCondition('storage-unavailable', true, c, c.since);
  } else {
    setStore(b, { ...store, errorClass, lastError: message, reads: store.reads || reads, writes: store.writes || !reads });
  }
  noteEpisodeError(b, errorClass, message);
}

function onStoreAnswered(b: StepBuilder, path: 'read' | 'write'): void {
  const store = b.m.health.store;
  if (store === null) return;
  const next = { ...store, reads: path === 'read' ? false : store.reads, writes: path === 'write' ? false : store.writes };
  if (next.reads || next.writes) {
    if (next.reads !== store.reads || next.writes !== store.writes) setStore(b, next);
    return;
  }
  storeRecovered(b, store);
}

function storeRecovered(b: StepBuilder, store: StoreCondition): void {
  setStore(b, null);
  b.log('info', 'object store answers again', { durationMs: b.now - store.since });
  b.emitCondition('storage-unavailable', false, store, store.since);
  b.act({ type: 'wake-retries' });
}

/**
 * A probe answer wakes every held retry and upload at once, so recovery does not wait for a
 * back-off. It clears nothing a request could prove instead: failed writes wait for an upload to
 * succeed, failed reads for a read — unless no read is held, and then the probe is the only witness.
 */
function onProbeAnswered(b: StepBuilder): void {
  const store = b.m.health.store;
  if (store === null) return;
  if (store.reads && b.m.held.reads === 0) {
    if (!store.writes) {
      storeRecovered(b, store);
      return;
    }
    setStore(b, { ...store, reads: false });
  }
  b.act({ type: 'wake-retries' });
}

function onJournalFailed(b: StepBuilder, errorClass: ErrorClass, message: string): void {
  const j = b.m.health.journal;
  b.set({
    health: {
      ...b.m.health,
      journal: j === null ? { id: b.id(), since: b.now, errorClass, lastError: message } : { ...j, errorClass, lastError: message },
    },
  });
  noteEpisodeError(b, errorClass, message);
  const reason = refusalFor(b.m, errorClass);
  if (reason !== undefined) failHeld(b, reason, errorClass, message, 'journal');
}

function onOperatorFail(b: StepBuilder, type: 'pause' | 'release', by: RequestedBy): void {
  const failed = b.m.held.requests;
  const s = b.m.state;
  const source = s.kind === 'normal' ? null : s.episode;
  if (type === 'pause') b.set({ paused: true });
  if (failed > 0)
    failHeld(b, type === 'pause' ? 'paused' : 'released', source?.errorClass ?? currentErrorClass(b.m), source?.lastError ?? null, 'all');
  if (type === 'pause') {
    b.log('info', 'hang handling paused by an operator: held requests failed, failures not held until resume', { requestedBy: by, failed });
    b.emit({ kind: 'volume-paused', requestedBy: by, failed, ...b.base(source) });
  } else {
    b.log('info', 'held requests released by an operator', { requestedBy: by, failed });
    b.emit({ kind: 'held-released', requestedBy: by, failed, ...b.base(source) });
  }
}

/** A new policy applies to the running episode: its deadline counts from the episode's start. */
function onPolicy(b: StepBuilder, policy: HangPolicy, by: RequestedBy): void {
  b.set({ policy });
  b.log('info', 'hang policy changed', { requestedBy: by, policy: policyDocument(policy) });
  const s = b.m.state;
  if (s.kind !== 'hang') return;
  const reason = refusalFor(b.m, s.episode.errorClass);
  if (reason !== undefined) {
    failHeld(b, reason, s.episode.errorClass, s.episode.lastError, 'all');
    return;
  }
  const at = deadlineOf(b.m, s.episode);
  if (at === null) b.act({ type: 'disarm-deadline' });
  else if (at <= b.now) fireTimeout(b, s.episode);
  else b.act({ type: 'arm-deadline', episode: s.episode.id, at });
}

function reportCorrupt(b: StepBuilder, message: string): void {
  b.log('error', 'stored data is corrupt: the request fails, nothing is held', { err: message });
  const s = b.m.state;
  b.emit({
    kind: 'data-corrupt',
    ...b.base({ id: s.kind === 'normal' ? 'none' : s.episode.id, errorClass: 'corrupt', lastError: message }),
  });
}

function onJournalUsage(b: StepBuilder, bytes: number, limit: number, waiting: number): void {
  const level = waiting > 0 || bytes >= limit ? 'full' : bytes >= limit * 0.75 ? 'high' : 'normal';
  if (level === b.m.pressure) return;
  b.set({ pressure: level });
  const s = b.m.state;
  const condition = s.kind === 'hang' ? s.episode : b.m.health.store;
  b.emit({ kind: 'journal-pressure', level, journalBytes: bytes, journalLimitBytes: limit, ...b.base(condition) });
}

/** Timed out, and every storage failure has been answered: the volume serves normally again. */
function settle(b: StepBuilder): void {
  const s = b.m.state;
  if (s.kind !== 'timed-out' || !healthy(b.m)) return;
  b.set({ state: { kind: 'normal' } });
  b.log('info', 'storage answers again: hang timeout cleared', { episode: s.episode.id });
  b.emitCondition('io-hang-timeout', false, s.episode, s.since);
}
