/** What a component that calls the store outside a held read reports: each failure, and answers. */
export interface StoreReports {
  /** A store call failed; by default an upload (`write`). */
  storeFailed(err: unknown, path?: 'read' | 'write'): void;
  /** A store call succeeded; reported at least for the first success after failures. */
  storeAnswered(path?: 'read' | 'write'): void;
}

/** What the journal reports: its disk failing, and recovering. */
export interface JournalReports {
  journalFailed(err: unknown): void;
  journalRecovered(): void;
}

/**
 * One volume's storage health, as its components see it. The uploader, head commits, compactor and
 * journal report here what their store and disk calls did, instead of calling the hang engine; the
 * engine reads the reports (it is connected once the volume is built) and keeps the health itself
 * (StorageHealth in machine.ts). When the engine finds the store answering again it says so here,
 * and whoever waits to retry (the uploader, the lease renewal) hears it.
 */
export class VolumeHealth implements StoreReports, JournalReports {
  private reader: (StoreReports & JournalReports) | undefined;
  private readonly recoveredListeners: (() => void)[] = [];

  /**
   * The engine that reads the reports from now on. Reports made before are dropped: none can be
   * made while a volume is opened, since nothing writes or uploads until it serves.
   */
  connect(reader: StoreReports & JournalReports): void {
    this.reader = reader;
  }

  storeFailed(err: unknown, path: 'read' | 'write' = 'write'): void {
    this.reader?.storeFailed(err, path);
  }

  storeAnswered(path: 'read' | 'write' = 'write'): void {
    this.reader?.storeAnswered(path);
  }

  journalFailed(err: unknown): void {
    this.reader?.journalFailed(err);
  }

  journalRecovered(): void {
    this.reader?.journalRecovered();
  }

  /** `listener` is called whenever the engine finds the store answering again; in the order added. */
  onStoreRecovered(listener: () => void): void {
    this.recoveredListeners.push(listener);
  }

  /** The engine's cue: the store answers again (a probe answered, or a held request's retry did). */
  storeRecovered(): void {
    for (const listener of this.recoveredListeners) listener();
  }
}
