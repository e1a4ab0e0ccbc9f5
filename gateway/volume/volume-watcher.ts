import type { Logger } from 'pino';
import { VolumeNotFoundError, errorMessage } from '../../shared/errors.js';
import { VOLUMES_PREFIX } from '../image/layout.js';
import { StoreError, type ObjectStore } from '../store/object-store.js';

/** A volume another gateway serves, or one this version cannot serve (format 1), is looked at again after this long. */
export const REFUSED_RECHECK_MS = 30_000;

export interface VolumeWatcherOptions {
  readonly store: ObjectStore;
  /** Time between two listings of the store's volumes. */
  readonly intervalMs: number;
  readonly logger: Logger;
  /** True for a volume the gateway serves, waits for, or is taking or deleting: not the watcher's to take. */
  readonly known: (name: string) => boolean;
  /** Takes and serves the volume; rejects when the store refuses it. */
  readonly take: (name: string) => Promise<void>;
}

/**
 * Finds volumes created while the gateway runs (a gateway started without a volume list serves every
 * volume in the store) and serves them, without a restart: one folder listing per interval, and a
 * head read only for a folder the gateway does not know. A folder whose head is gone (a deleted volume
 * whose data the garbage collector has not freed yet) is looked at on every pass, so a volume created
 * again under that name is found at once; a volume the store refuses to us is looked at again later.
 */
export class VolumeWatcher {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly taking = new Set<string>();
  /** Volumes refused to us, and when to look at them again. */
  private readonly refused = new Map<string, number>();

  constructor(private readonly o: VolumeWatcherOptions) {}

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.poll().finally(() => {
        this.schedule();
      });
    }, this.o.intervalMs);
    this.timer.unref();
  }

  /** One pass: every folder under volumes/ the gateway does not know is taken (concurrently, not awaited). */
  async poll(): Promise<void> {
    const now = performance.now();
    try {
      for await (const name of this.o.store.listFolders(VOLUMES_PREFIX)) {
        if (this.stopped) return;
        if (this.taking.has(name) || this.o.known(name) || (this.refused.get(name) ?? 0) > now) continue;
        this.taking.add(name);
        void this.o
          .take(name)
          .then(
            () => this.refused.delete(name),
            (err: unknown) => {
              this.refuse(name, err);
            },
          )
          .finally(() => this.taking.delete(name));
      }
    } catch (err) {
      // The store's outage is the hang engine's to report; the next pass tries again.
      this.o.logger.debug({ err: errorMessage(err) }, 'could not list the volumes in the store');
    }
  }

  private refuse(name: string, err: unknown): void {
    if (err instanceof VolumeNotFoundError || err instanceof StoreError) return;
    if (!this.refused.has(name))
      this.o.logger.info(
        { volume: name, err: errorMessage(err) },
        `volume not served here; looked at again every ${REFUSED_RECHECK_MS / 1000} s`,
      );
    this.refused.set(name, performance.now() + REFUSED_RECHECK_MS);
  }
}
