import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { defined, elementAt } from '../../shared/checked.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { syncDirectory } from '../util/sync-directory.js';
import { fsSegmentFileOps, type SegmentFileOps } from './segment-file.js';
import { SEAL_NAME, SEGMENT_NAME, Segment, readSeal, scanSegment, sealName, type JournalEntry } from './segment-format.js';

export interface ReplayOptions {
  readonly dir: string;
  /** Largest payload a record may carry; anything larger on replay is corruption. */
  readonly maxPayload: number;
  readonly fileOps?: SegmentFileOps;
  /**
   * The writer epoch new segments are named by. Segments of older epochs are adopted: each gets a seal
   * (the highest sequence adopted from it) before anything is appended, so records a deposed writer
   * appends later are never replayed. Default 0 (a journal nobody else writes).
   */
  readonly epoch?: number;
  /** Records up to this sequence are in the object store already: replay skips them. */
  readonly committedSeq?: number;
  /**
   * Unsealed segments of epochs from this one on are adopted; older unsealed ones were never adopted
   * by anyone (the previous owner did not use this directory) and are sealed at `committedSeq`, so
   * nothing in them is replayed. Default 0: adopt everything.
   */
  readonly adoptFromEpoch?: number;
}

export interface Replayed {
  /** Every segment found, oldest first, all sealed: new records go to a new segment. */
  readonly segments: Segment[];
  /** The records still owed to the store, in sequence order, each counted live in its segment. */
  readonly entries: JournalEntry[];
  readonly lastSeq: number;
  readonly lastSegmentNo: number;
}

/** Reads a journal directory on open, sealing the segments of older writer epochs. */
export async function replayJournal(opts: ReplayOptions): Promise<Replayed> {
  await mkdir(opts.dir, { recursive: true });
  const epoch = opts.epoch ?? 0;
  const committed = opts.committedSeq ?? 0;
  const dirNames = await readdir(opts.dir);
  const seals = new Map<number, number>();
  for (const m of dirNames.map((n) => SEAL_NAME.exec(n))) {
    if (m !== null) seals.set(parseInt(elementAt(m, 1), 16), await readSeal(join(opts.dir, m[0])));
  }
  const names = dirNames
    .map((n) => SEGMENT_NAME.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ name: m[0], epoch: m[1] === undefined ? 0 : parseInt(m[1], 16), no: Number(m[2]) }))
    .sort((a, b) => a.epoch - b.epoch || a.no - b.no);
  const fileOps = opts.fileOps ?? fsSegmentFileOps;
  const bySeq = new Map<number, JournalEntry>();
  const segments: Segment[] = [];
  const adopted = new Map<number, number>();
  const adoptFrom = opts.adoptFromEpoch ?? 0;
  try {
    for (const { name, epoch: segmentEpoch, no } of names) {
      const path = join(opts.dir, name);
      const file = await fileOps.open(path, 'read-write');
      const segment = new Segment(segmentEpoch, no, path, file, 0);
      segment.sealed = true;
      segments.push(segment);
      const seal = seals.get(segmentEpoch) ?? (segmentEpoch < adoptFrom && segmentEpoch < epoch ? committed : Infinity);
      for (const entry of await scanSegment(segment, opts.maxPayload)) {
        if (entry.seq > seal) continue;
        adopted.set(segmentEpoch, Math.max(adopted.get(segmentEpoch) ?? 0, entry.seq));
        if (entry.seq > committed) bySeq.set(entry.seq, entry);
      }
    }
    // Sealed before anything new is appended: from now on a record of an older epoch above its seal
    // can only come from a deposed writer that went on appending, and it was never acknowledged.
    let sealed = false;
    for (const s of segments) {
      if (s.epoch >= epoch || seals.has(s.epoch)) continue;
      seals.set(s.epoch, s.epoch < adoptFrom ? committed : Math.max(adopted.get(s.epoch) ?? 0, committed));
      await writeFileAtomic(join(opts.dir, sealName(s.epoch)), `${JSON.stringify({ maxSeq: seals.get(s.epoch) })}\n`);
      sealed = true;
    }
    if (sealed) await syncDirectory(opts.dir);
  } catch (err) {
    // A corrupt segment or a failed seal: the files opened so far are closed, not left to the garbage collector.
    for (const s of segments) await s.file.close().catch(() => undefined);
    throw err;
  }
  const entries = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
  for (const e of entries) defined(e.segment, 'replayed entry segment').live++;
  const lastSeq = Math.max(committed, entries.length > 0 ? elementAt(entries, entries.length - 1).seq : 0, ...adopted.values());
  const lastSegmentNo = names.reduce((n, s) => Math.max(n, s.no), 0);
  return { segments, entries, lastSeq, lastSegmentNo };
}
