import { PutEventsCommand, type EventBridgeClient, type PutEventsResultEntry } from '@aws-sdk/client-eventbridge';
import type { Logger } from 'pino';
import { errorMessage } from '../../shared/errors.js';
import type { HoldfastEvent } from '../../shared/events.js';
import { backoffMs } from '../util/backoff.js';
import { LogRateLimiter } from '../util/rate-limited-log.js';
import { sleep, type Sleep } from '../util/sleep.js';
import type { DropReason, EventDeliveryCounters, EventSink } from './event-sink.js';
import { EventQueue, type Pending } from './event-queue.js';
import { EventSpill } from './event-spill.js';
import { PERMANENT_ENTRY_ERRORS } from './put-events.js';

/** How often the same kind of trouble may be logged, so that a long outage does not flood the log. */
const LOG_EVERY_MS = 10_000;

export interface EventBridgeSinkOptions {
  readonly busName: string;
  readonly client: EventBridgeClient;
  readonly logger: Logger;
  /** Bounds of the queue of events not yet accepted by EventBridge; past them new events are dropped. */
  readonly maxQueuedEvents?: number;
  readonly maxQueuedBytes?: number;
  /**
   * When set, events that cannot be delivered at once are kept in this file as well (rewritten as
   * the queue changes) and put again by the next sink opened on it, so that a restart during an
   * EventBridge outage loses none of them.
   */
  readonly spillFile?: string | undefined;
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  /** How long close() keeps trying to deliver what is queued before it gives up (or spills). */
  readonly closeTimeoutMs?: number;
}

interface SendOutcome {
  readonly retry: boolean;
  /** The call itself failed. */
  readonly error: unknown;
  /** Entries EventBridge refused and that are sent again, by error code. */
  readonly refused: Readonly<Record<string, number>>;
}

/**
 * Publishes events to an EventBridge bus with PutEvents, in the background. publish() only queues;
 * a single delivery loop sends batches (≤ 10 entries, ≤ 256 KiB), retries what failed with
 * back-off, and keeps each volume's events in the order they were raised: a batch holds at most one
 * event per volume, so a failed entry is never overtaken by a later one of the same volume.
 */
export class EventBridgeSink implements EventSink {
  private readonly queue: EventQueue;
  private readonly spill: EventSpill | undefined;
  private readonly stats = {
    delivered: 0,
    retried: 0,
    failedCalls: 0,
    dropped: { 'queue-full': 0, rejected: 0, shutdown: 0 } satisfies Record<DropReason, number>,
  };
  private loop: Promise<void> | undefined;
  private backoff: Sleep | undefined;
  private readonly idleWaiters: (() => void)[] = [];
  private failingSince: number | undefined;
  private consecutiveFailures = 0;
  private closing = false;
  private stopped = false;
  private closed: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private readonly logLimiter = new LogRateLimiter(LOG_EVERY_MS, () => Date.now());

  private constructor(private readonly opts: EventBridgeSinkOptions) {
    this.queue = new EventQueue(opts.busName, opts.maxQueuedEvents ?? 10_000, opts.maxQueuedBytes ?? 16 * 2 ** 20);
    if (opts.spillFile !== undefined) {
      const path = opts.spillFile;
      this.spill = new EventSpill({
        path,
        queue: this.queue,
        stopped: () => this.stopped,
        onWriteError: (err) => {
          this.logRateLimited('spill', 'warn', { err, file: path }, 'could not update the event spill file');
        },
      });
    }
  }

  /** Opens the sink, first queueing the events a previous run left in the spill file. */
  static async open(opts: EventBridgeSinkOptions): Promise<EventBridgeSink> {
    const sink = new EventBridgeSink(opts);
    await sink.replaySpill();
    sink.kick();
    return sink;
  }

  publish(event: HoldfastEvent): void {
    try {
      if (this.closing) {
        this.drop('shutdown', event, 'event raised after the sink was closed');
        return;
      }
      this.enqueue(event);
      if (this.failingSince !== undefined) this.persistSoon();
      this.kick();
    } catch (err) {
      this.opts.logger.error({ err, kind: event.kind, volume: event.volume }, 'EventBridge sink could not queue an event');
    }
  }

  counters(): EventDeliveryCounters {
    return {
      sink: 'eventbridge',
      delivered: this.stats.delivered,
      retried: this.stats.retried,
      failedCalls: this.stats.failedCalls,
      queued: this.queue.length,
      dropped: { ...this.stats.dropped },
    };
  }

  /** Resolves when everything queued so far has been delivered or dropped. */
  idle(): Promise<void> {
    if (this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(): Promise<void> {
    this.closed ??= this.doClose();
    return this.closed;
  }

  private async doClose(): Promise<void> {
    this.closing = true;
    // A retry waiting out its back-off tries once more now: the task is going away.
    this.backoff?.wake();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.idle(), new Promise<void>((r) => (timer = setTimeout(r, this.opts.closeTimeoutMs ?? 5000)))]);
    clearTimeout(timer);
    this.stopped = true;
    this.abort.abort();
    this.backoff?.wake();
    await this.loop;
    await this.spill?.settled();
    const left = this.queue.length;
    if (left > 0 && this.spill !== undefined) {
      try {
        await this.spill.write();
        this.opts.logger.warn(
          { events: left, file: this.spill.path },
          'EventBridge sink closed with undelivered events; they are kept in the spill file and sent at the next start',
        );
      } catch (err) {
        for (const event of this.queue.events()) this.drop('shutdown', event, `spill file not written: ${errorMessage(err)}`);
      }
    } else if (left > 0) {
      for (const event of this.queue.events()) this.drop('shutdown', event, 'undelivered when the gateway stopped');
    } else {
      await this.spill?.removeIfPresent();
    }
    this.opts.client.destroy();
  }

