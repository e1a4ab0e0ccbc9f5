import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { RequestAbortedError, RequestDroppedError, errorMessage } from '../../shared/errors.js';
import type { ErrorClass, HoldfastEvent, JournalPressureLevel } from '../../shared/events.js';
import type { HangPolicy } from '../../shared/hang-policy.js';
import type { EventSink } from '../events/event-sink.js';
import { backoffMs } from './backoff.js';
import { classifyError } from './classify.js';
import { StorageFailedError, type FailReason } from './errors.js';

export type HangState = 'normal' | 'hang' | 'timed-out';

/** What the journal tells the monitor about writes waiting on it. */
export interface JournalWaiters {
  /** Writes waiting for journal room or for a sync that keeps failing. */
  held(): { requests: number; bytes: number };
  /** Answers every waiting write with `err`; the records already queued are still written. */
  failWaiters(err: Error): void;
  usage(): { bytes: number; limit: number };
}

export interface HangMonitorOptions {
  readonly volume: string;
  readonly gateway: string;
  readonly policy: HangPolicy;
  /** A cheap store request; its success means the store answers again. */
  readonly probe: () => Promise<void>;
  readonly journal: JournalWaiters;
  readonly events: EventSink;
  readonly logger: Logger;
  readonly probeIntervalMs?: number;
  readonly retryInitialMs?: number;
  /** Called when the store answers again after failures (the uploader resumes at once). */
  readonly onStoreRecovered?: () => void;
}

interface HeldRead {
  readonly bytes: number;
  /** Wakes the request's back-off sleep early (storage answered). */
  wake: (() => void) | undefined;
  /** Ends holding: the request is answered with this error. */
  fail: (err: Error) => void;
  failed: Error | undefined;
}

interface Episode {
  readonly id: string;
  readonly startedAt: number;
  errorClass: ErrorClass | null;
  lastError: string | null;
}

export interface HangSnapshot {
  readonly state: HangState;
  readonly paused: boolean;
  readonly held: { requests: number; bytes: number };
  readonly episode: { id: string; startedAt: string; durationMs: number; deadline: string | null } | null;
  readonly timedOutSince: string | null;
  readonly storageUnavailableSince: string | null;
  readonly journalFailing: boolean;
  readonly errorClass: ErrorClass | null;
  readonly lastError: string | null;
  readonly journalPressure: JournalPressureLevel;
  readonly policy: HangPolicy;
}

export interface HangCounters {
  episodes: number;
  hangSeconds: number;
  timeouts: number;
  retries: number;
  failedFast: number;
  storageErrors: Record<ErrorClass, number>;
}

const DEFAULT_PROBE_INTERVAL_MS = 200;
/**
 * A store attempt unanswered this long holds its read. A black-holed store (a frozen server, a
 * dropped route) answers nothing until the SDK's request time-out, seconds later; without this the
 * hang would begin, and its timeout start counting, only then. A store merely slower than this
 * shows as a short hang, which is what the guest sees too.
 */
const STALL_MS = 1000;

/**
 * The I/O-hang state machine of one volume. A guest request that needs failing storage is held —
 * left unanswered and retried — instead of failed, as long as the policy holds that error class.
 *
 * Fixes over the QEMU patches it descends from: retries wake as soon as a probe sees the store
 * answer (no fixed 5 s tick); the timeout is a timer set at the start of the episode (not checked
 * at completions) and follows policy changes made during the episode; pause and release complete
 * held requests so that drain can never hang; every edge is an event naming the volume and episode,
 * including "timeout cleared"; and errors are classified, each class with its own action.
 */
export class HangMonitor {
  private policyValue: HangPolicy;
  private readonly reads = new Set<HeldRead>();
  private episode: Episode | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private timedOut: Episode | undefined;
  private storageDown: Episode | undefined;
  private journalError: { errorClass: ErrorClass; message: string; cause: unknown } | undefined;
  private pausedFlag = false;
  private probing = false;
  private closed = false;
  private pressure: JournalPressureLevel = 'normal';
  private readonly ticker: NodeJS.Timeout;
  readonly counters: HangCounters = {
    episodes: 0,
    hangSeconds: 0,
    timeouts: 0,
    retries: 0,
    failedFast: 0,
    storageErrors: { transient: 0, denied: 0, missing: 0, 'no-space': 0, io: 0, invalid: 0 },
  };

