import type { Logger } from 'pino';
import type { HangPolicy } from '../../shared/hang-policy.js';
import type { VolumeDeposedError } from '../../shared/errors.js';
import type { EventSink } from '../events/event-sink.js';
import type { Failpoints } from '../failpoints.js';
import type { VolumeHealth } from '../hang/index.js';
import type { Owner } from '../image/head.js';
import type { HeadWriter } from '../image/head-writer.js';
import type { ObjectCopies } from '../image/object-reader.js';
import type { VolumeImage } from '../image/volume-image.js';
import type { Journal, JournalEntry } from '../journal/journal.js';
import type { SegmentFileOps } from '../journal/segment-file.js';
import type { ObjectStore } from '../store/object-store.js';
import type { Clock } from '../util/clock.js';
import type { CompactionBudget } from './compaction-pace.js';

export interface VolumeOptions {
  readonly name: string;
  readonly store: ObjectStore;
  /** The volume's own journal directory (the gateway's journal dir + volume name). */
  readonly journalDir: string;
  /** Who takes the volume: this gateway as the head will name it. */
  readonly owner: Owner;
  readonly leaseMs: number;
  /** Take the volume even if another journal holds acknowledged writes (they are lost). */
  readonly forceTakeover?: boolean;
  readonly cacheBytes: number;
  /** The gateway's disk cache tier, shared by its volumes; none when undefined. */
  readonly diskCache?: ObjectCopies | undefined;
  readonly journalLimitBytes: number;
  readonly segmentBytes: number;
  readonly uploadConcurrency: number;
  readonly uploadDelayMs: number;
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
  readonly compaction: CompactionBudget;
  /** The timers of compaction's pauses (tests pass a fake one); the system clock by default. */
  readonly compactionClock?: Clock;
  readonly gcGraceMs: number;
  readonly logger: Logger;
  readonly failpoints: Failpoints;
  readonly fileOps?: SegmentFileOps;
  /** Serve read-only even if the head allows writes. */
  readonly forceReadOnly?: boolean;
  readonly hangPolicy?: HangPolicy;
  readonly events?: EventSink;
  readonly gatewayId?: string;
  /** Told once when another gateway takes the volume (the gateway withdraws the export). */
  readonly onDeposed?: (err: VolumeDeposedError) => void;
}

/** What opening a volume put together (see open-volume.ts). */
export interface VolumeParts {
  readonly writer: HeadWriter;
  readonly image: VolumeImage;
  readonly journal: Journal;
  readonly replayed: readonly JournalEntry[];
  /** Where the journal (opened first) and then every other part report their storage outcomes. */
  readonly health: VolumeHealth;
}
