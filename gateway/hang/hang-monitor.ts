import { randomUUID } from 'node:crypto';
import { RequestAbortedError, RequestDroppedError, errorMessage } from '../../shared/errors.js';
import { ERROR_CLASSES, type ErrorClass, type RequestedBy } from '../../shared/events.js';
import type { HangPolicy } from '../../shared/hang-policy.js';
import { backoffMs } from '../util/backoff.js';
import { classifyError } from '../util/classify-error.js';
import { systemClock, type Clock, type Timer } from '../util/clock.js';
import { sleep } from '../util/sleep.js';
import { StorageFailedError } from './errors.js';
import { HeldRead, RetryNow, firstAttempt } from './held-read.js';
import type { HangControl, HangCounters, HangMonitorOptions, HeldSource } from './interfaces.js';
import {
  healthy,
  initialMachine,
  refusalFor,
  snapshot,
  wantsProbe,
  writeRefusal,
  type HangMachine,
  type HangSnapshot,
  type HangStateKind,
  type Held,
} from './machine.js';
import { probeWhileFailing } from './store-probe.js';
import { transition, type HangAction, type HangInput, type StorePath } from './transition.js';

/** Journal waiters and pressure change on the hot path; they are sampled this often instead. */
const SAMPLE_INTERVAL_MS = 250;
/**
 * A store attempt unanswered this long holds its read. A black-holed store (a frozen server, a
 * dropped route) answers nothing until the SDK's request time-out, seconds later; without this the
 * hang would begin, and its timeout start counting, only then. A store merely slower than this
 * shows as a short hang, which is what the guest sees too.
 */
export const STALL_MS = 1000;
/** Rounds of re-counting held requests after one input: a source that keeps what it was told to fail cannot spin the engine. */
const MAX_SAMPLE_ROUNDS = 3;

/**
 * The shell around the pure hang machine of one volume: it counts what is held, runs held reads
 * and their retries, probes the store, keeps the deadline timer, and carries out the actions that
 * `transition` decides on. See index.ts for what each caller uses.
 */
export class HangMonitor implements HangControl {
  private machine: HangMachine;
  private readonly reads = new Set<HeldRead>();
  private readonly sources = new Set<HeldSource>();
  private readonly clock: Clock;
  private readonly queue: HangInput[] = [];
  private dispatching = false;
  private deadline: Timer | undefined;
  private ticker: Timer | undefined;
  private probing = false;
  readonly counters: HangCounters = {
    episodes: 0,
    hangSeconds: 0,
    timeouts: 0,
    retries: 0,
    failedFast: 0,
    storageErrors: Object.fromEntries(ERROR_CLASSES.map((c) => [c, 0])) as Record<ErrorClass, number>,
  };

  constructor(private readonly opts: HangMonitorOptions) {
    this.clock = opts.clock ?? systemClock;
    this.machine = initialMachine({
      volume: opts.volume,
      gateway: opts.gateway,
      policy: opts.policy,
      idPrefix: opts.idPrefix ?? randomUUID(),
    });
    const journal = opts.journal;
    this.sources.add({
      held: () => journal.held(),
      fail: (err) => {
        journal.failWaiters(err);
      },
      waitsOn: 'journal',
    });
    this.tick();
  }

  get policy(): HangPolicy {
    return this.machine.policy;
  }

  get state(): HangStateKind {
    return this.machine.state.kind;
  }

  get paused(): boolean {
    return this.machine.paused;
  }

  snapshot(): HangSnapshot {
    return snapshot(this.machine, this.clock.now());
  }

  /** Counts `source`'s requests with the held ones from now on; the returned function stops that. */
  addHeldSource(source: HeldSource): () => void {
    this.sources.add(source);
    this.refresh();
    return () => {
      this.sources.delete(source);
      this.refresh();
    };
  }