  constructor(private readonly opts: HangMonitorOptions) {
    this.policyValue = opts.policy;
    // Journal waiters and pressure change on the hot path; they are sampled here instead.
    this.ticker = setInterval(() => this.refresh(), 250);
    this.ticker.unref();
  }

  get policy(): HangPolicy {
    return this.policyValue;
  }

  get state(): HangState {
    if (this.timedOut !== undefined) return 'timed-out';
    return this.episode !== undefined ? 'hang' : 'normal';
  }

  get paused(): boolean {
    return this.pausedFlag;
  }

  /**
   * Runs a store operation a guest read depends on, holding the read through failures the policy
   * holds. Resolves with the operation's result, or rejects with StorageFailedError (EIO).
   */
  async run<T>(op: () => Promise<T>, bytes: number, signal: AbortSignal | undefined): Promise<T> {
    if (this.timedOut !== undefined) throw this.fastFailure(this.timedOut.errorClass);
    let held: HeldRead | undefined;
    let onAbort: (() => void) | undefined;
    const holdOnce = (errorClass: ErrorClass, err: unknown): HeldRead => {
      if (held === undefined) {
        const h = (held = this.hold(bytes, errorClass, err));
        onAbort = () => h.fail(new RequestAbortedError('client disconnected while its read was held'));
        signal?.addEventListener('abort', onAbort, { once: true });
        // Held only now, after a stall: the client may have left while the attempt was unanswered.
        if (signal?.aborted) onAbort();
      }
      return held;
    };
    const stalled = (): HeldRead => {
      const message = `the object store has not answered for ${STALL_MS} ms`;
      this.noteStoreDown('transient', message);
      return holdOnce('transient', new Error(message));
    };
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          const value = await this.attempt(op(), held, stalled);
          this.storeAnswered();
          return value;
        } catch (err) {
          if (err instanceof RequestAbortedError || err instanceof RequestDroppedError || err instanceof StorageFailedError) throw err;
          const errorClass = this.noteStoreError(err);
          if (held?.failed !== undefined) throw held.failed;
          if (this.closed) throw new RequestDroppedError('gateway shutting down while storage fails');
          const refusal = this.refusal(errorClass);
          if (refusal !== undefined) throw new StorageFailedError(refusal, errorClass, { cause: err });
          if (signal?.aborted) throw new RequestAbortedError('client disconnected while its read was held');
          const h = holdOnce(errorClass, err);
          await this.sleep(h, backoffMs(attempt, this.opts.retryInitialMs ?? 50, this.policyValue.retryMaxMs));
          if (h.failed !== undefined) throw h.failed;
          this.counters.retries++;
        }
      }
    } finally {
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
      if (held !== undefined) {
        this.reads.delete(held);
        this.refresh();
      }
    }
  }

  /**
   * Waits for one store attempt. A held read stops waiting the moment it is failed (timeout, pause,
   * release, disconnect), not when the attempt gives up; a read not yet held is held once the
   * attempt has gone unanswered for STALL_MS. An abandoned attempt runs on, unobserved.
   */
  private attempt<T>(pending: Promise<T>, held: HeldRead | undefined, stalled: () => HeldRead): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let watched: HeldRead | undefined;
      const watch = (h: HeldRead): void => {
        watched = h;
        h.wake = () => {
          if (h.failed !== undefined) reject(h.failed);
        };
        h.wake();
      };
      const timer = held === undefined ? setTimeout(() => watch(stalled()), STALL_MS) : undefined;
      if (held !== undefined) watch(held);
      const settle = (): void => {
        clearTimeout(timer);
        if (watched !== undefined) watched.wake = undefined;
      };
      pending.then(
        (value) => {
          settle();
          resolve(value);
        },
        (err: unknown) => {
          settle();
          reject(err);
        },
      );
    });
  }

  /**
   * Asked before a write is appended: an error to answer it with now, or undefined to go on. A write
   * that has journal room needs no failing storage and always goes on (unless the journal disk itself
   * is failing); one that must wait for room while the store is down is held, or refused when the
   * policy, a pause or the timed-out state says so.
   */
  writeRefusal(mustWaitForRoom: boolean): StorageFailedError | undefined {
    const journal = this.journalError;
    if (journal !== undefined) {
      if (this.timedOut !== undefined) return this.fastFailure(journal.errorClass);
      const refusal = this.refusal(journal.errorClass);
      if (refusal !== undefined) return new StorageFailedError(refusal, journal.errorClass, { cause: journal.cause });
    }
    if (!mustWaitForRoom) return undefined;
    if (this.timedOut !== undefined) return this.fastFailure(this.timedOut.errorClass);
    const storeClass = this.storageDown?.errorClass;
    if (storeClass === undefined || storeClass === null) return undefined;
    const refusal = this.refusal(storeClass);
    return refusal === undefined ? undefined : new StorageFailedError(refusal, storeClass);
  }

  private fastFailure(errorClass: ErrorClass | null): StorageFailedError {
    this.counters.failedFast++;
    return new StorageFailedError('timed-out', errorClass);
  }

  private refusal(errorClass: ErrorClass): FailReason | undefined {
    if (this.policyValue.timeout === 'off' || this.policyValue.classes[errorClass] === 'fail') return 'policy';
    if (this.pausedFlag) return 'paused';
    return undefined;
  }

  private hold(bytes: number, errorClass: ErrorClass, err: unknown): HeldRead {
    const held: HeldRead = {
      bytes,
      wake: undefined,
      failed: undefined,
      fail(e: Error) {
        if (this.failed !== undefined) return;
        this.failed = e;
        this.wake?.();
      },
    };
    this.reads.add(held);
    this.noteEpisodeError(errorClass, err);
    this.refresh();
    this.startProbing();
    return held;
  }

  private sleep(held: HeldRead, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        held.wake = undefined;
        resolve();
      }
      held.wake = done;
    });
  }

  /** The store failed for the uploader (or a read): reported as storage-unavailable, not as a hang. */
  storeFailed(err: unknown): void {
    this.noteStoreError(err);
    this.refresh();
    this.startProbing();
  }

  /** Any store operation succeeded. */
  storeAnswered(): void {
    const wasDown = this.storageDown !== undefined;
    if (this.storageDown !== undefined) {
      const down = this.storageDown;
      this.storageDown = undefined;
      this.emitCondition('storage-unavailable', false, down);
    }
    if (this.timedOut !== undefined && this.journalError === undefined) this.clearTimedOut();
    for (const r of this.reads) r.wake?.();
    if (wasDown) this.opts.onStoreRecovered?.();
  }

  journalFailed(err: unknown): void {
    const errorClass = classifyError(err);
    this.counters.storageErrors[errorClass]++;
    this.journalError = { errorClass, message: errorMessage(err), cause: err };
    this.noteEpisodeError(errorClass, err);
    if (this.refusal(errorClass) !== undefined) {
      this.opts.journal.failWaiters(new StorageFailedError(this.refusal(errorClass)!, errorClass, { cause: err }));
    }
    this.refresh();
  }

  journalRecovered(): void {
    this.journalError = undefined;
    if (this.timedOut !== undefined && this.storageDown === undefined) this.clearTimedOut();
    this.refresh();
  }

  private noteStoreError(err: unknown): ErrorClass {
    const errorClass = classifyError(err);
    this.counters.storageErrors[errorClass]++;
    this.noteStoreDown(errorClass, errorMessage(err));
    return errorClass;
  }

  /** The store failed or stopped answering: storage-unavailable begins, or its last error changes. */
  private noteStoreDown(errorClass: ErrorClass, message: string): void {
    if (this.storageDown === undefined) {
      this.storageDown = { id: randomUUID(), startedAt: Date.now(), errorClass, lastError: message };
      this.opts.logger.warn({ volume: this.opts.volume, errorClass, err: message }, 'object store unavailable');
      this.emitCondition('storage-unavailable', true, this.storageDown);
    } else {
      this.storageDown.errorClass = errorClass;
      this.storageDown.lastError = message;
    }
    if (this.episode !== undefined) {
      this.episode.errorClass = errorClass;
      this.episode.lastError = message;
    }
  }

  private noteEpisodeError(errorClass: ErrorClass, err: unknown): void {
    if (this.episode === undefined) return;
    this.episode.errorClass = errorClass;
    this.episode.lastError = errorMessage(err);
  }

  /** Journal waiters count as held only while the journal or the store is failing. */
  private heldNow(): { requests: number; bytes: number } {
    let requests = this.reads.size;
    let bytes = 0;
    for (const r of this.reads) bytes += r.bytes;
    if (this.journalError !== undefined || this.storageDown !== undefined) {
      const j = this.opts.journal.held();
      requests += j.requests;
      bytes += j.bytes;
    }
    return { requests, bytes };
  }

  /** Starts or ends the hang episode to match what is held now; samples journal pressure. */
  refresh(): void {
    const held = this.heldNow();
    if (held.requests > 0 && this.episode === undefined && this.timedOut === undefined) this.beginEpisode();
    else if (held.requests === 0 && this.episode !== undefined) this.endEpisode();
    this.samplePressure();
    if (this.episode !== undefined || this.storageDown !== undefined || this.timedOut !== undefined) this.startProbing();
  }

  private beginEpisode(): void {
    const source = this.journalError ?? (this.storageDown ? { errorClass: this.storageDown.errorClass, message: this.storageDown.lastError } : undefined);
    this.episode = {
      id: randomUUID(),
      startedAt: Date.now(),
      errorClass: source?.errorClass ?? null,
      lastError: source?.message ?? null,
    };
    this.counters.episodes++;
    this.opts.logger.warn({ volume: this.opts.volume, episode: this.episode.id, errorClass: this.episode.errorClass }, 'I/O hang: holding guest requests until storage answers');
    this.emitCondition('io-hang', true, this.episode);
    this.armDeadline();
  }

  private endEpisode(): void {
    const ep = this.episode!;
    this.episode = undefined;
    this.disarmDeadline();
    const durationMs = Date.now() - ep.startedAt;
    this.counters.hangSeconds += durationMs / 1000;
    this.opts.logger.info({ volume: this.opts.volume, episode: ep.id, durationMs }, 'I/O hang over');
    this.emitCondition('io-hang', false, ep);
  }

  /** (Re)arms the timeout from the episode's start, so a policy change applies to the running episode. */
  private armDeadline(): void {
    this.disarmDeadline();
    const ep = this.episode;
    const timeout = this.policyValue.timeout;
    if (ep === undefined || typeof timeout !== 'number') return;
    const remaining = ep.startedAt + timeout - Date.now();
    this.deadline = setTimeout(() => this.fireTimeout(), Math.max(0, remaining));
  }

  private disarmDeadline(): void {
    if (this.deadline !== undefined) clearTimeout(this.deadline);
    this.deadline = undefined;
  }

  private fireTimeout(): void {
    const ep = this.episode;
    if (ep === undefined) return;
    this.deadline = undefined;
    this.counters.timeouts++;
    this.timedOut = { id: ep.id, startedAt: Date.now(), errorClass: ep.errorClass, lastError: ep.lastError };
    this.opts.logger.error({ volume: this.opts.volume, episode: ep.id, timeoutMs: this.policyValue.timeout }, 'hang timeout: failing held requests with EIO');
    this.emitCondition('io-hang-timeout', true, this.timedOut);
    this.failHeld(new StorageFailedError('timeout', ep.errorClass, { cause: ep.lastError }));
  }

  private clearTimedOut(): void {
    const t = this.timedOut!;
    this.timedOut = undefined;
    this.opts.logger.info({ volume: this.opts.volume, episode: t.id }, 'storage answers again: hang timeout cleared');
    this.emitCondition('io-hang-timeout', false, t);
  }

  /** Completes every held request with `err` now. */
  private failHeld(err: StorageFailedError): number {
    const held = this.heldNow().requests;
    for (const r of this.reads) r.fail(err);
    this.opts.journal.failWaiters(err);
    this.refresh();
    return held;
  }

  /** Completes held requests with their error and stops holding until resume. */
  pause(): number {
    this.pausedFlag = true;
    return this.failHeld(new StorageFailedError('paused', this.episode?.errorClass ?? null));
  }

  resume(): void {
    this.pausedFlag = false;
  }

  /** Fails the requests held now, once; the policy stays as it is. */
  release(): number {
    return this.failHeld(new StorageFailedError('released', this.episode?.errorClass ?? null));
  }

  setPolicy(policy: HangPolicy): void {
    this.policyValue = policy;
    if (policy.timeout === 'off' && this.episode !== undefined) {
      this.failHeld(new StorageFailedError('policy', this.episode.errorClass));
      return;
    }
    if (this.episode !== undefined) {
      const cls = this.episode.errorClass;
      if (cls !== null && policy.classes[cls] === 'fail') this.failHeld(new StorageFailedError('policy', cls));
      else this.armDeadline();
    }
  }

  private startProbing(): void {
    if (this.probing || this.closed) return;
    this.probing = true;
    void this.probeLoop();
  }

  /**
   * While anything is failing, asks the store every probe interval whether it answers; the first
   * answer wakes every held request at once, so recovery does not wait for a retry tick.
   */
  private async probeLoop(): Promise<void> {
    const interval = this.opts.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS;
    try {
      while (!this.closed && (this.storageDown !== undefined || this.timedOut !== undefined || this.reads.size > 0)) {
        await new Promise((r) => setTimeout(r, interval));
        if (this.storageDown === undefined && this.timedOut === undefined && this.reads.size === 0) break;
        try {
          await this.opts.probe();
          this.storeAnswered();
        } catch (err) {
          this.noteStoreError(err);
        }
      }
    } finally {
      this.probing = false;
    }
  }

  private samplePressure(): void {
    const { bytes, limit } = this.opts.journal.usage();
    const waiting = this.opts.journal.held().requests;
    const level: JournalPressureLevel = waiting > 0 || bytes >= limit ? 'full' : bytes >= limit * 0.75 ? 'high' : 'normal';
    if (level === this.pressure) return;
    this.pressure = level;
    const base = this.eventBase(this.episode ?? this.storageDown ?? null);
    this.publish({ ...base, kind: 'journal-pressure', level, journalBytes: bytes, journalLimitBytes: limit });
  }

  private eventBase(ep: Episode | null) {
    return {
      id: randomUUID(),
      volume: this.opts.volume,
      gateway: this.opts.gateway,
      episode: ep?.id ?? 'none',
      time: new Date().toISOString(),
      held: this.heldNow(),
      errorClass: ep?.errorClass ?? null,
      lastError: ep?.lastError ?? null,
    };
  }

  private emitCondition(kind: 'io-hang' | 'io-hang-timeout' | 'storage-unavailable', set: boolean, ep: Episode): void {
    const base = this.eventBase(ep);
    this.publish(set ? { ...base, kind, set: true } : { ...base, kind, set: false, durationMs: Date.now() - ep.startedAt });
  }

  private publish(event: HoldfastEvent): void {
    // Never let reporting disturb I/O: sinks are asynchronous, and a throwing one is contained.
    try {
      this.opts.events.publish(event);
    } catch (err) {
      this.opts.logger.error({ err }, 'event publishing failed');
    }
  }

  snapshot(): HangSnapshot {
    const ep = this.episode;
    const timeout = this.policyValue.timeout;
    const source = ep ?? this.timedOut ?? this.storageDown;
    return {
      state: this.state,
      paused: this.pausedFlag,
      held: this.heldNow(),
      episode:
        ep === undefined
          ? null
          : {
              id: ep.id,
              startedAt: new Date(ep.startedAt).toISOString(),
              durationMs: Date.now() - ep.startedAt,
              deadline: typeof timeout === 'number' ? new Date(ep.startedAt + timeout).toISOString() : null,
            },
      timedOutSince: this.timedOut ? new Date(this.timedOut.startedAt).toISOString() : null,
      storageUnavailableSince: this.storageDown ? new Date(this.storageDown.startedAt).toISOString() : null,
      journalFailing: this.journalError !== undefined,
      errorClass: this.journalError?.errorClass ?? source?.errorClass ?? null,
      lastError: this.journalError?.message ?? source?.lastError ?? null,
      journalPressure: this.pressure,
      policy: this.policyValue,
    };
  }

  /**
   * Gateway shutdown: held requests are dropped unanswered — their connections close, and a client
   * that reconnects resends them to the next gateway instead of passing an EIO to its guest.
   */
  close(): void {
    this.closed = true;
    clearInterval(this.ticker);
    this.disarmDeadline();
    const dropped = new RequestDroppedError('gateway shutting down while the request was held');
    for (const r of this.reads) r.fail(dropped);
    this.opts.journal.failWaiters(dropped);
  }
}
