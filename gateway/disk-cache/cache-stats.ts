/** What the disk cache did and holds: for the admin API, the metrics and `holdfast status`. */
export interface DiskCacheCounters {
  hits: number;
  misses: number;
  /** Cached ranges dropped because they failed their CRC32C or their file was short. */
  corrupt: number;
  evictions: number;
  /** Ranges written to the cache, and their bytes. */
  writes: number;
  writtenBytes: number;
  /** Ranges not kept: no room, too much being written already, or the disk full. */
  skipped: number;
  /** Writes the filesystem refused for lack of space. */
  full: number;
  /** Reads and writes that failed otherwise (EIO …); the entry is dropped. */
  errors: number;
}

export interface DiskCacheStats extends DiskCacheCounters {
  readonly dir: string;
  readonly limitBytes: number;
  /** The bound in force: the limit, or less when the filesystem has less room. */
  readonly effectiveLimitBytes: number;
  readonly bytes: number;
  readonly objects: number;
}