  /**
   * Runs a store operation a guest read depends on, holding the read through failures the policy
   * holds. Resolves with the operation's result, or rejects with StorageFailedError (EIO), or with
   * RequestAbortedError / RequestDroppedError when its client or the gateway went away. `op` gets a
   * signal that aborts the attempt under way when the read stops waiting for it (its client left,
   * or the timeout, a pause, a release or shutdown failed it), so an abandoned call does not run on.
   */
  async run<T>(op: (signal: AbortSignal) => Promise<T>, bytes: number, signal: AbortSignal | undefined): Promise<T> {
    const s = this.machine.state;
    if (s.kind === 'timed-out') {
      this.counters.failedFast++;
      throw new StorageFailedError('timed-out', s.episode.errorClass);
    }
    if (signal?.aborted === true) throw new RequestAbortedError('client disconnected before its read');
    // The attempt under way; one unanswered when the store answers again is aborted and replaced (held-read.ts).
    let attempt = new AbortController();
    const abandon = (): void => {
      attempt.abort();
      attempt = new AbortController();
    };
    // Assigned in holdOnce; the cast keeps TypeScript from narrowing it to undefined here.
    let held = undefined as HeldRead | undefined;
    const onAbort = (): void => {
      attempt.abort();
      held?.fail(new RequestAbortedError('client disconnected while its read was held'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const holdOnce = (): HeldRead => {
      if (held === undefined) {
        held = new HeldRead(bytes, () => {
          attempt.abort();
        });
        this.reads.add(held);
        // Held only now, perhaps after a stall: the client may have left while the attempt was unanswered.
        if (signal?.aborted === true) held.fail(new RequestAbortedError('client disconnected while its read was held'));
        this.refresh();
      }
      return held;
    };
    const stalled = (): HeldRead => {
      this.dispatch({
        type: 'store-failed',
        path: 'read',
        errorClass: 'transient',
        message: `the object store has not answered for ${STALL_MS} ms`,
      });
      return holdOnce();
    };
    try {
      for (let tries = 0; ; tries++) {
        try {
          const call = op(attempt.signal);
          const value = await (held === undefined ? firstAttempt(call, this.clock, STALL_MS, stalled, abandon) : held.watch(call, abandon));
          this.dispatch({ type: 'store-answered', path: 'read' });
          return value;
        } catch (err) {
          if (err instanceof RetryNow) {
            this.counters.retries++;
            continue;
          }
          if (err instanceof RequestAbortedError || err instanceof RequestDroppedError || err instanceof StorageFailedError) throw err;
          // An attempt this read abandoned failed because it was aborted, not because the store did.
          if (attempt.signal.aborted) throw held?.failed ?? new RequestAbortedError('client disconnected during its read');
          const errorClass = this.noteStoreError(err, 'read');
          if (held?.failed !== undefined) throw held.failed;
          if (this.machine.closed) throw new RequestDroppedError('gateway shutting down while storage fails');
          const reason = refusalFor(this.machine, errorClass);
          if (reason !== undefined) throw new StorageFailedError(reason, errorClass, { cause: err });
          const h = holdOnce();
          await h.pause(sleep(backoffMs(tries, this.opts.retryInitialMs ?? 50, this.machine.policy.retryMaxMs), this.clock));
          if (h.failed !== undefined) throw h.failed;
          this.counters.retries++;
        }
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (held !== undefined) {
        this.reads.delete(held);
        this.refresh();
      }
    }
  }

  /** Asked before a write is appended: an error to answer it with now, or undefined to go on (see machine.ts). */
  writeRefusal(mustWaitForRoom: boolean): StorageFailedError | undefined {
    const refusal = writeRefusal(this.machine, mustWaitForRoom);
    if (refusal?.reason === 'timed-out') this.counters.failedFast++;
    return refusal;
  }

  /** A store operation failed outside a held read: by default an upload (`write`). Corrupt data is reported, never held. */
  storeFailed(err: unknown, path: 'read' | 'write' = 'write'): void {
    this.noteStoreError(err, path);
  }

  /** A store operation succeeded outside a held read: by default an upload (`write`). */
  storeAnswered(path: 'read' | 'write' = 'write'): void {
    this.dispatch({ type: 'store-answered', path });
  }

  journalFailed(err: unknown): void {
    const errorClass = classifyError(err);
    this.counters.storageErrors[errorClass]++;
    this.dispatch({ type: 'journal-failed', errorClass, message: errorMessage(err) });
  }

  journalRecovered(): void {
    this.dispatch({ type: 'journal-recovered' });
  }

  setPolicy(policy: HangPolicy, by: RequestedBy): void {
    this.dispatch({ type: 'policy', policy, by });
  }

  pause(by: RequestedBy): number {
    return this.operatorFail({ type: 'pause', by });
  }

  resume(by: RequestedBy): void {
    this.dispatch({ type: 'resume', by });
  }

  release(by: RequestedBy): number {
    return this.operatorFail({ type: 'release', by });
  }

  private operatorFail(input: Extract<HangInput, { type: 'pause' | 'release' }>): number {
    this.refresh();
    const failed = this.machine.held.requests;
    this.dispatch(input);
    return failed;
  }

  /** Counts what is held now and samples journal pressure; runs every SAMPLE_INTERVAL_MS by itself. */
  refresh(): void {
    this.sampleHeld();
    const { bytes, limit } = this.opts.journal.usage();
    this.dispatch({ type: 'journal-usage', bytes, limit, waiting: this.opts.journal.held().requests });
  }

  /**
   * Gateway shutdown: held requests are dropped unanswered — their connections close, and a client
   * that reconnects resends them to the next gateway instead of passing an EIO to its guest.
   */
  close(): void {
    this.dispatch({ type: 'close' });
    this.ticker?.cancel();
    this.deadline?.cancel();
  }

  private tick(): void {
    this.ticker = this.clock.setTimer(
      () => {
        if (this.machine.closed) return;
        this.refresh();
        this.tick();
      },
      SAMPLE_INTERVAL_MS,
      { unref: true },
    );
  }

  private noteStoreError(err: unknown, path: StorePath): ErrorClass {
    const errorClass = classifyError(err);
    this.counters.storageErrors[errorClass]++;
    this.dispatch({ type: 'store-failed', path, errorClass, message: errorMessage(err) });
    return errorClass;
  }

  private tally(): Held {
    let requests = 0;
    let bytes = 0;
    for (const r of this.reads) {
      if (r.failed !== undefined) continue;
      requests++;
      bytes += r.bytes;
    }
    const reads = requests;
    // Outside a failure, requests waiting in a source are back-pressure, not a hang.
    if (!healthy(this.machine) || this.machine.state.kind !== 'normal') {
      for (const s of this.sources) {
        const h = s.held();
        requests += h.requests;
        bytes += h.bytes;
      }
    }
    return { requests, bytes, reads };
  }

  private sampleHeld(): void {
    const now = this.tally();
    const was = this.machine.held;
    if (now.requests === was.requests && now.bytes === was.bytes && now.reads === was.reads) return;
    this.dispatch(now.requests > 0 ? { type: 'held', held: now } : { type: 'drained' });
  }

  /** Feeds one input to the machine and carries out its actions; inputs raised meanwhile queue behind it. */
  private dispatch(input: HangInput): void {
    this.queue.push(input);
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      for (let rounds = 0, input = this.queue.shift(); input !== undefined; input = this.queue.shift()) {
        const step = transition(this.machine, input, this.clock.now());
        this.machine = step.machine;
        for (const action of step.actions) this.perform(action);
        if (this.queue.length === 0 && rounds++ < MAX_SAMPLE_ROUNDS) this.sampleHeld();
      }
    } finally {
      this.dispatching = false;
    }
    this.ensureProbing();
  }

  private perform(action: HangAction): void {
    switch (action.type) {
      case 'emit': {
        const e = action.event;
        if (e.kind === 'io-hang' && e.set) this.counters.episodes++;
        if (e.kind === 'io-hang' && !e.set) this.counters.hangSeconds += e.durationMs / 1000;
        if (e.kind === 'io-hang-timeout' && e.set) this.counters.timeouts++;
        // Reporting must never disturb I/O: sinks are asynchronous, and a throwing one is contained.
        try {
          this.opts.events.publish(e);
        } catch (err) {
          this.opts.logger.error({ err }, 'event publishing failed');
        }
        return;
      }
      case 'log':
        this.opts.logger[action.level](action.fields, action.msg);
        return;
      case 'fail-held': {
        const err = new StorageFailedError(action.reason, action.errorClass, action.cause === null ? {} : { cause: action.cause });
        const failed = this.failHeld(err, action.scope);
        if (action.reason === 'timed-out') this.counters.failedFast += failed;
        return;
      }
      case 'drop-held':
        this.failHeld(new RequestDroppedError('gateway shutting down while the request was held'), 'all');
        return;
      case 'arm-deadline': {
        this.deadline?.cancel();
        const { episode, at } = action;
        this.deadline = this.clock.setTimer(() => {
          this.deadline = undefined;
          this.dispatch({ type: 'deadline', episode, at });
        }, at - this.clock.now());
        return;
      }
      case 'disarm-deadline':
        this.deadline?.cancel();
        this.deadline = undefined;
        return;
      case 'wake-retries':
        for (const r of this.reads) r.wake();
        this.opts.onStoreRecovered?.();
        return;
    }
  }

  /** Answers held requests with `err` now; failed reads leave the count at once. Returns how many. */
  private failHeld(err: Error, scope: 'all' | 'journal'): number {
    let failed = 0;
    if (scope === 'all') {
      for (const r of this.reads) if (r.fail(err)) failed++;
    }
    for (const s of this.sources) {
      if (scope === 'journal' && s.waitsOn !== 'journal') continue;
      failed += s.held().requests;
      s.fail(err);
    }
    return failed;
  }

  private ensureProbing(): void {
    if (this.probing || !wantsProbe(this.machine)) return;
    this.probing = true;
    void probeWhileFailing({
      probe: this.opts.probe,
      intervalMs: this.opts.probeIntervalMs,
      clock: this.clock,
      wanted: () => wantsProbe(this.machine),
      answered: () => {
        this.dispatch({ type: 'probe-answered' });
      },
      failed: (err) => this.noteStoreError(err, 'probe'),
    }).finally(() => {
      this.probing = false;
    });
  }
}
