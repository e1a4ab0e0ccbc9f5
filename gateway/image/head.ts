/**
 * The head of a format 2 volume: the one object that changes, and only by conditional write. It names
 * every object the volume's contents are made of, the sequence number they are complete up to, and the
 * writer allowed to change it (epoch and owner). A snapshot is a head kept under another key.
 */
import { z } from 'zod';
import { VOLUME_FORMAT_VERSION, VolumeShapeSchema, type VolumeShape } from '../../shared/volume-manifest.js';
import { VolumeCorruptError } from '../../shared/errors.js';

const seq = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const crc = z.number().int().nonnegative().max(0xffff_ffff);

export const OwnerSchema = z.object({
  /** `--gateway-id` of the owner, for people. */
  gateway: z.string(),
  /** The journal directory's identity: a taker with the same one can replay the owner's journal. */
  journalId: z.string(),
  host: z.string(),
  pid: z.number().int(),
  /** Unique per process start; tells a restarted process from the one that wrote the head. */
  instance: z.string(),
  /** The owner's admin API (HOST:PORT), where CLI commands send requests a served volume must handle. */
  admin: z.string().nullable(),
});
export type Owner = z.infer<typeof OwnerSchema>;

/** A data object as a head or index page names it: enough to read and check its tables. */
const objectRef = {
  key: z.string().min(1),
  size: z.number().int().positive(),
  /** Where the CRC table starts; the tables and trailer run from here to the end. */
  metaOffset: z.number().int().nonnegative(),
  /** CRC32C of everything from metaOffset to the end but the trailer's own last 4 bytes. */
  metaCrc: crc,
};

export const DeltaRefSchema = z.object({ ...objectRef, seqFrom: seq, seqTo: seq });
export type DeltaRef = z.infer<typeof DeltaRefSchema>;

export const PageRefSchema = z.object({
  page: z.number().int().nonnegative(),
  key: z.string().min(1),
  size: z.number().int().positive(),
  crc,
});
export type PageRef = z.infer<typeof PageRefSchema>;

export const ReleasedSchema = z.object({ key: z.string().min(1), at: z.iso.datetime() });
export type Released = z.infer<typeof ReleasedSchema>;

export const HeadSchema = z
  .object({
    format: z.literal(VOLUME_FORMAT_VERSION),
    name: z.string(),
    size: z.number(),
    extentSize: z.number(),
    readOnly: z.boolean(),
    createdAt: z.string(),
    /** Bumped by every takeover; a write by an older epoch is refused by the conditional PUT. */
    epoch: z.number().int().nonnegative(),
    /** Bumped by every write of the head. */
    version: z.number().int().nonnegative(),
    owner: OwnerSchema.nullable(),
    /**
     * The first epoch of the current owner's journal lineage: every owner since then used the same
     * journal directory, so a taker with that directory replays the segments of these epochs (and of no
     * older ones, whose acknowledged records were all committed before a gateway with another journal took over).
     */
    journalSince: z.number().int().nonnegative(),
    /** How long the owner's lease lasts after each head write it sends. */
    leaseMs: z.number().int().positive(),
    /** The highest sequence the owner had acknowledged when it wrote this head. */
    ackedSeq: seq,
    /** Every acknowledged write up to this sequence is in the objects below. */
    seq,
    pages: z.array(PageRefSchema),
    deltas: z.array(DeltaRefSchema),
    /** Objects this head no longer names, with when they left; GC spares them for its grace period. */
    released: z.array(ReleasedSchema),
    /** A clone's parent. */
    origin: z.object({ volume: z.string(), snapshot: z.string() }).optional(),
    /** Set in snapshot objects only. */
    snapshot: z.object({ name: z.string(), createdAt: z.string() }).optional(),
  })
  .superRefine((h, ctx) => {
    const shape = VolumeShapeSchema.safeParse(h);
    if (!shape.success) for (const issue of shape.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path });
  });
export type Head = z.infer<typeof HeadSchema>;

export function shapeOf(head: Head): VolumeShape {
  return { name: head.name, size: head.size, extentSize: head.extentSize, readOnly: head.readOnly, createdAt: head.createdAt };
}

export function encodeHead(head: Head): Buffer {
  return Buffer.from(JSON.stringify(head));
}

export function parseHead(body: Buffer, where: string): Head {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw new VolumeCorruptError(`${where} is not JSON`, { cause });
  }
  const parsed = HeadSchema.safeParse(json);
  if (!parsed.success) {
    throw new VolumeCorruptError(
      `${where} is not a Holdfast format ${VOLUME_FORMAT_VERSION} head: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

/** A new, empty volume's first head: no owner, nothing stored, every byte a hole. */
export function emptyHead(shape: VolumeShape, leaseMs: number): Head {
  return {
    format: VOLUME_FORMAT_VERSION,
    ...shape,
    epoch: 0,
    version: 0,
    owner: null,
    journalSince: 0,
    leaseMs,
    ackedSeq: 0,
    seq: 0,
    pages: [],
    deltas: [],
    released: [],
  };
}