  private enqueue(event: HoldfastEvent): void {
    const full = this.queue.push(event);
    if (full !== undefined) this.drop('queue-full', event, full);
  }

  private kick(): void {
    if (this.loop !== undefined || this.stopped || this.queue.length === 0) return;
    let crashed = false;
    // Starting on the next turn lets a burst of events raised together share one call, and keeps
    // the work of a call off the publisher's stack.
    this.loop = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.deliver())
      .catch((err: unknown) => {
        // A bug here must cost events, never the gateway: an unhandled rejection would end the process.
        crashed = true;
        this.opts.logger.error({ err, queued: this.queue.length }, 'EventBridge delivery loop failed; it restarts with the next event');
      })
      .finally(() => {
        this.loop = undefined;
        // An event published while the loop was finishing must not wait for the next publish.
        if (!crashed) this.kick();
      });
  }

  private async deliver(): Promise<void> {
    while (this.queue.length > 0 && !this.stopped) {
      const batch = this.queue.nextBatch();
      const outcome = await this.send(batch);
      if (outcome.retry) this.failingSince ??= Date.now();
      if (this.queue.length === 0) {
        for (const resolve of this.idleWaiters.splice(0)) resolve();
      }
      this.persistSoon();
      if (!outcome.retry) {
        this.recovered();
        continue;
      }
      const again = batch.filter((p) => this.queue.includes(p)).length;
      this.stats.retried += again;
      const attempt = ++this.consecutiveFailures;
      const delay = backoffMs(attempt - 1, this.opts.retryInitialMs ?? 200, this.opts.retryMaxMs ?? 10_000);
      // stop() may have run during the await above; TypeScript keeps the loop condition's narrowing.
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- narrowing does not survive an await
      if (!this.stopped)
        this.logFailedAttempt(outcome, { attempt, retryInMs: Math.round(delay), events: again, queued: this.queue.length });
      this.backoff = sleep(delay);
      await this.backoff.done;
      this.backoff = undefined;
    }
  }

  /** One line per failed attempt: what failed (the call's error class and message, or the entry codes), and when it is tried again. */
  private logFailedAttempt(outcome: SendOutcome, fields: Record<string, number>): void {
    const log = this.opts.logger;
    if (outcome.error !== undefined)
      log.warn({ err: outcome.error, ...fields }, 'EventBridge PutEvents failed; the events stay queued and are sent again');
    else log.warn({ refused: outcome.refused, ...fields }, 'EventBridge refused events; they are sent again');
  }

  /** One PutEvents call: whether some of the batch must be sent again, and why. */
  private async send(batch: Pending[]): Promise<SendOutcome> {
    let results: PutEventsResultEntry[];
    try {
      const out = await this.opts.client.send(new PutEventsCommand({ Entries: batch.map((p) => p.entry) }), {
        abortSignal: this.abort.signal,
      });
      results = out.Entries ?? [];
    } catch (err) {
      this.stats.failedCalls++;
      return { retry: true, error: err, refused: {} };
    }
    let retry = false;
    const refused: Record<string, number> = {};
    const done = new Set<Pending>();
    batch.forEach((p, i) => {
      const r = results[i];
      if (r !== undefined && r.ErrorCode === undefined && r.EventId !== undefined) {
        this.stats.delivered++;
        done.add(p);
      } else if (r?.ErrorCode !== undefined && PERMANENT_ENTRY_ERRORS.has(r.ErrorCode)) {
        this.drop('rejected', p.event, `${r.ErrorCode}: ${r.ErrorMessage ?? ''}`);
        done.add(p);
      } else {
        retry = true;
        const code = r?.ErrorCode ?? 'missing result';
        refused[code] = (refused[code] ?? 0) + 1;
      }
    });
    this.queue.remove(done);
    return { retry, error: undefined, refused };
  }

  private recovered(): void {
    if (this.failingSince !== undefined) {
      this.opts.logger.info({ outageMs: Date.now() - this.failingSince, queued: this.queue.length }, 'EventBridge accepts events again');
    }
    this.failingSince = undefined;
    this.consecutiveFailures = 0;
  }

  private drop(reason: DropReason, event: HoldfastEvent, why: string): void {
    this.stats.dropped[reason]++;
    this.logRateLimited(
      `drop:${reason}`,
      'error',
      { reason, why, kind: event.kind, volume: event.volume, episode: event.episode, droppedSoFar: this.stats.dropped[reason] },
      'event dropped: it will not reach EventBridge',
    );
  }

  private logRateLimited(key: string, level: 'warn' | 'error', fields: Record<string, unknown>, msg: string): void {
    const suppressed = this.logLimiter.admit(key);
    if (suppressed !== undefined) this.opts.logger[level]({ ...fields, suppressed }, msg);
  }

  private persistSoon(): void {
    this.spill?.persistSoon(this.failingSince !== undefined);
  }

  private async replaySpill(): Promise<void> {
    const left = await this.spill?.read();
    if (left === undefined) return;
    for (const event of left.events) this.enqueue(event);
    this.opts.logger.info(
      { events: this.queue.length, unreadable: left.unreadable, file: this.spill?.path },
      'events left undelivered by the previous run are sent first',
    );
  }
}
