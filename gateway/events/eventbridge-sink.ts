import { readFile, rm } from 'node:fs/promises';
import {
  EventBridgeClient,
  PutEventsCommand,
  type EventBridgeClientConfig,
  type PutEventsRequestEntry,
  type PutEventsResultEntry,
} from '@aws-sdk/client-eventbridge';
import type { Logger } from 'pino';
import { errorMessage } from '../../shared/errors.js';
import { EVENT_SOURCE, detailTypeOf } from '../../shared/eventbridge.js';
import { HoldfastEventSchema, type HoldfastEvent } from '../../shared/events.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { backoffMs } from '../util/backoff.js';
import { failFastHttpHandler } from '../util/fail-fast-http.js';
import { LogRateLimiter } from '../util/rate-limited-log.js';
import { sleep, type Sleep } from '../util/sleep.js';
import type { DropReason, EventDeliveryCounters, EventSink } from './event-sink.js';

/** PutEvents limits: entries per call, and bytes per call as EventBridge counts them. */
export const MAX_BATCH_ENTRIES = 10;
export const MAX_BATCH_BYTES = 256 * 1024;
/** Longer error texts are cut so that every event fits a call and the queue's memory stays predictable. */
export const MAX_LAST_ERROR_CHARS = 64 * 1024;

/**
 * Entry error codes that will fail the same way however often they are retried; every other code
 * (throttling, internal failures, codes we do not know) is retried, since dropping an alert is worse
 * than sending it late.
 */
const PERMANENT_ENTRY_ERRORS = new Set(['InvalidArgument', 'MalformedDetail', 'ValidationException', 'InvalidEventPatternException']);

/** How often the same kind of trouble may be logged, so that a long outage does not flood the log. */
const LOG_EVERY_MS = 10_000;

export interface EventBridgeClientOptions {
  /** An EventBridge-compatible endpoint (tests, LocalStack); unset means AWS. */
  readonly endpoint?: string | undefined;
  readonly region?: string | undefined;
  readonly credentials?: EventBridgeClientConfig['credentials'];
  readonly requestTimeoutMs?: number;
}

/**
 * A client whose calls fail fast: one attempt, short timeouts. The sink retries with its own
 * back-off, so SDK retries would only delay the moment it learns that EventBridge is down.
 */
export function createEventBridgeClient(options: EventBridgeClientOptions = {}): EventBridgeClient {
  return new EventBridgeClient({
    endpoint: options.endpoint,
    // SigV4 needs some region even when a local endpoint ignores it.
    region: options.region ?? (options.endpoint === undefined ? undefined : 'us-east-1'),
    credentials: options.credentials,
    maxAttempts: 1,
    requestHandler: failFastHttpHandler({ connectTimeoutMs: 2000, requestTimeoutMs: options.requestTimeoutMs ?? 5000, maxSockets: 4 }),
  });
}

/** The PutEvents entry for one event: what the CDK rules match and the functions validate. */
export function toPutEventsEntry(event: HoldfastEvent, busName: string): PutEventsRequestEntry {
  const detail =
    event.lastError !== null && event.lastError.length > MAX_LAST_ERROR_CHARS
      ? { ...event, lastError: `${event.lastError.slice(0, MAX_LAST_ERROR_CHARS)}… (cut)` }
      : event;
  return {
    Source: EVENT_SOURCE,
    DetailType: detailTypeOf(event),
    Detail: JSON.stringify(detail),
    EventBusName: busName,
    Time: new Date(event.time),
    Resources: [],
  };
}

/** An entry's size as EventBridge counts it against the 256 KiB limit of one PutEvents call. */
export function entrySize(entry: PutEventsRequestEntry): number {
  const bytes = (s: string | undefined) => (s === undefined ? 0 : Buffer.byteLength(s, 'utf8'));
  return (
    (entry.Time === undefined ? 0 : 14) +
    bytes(entry.Source) +
    bytes(entry.DetailType) +
    bytes(entry.Detail) +
    (entry.Resources ?? []).reduce((n, r) => n + bytes(r), 0)
  );
}

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

interface Pending {
  readonly event: HoldfastEvent;
  readonly entry: PutEventsRequestEntry;
  readonly bytes: number;
}

/**
 * Publishes events to an EventBridge bus with PutEvents, in the background. publish() only queues;
 * a single delivery loop sends batches (≤ 10 entries, ≤ 256 KiB), retries what failed with
 * back-off, and keeps each volume's events in the order they were raised: a batch holds at most one
 * event per volume, so a failed entry is never overtaken by a later one of the same volume.
 */
export class EventBridgeSink implements EventSink {
  private readonly queue: Pending[] = [];
  private queuedBytes = 0;
  private readonly maxEvents: number;
  private readonly maxBytes: number;
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
  private spillExists = false;
  private spillWriting: Promise<void> | undefined;
  private spillDirty = false;

