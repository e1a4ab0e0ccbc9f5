import { JournalCorruptError, type VolumeDeposedError } from '../../shared/errors.js';
import { VolumeHealth } from '../hang/index.js';
import { takeVolume } from '../image/take-volume.js';
import { VolumeImage } from '../image/volume-image.js';
import { Journal } from '../journal/journal.js';
import { MAX_WRITE_BYTES, Volume, type VolumeOptions } from './volume.js';

/**
 * Opens a volume for serving: takes it (epoch + 1, fencing the previous owner), loads its image from
 * the head, and replays the journal — adopting the previous owner's records when it used this journal
 * directory — before anything is served. Needs the store; a gateway that cannot reach it does not serve
 * the volume (see docs/volume-format-2.md, "Fencing").
 */
export async function openVolume(opts: VolumeOptions): Promise<Volume> {
  let volume: Volume | undefined;
  const taken = await takeVolume({
    store: opts.store,
    name: opts.name,
    owner: opts.owner,
    leaseMs: opts.leaseMs,
    ...(opts.forceTakeover !== undefined ? { force: opts.forceTakeover } : {}),
    logger: opts.logger,
    onDeposed: (err: VolumeDeposedError) => volume?.depose(err),
  });
  opts.failpoints.hit('takeover.after-head');
  const head = taken.writer.head;
  const image = await VolumeImage.load(opts.store, head, { copies: opts.diskCache });
  // The journal reports its disk's failures from its first write on; the hang engine is connected later.
  const health = new VolumeHealth();
  const { journal, entries } = await Journal.open({
    dir: opts.journalDir,
    segmentBytes: opts.segmentBytes,
    limitBytes: opts.journalLimitBytes,
    maxPayload: MAX_WRITE_BYTES,
    logger: opts.logger,
    ...(opts.fileOps !== undefined ? { fileOps: opts.fileOps } : {}),
    epoch: head.epoch,
    committedSeq: head.seq,
    // Only the records of this journal's lineage are ours to replay: leftovers from before a gateway
    // with another journal took the volume are stale.
    adoptFromEpoch: head.journalSince,
    retryInitialMs: opts.retryInitialMs,
    retryMaxMs: opts.retryMaxMs,
    onIoError: (err) => {
      health.journalFailed(err);
    },
    onIoRecovered: () => {
      health.journalRecovered();
    },
  });
  for (const entry of entries) {
    if (entry.offset + entry.length > head.size) {
      await journal.close();
      throw new JournalCorruptError(`journal ${opts.journalDir} has a record past the end of volume ${opts.name}`);
    }
  }
  volume = new Volume(opts, { writer: taken.writer, image, journal, replayed: entries, health });
  return volume;
}
