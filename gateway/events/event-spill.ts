import { readFile, rm } from 'node:fs/promises';
import { HoldfastEventSchema, type HoldfastEvent } from '../../shared/events.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import type { EventQueue } from './event-queue.js';

export interface EventSpillOptions {
  readonly path: string;
  /** The events not yet delivered: what each write puts in the file. */
  readonly queue: Pick<EventQueue, 'length' | 'events'>;
  /** The sink has stopped: nothing more is written in the background. */
  readonly stopped: () => boolean;
  readonly onWriteError: (err: unknown) => void;
}

/**
 * The file that keeps undelivered events across a restart during an EventBridge outage: one event
 * per line, rewritten whole as the queue changes, read back by the next sink opened on it.
 */
export class EventSpill {
  private exists = false;
  private writing: Promise<void> | undefined;
  private dirty = false;

  constructor(private readonly opts: EventSpillOptions) {}

  get path(): string {
    return this.opts.path;
  }

  /** The events a previous run left, and how many lines could not be read; undefined when there is no file. */
  async read(): Promise<{ events: HoldfastEvent[]; unreadable: number } | undefined> {
    let text: string;
    try {
      text = await readFile(this.opts.path, 'utf8');
    } catch {
      return undefined;
    }
    this.exists = true;
    const events: HoldfastEvent[] = [];
    let unreadable = 0;
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let parsed: ReturnType<typeof HoldfastEventSchema.safeParse>;
      try {
        parsed = HoldfastEventSchema.safeParse(JSON.parse(line));
      } catch {
        unreadable++;
        continue;
      }
      if (parsed.success) events.push(parsed.data);
      else unreadable++;
    }
    return { events, unreadable };
  }

  /**
   * Brings the file in line with the queue: written while delivery fails (or while a file is there
   * already), removed once everything is delivered. Writes are coalesced, never awaited by the caller.
   */
  persistSoon(failing: boolean): void {
    if (this.opts.stopped()) return;
    if (!this.exists && (this.opts.queue.length === 0 || !failing)) return;
    if (this.writing !== undefined) {
      this.dirty = true;
      return;
    }
    this.writing = (async () => {
      do {
        this.dirty = false;
        try {
          if (this.opts.queue.length === 0) {
            if (this.exists) await rm(this.opts.path, { force: true });
            this.exists = false;
          } else {
            await this.write();
          }
        } catch (err) {
          this.opts.onWriteError(err);
        }
        // Set again by callers while this one awaited; TypeScript keeps the `= false` narrowing above.
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- narrowing does not survive an await
      } while (this.dirty && !this.opts.stopped());
    })().finally(() => (this.writing = undefined));
  }

  /** Resolves once a background write under way is done. */
  async settled(): Promise<void> {
    await this.writing;
  }

  async write(): Promise<void> {
    await writeFileAtomic(
      this.opts.path,
      this.opts.queue
        .events()
        .map((e) => `${JSON.stringify(e)}\n`)
        .join(''),
    );
    this.exists = true;
  }

  /** Nothing is left undelivered: a file from earlier goes. */
  async removeIfPresent(): Promise<void> {
    if (this.exists) await rm(this.opts.path, { force: true });
  }
}