  private constructor(private readonly opts: EventBridgeSinkOptions) {
    this.maxEvents = opts.maxQueuedEvents ?? 10_000;
    this.maxBytes = opts.maxQueuedBytes ?? 16 * 2 ** 20;
  }

  /** Opens the sink, first queueing the events a previous run left in the spill file. */
  static async open(opts: EventBridgeSinkOptions): Promise<EventBridgeSink> {
    const sink = new EventBridgeSink(opts);
    if (opts.spillFile !== undefined) await sink.replaySpill(opts.spillFile);
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
    await this.spillWriting;
    const left = this.queue.length;
    if (left > 0 && this.opts.spillFile !== undefined) {
      try {
        await this.writeSpill(this.opts.spillFile);
        this.opts.logger.warn(
          { events: left, file: this.opts.spillFile },
          'EventBridge sink closed with undelivered events; they are kept in the spill file and sent at the next start',
        );
      } catch (err) {
        for (const p of this.queue) this.drop('shutdown', p.event, `spill file not written: ${errorMessage(err)}`);
      }
    } else if (left > 0) {
      for (const p of this.queue) this.drop('shutdown', p.event, 'undelivered when the gateway stopped');
    } else if (this.spillExists && this.opts.spillFile !== undefined) {
      await rm(this.opts.spillFile, { force: true });
    }
    this.opts.client.destroy();
  }

  private enqueue(event: HoldfastEvent): void {
    const entry = toPutEventsEntry(event, this.opts.busName);
    const bytes = entrySize(entry);
    if (this.queue.length >= this.maxEvents || this.queuedBytes + bytes > this.maxBytes) {
      this.drop('queue-full', event, `queue full (${this.queue.length} events, ${this.queuedBytes} bytes)`);
      return;
    }
    this.queue.push({ event, entry, bytes });
    this.queuedBytes += bytes;
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
      const batch = this.nextBatch();
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

  /**
   * The oldest queued event of each volume, up to the call's limits. A volume whose oldest event
   * does not fit this time contributes nothing, so none of its later events can go first.
   */
  private nextBatch(): Pending[] {
    const batch: Pending[] = [];
    const seen = new Set<string>();
    let bytes = 0;
    for (const p of this.queue) {
      if (batch.length === MAX_BATCH_ENTRIES) break;
      if (seen.has(p.event.volume)) continue;
      seen.add(p.event.volume);
      if (bytes + p.bytes > MAX_BATCH_BYTES) continue;
      batch.push(p);
      bytes += p.bytes;
    }
    return batch;
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
    this.remove(done);
    return { retry, error: undefined, refused };
  }

  private remove(done: ReadonlySet<Pending>): void {
    if (done.size === 0) return;
    let kept = 0;
    for (const p of this.queue) {
      if (done.has(p)) this.queuedBytes -= p.bytes;
      else this.queue[kept++] = p;
    }
    this.queue.length = kept;
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

  /**
   * Brings the spill file in line with the queue: written while delivery fails (or while a file is
   * there already), removed once everything is delivered. Writes are coalesced, never awaited by
   * publish().
   */
  private persistSoon(): void {
    const file = this.opts.spillFile;
    if (file === undefined || this.stopped) return;
    if (!this.spillExists && (this.queue.length === 0 || this.failingSince === undefined)) return;
    if (this.spillWriting !== undefined) {
      this.spillDirty = true;
      return;
    }
    this.spillWriting = (async () => {
      do {
        this.spillDirty = false;
        try {
          if (this.queue.length === 0) {
            if (this.spillExists) await rm(file, { force: true });
            this.spillExists = false;
          } else {
            await this.writeSpill(file);
          }
        } catch (err) {
          this.logRateLimited('spill', 'warn', { err, file }, 'could not update the event spill file');
        }
        // Set again by callers while this one awaited; TypeScript keeps the `= false` narrowing above.
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- narrowing does not survive an await
      } while (this.spillDirty && !this.stopped);
    })().finally(() => (this.spillWriting = undefined));
  }

  private async writeSpill(file: string): Promise<void> {
    await writeFileAtomic(file, this.queue.map((p) => `${JSON.stringify(p.event)}\n`).join(''));
    this.spillExists = true;
  }

  private async replaySpill(file: string): Promise<void> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      return;
    }
    this.spillExists = true;
    let bad = 0;
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let parsed: ReturnType<typeof HoldfastEventSchema.safeParse>;
      try {
        parsed = HoldfastEventSchema.safeParse(JSON.parse(line));
      } catch {
        bad++;
        continue;
      }
      if (parsed.success) this.enqueue(parsed.data);
      else bad++;
    }
    this.opts.logger.info(
      { events: this.queue.length, unreadable: bad, file },
      'events left undelivered by the previous run are sent first',
    );
  }
}
