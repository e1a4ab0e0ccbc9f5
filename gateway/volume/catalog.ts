import { rm } from 'node:fs/promises';
import { elementAt } from '../../shared/checked.js';
import { InvalidArgumentError, VolumeExistsError } from '../../shared/errors.js';
import {
  DEFAULT_EXTENT_SIZE,
  LegacyManifestSchema,
  VOLUME_NAME,
  type VolumeShape,
  isValidExtentSize,
} from '../../shared/volume-manifest.js';
import { emptyHead, encodeHead, type Head, type Owner, parseHead, shapeOf } from '../image/head.js';
import { headKey, legacyManifestKey, snapshotsPrefix, trashKey, VOLUMES_PREFIX } from '../image/layout.js';
import { readHead } from '../image/take-volume.js';
import { type ObjectStore, PreconditionFailedError } from '../store/object-store.js';
import { VolumeCorruptError } from '../../shared/errors.js';

export interface CreateVolumeRequest {
  readonly name: string;
  readonly size: number;
  readonly extentSize?: number;
  readonly readOnly?: boolean;
  /** Created as taken by this owner (a command that fills the volume before anyone serves it). */
  readonly owner?: Owner;
}

/** A volume as `volume list` shows it: format 2 with its head, or format 1 still waiting for an upgrade. */
export type VolumeListing =
  { readonly format: 2; readonly shape: VolumeShape; readonly head: Head } | { readonly format: 1; readonly shape: VolumeShape };

/** The lease a volume's first head carries until a gateway takes it with its own. */
export const DEFAULT_LEASE_MS = 30_000;

/** The volumes in an object store: creating, finding, listing and deleting them. */
export class VolumeCatalog {
  constructor(private readonly store: ObjectStore) {}

  async create(req: CreateVolumeRequest): Promise<Head> {
    const extentSize = req.extentSize ?? DEFAULT_EXTENT_SIZE;
    checkShape(req.name, req.size, extentSize);
    if ((await this.store.get(legacyManifestKey(req.name))) !== undefined)
      throw new VolumeExistsError(`volume ${req.name} already exists (in format 1)`);
    // The conditional create below is what decides; this read only gives the plain answer early.
    if ((await this.store.get(headKey(req.name))) !== undefined) throw new VolumeExistsError(`volume ${req.name} already exists`);
    const empty = emptyHead(
      { name: req.name, size: req.size, extentSize, readOnly: req.readOnly ?? false, createdAt: new Date().toISOString() },
      DEFAULT_LEASE_MS,
    );
    const head = req.owner === undefined ? empty : { ...empty, owner: req.owner };
    try {
      await this.store.putIfAbsent(headKey(req.name), encodeHead(head));
    } catch (err) {
      if (err instanceof PreconditionFailedError) throw new VolumeExistsError(`volume ${req.name} already exists`, { cause: err });
      throw err;
    }
    return head;
  }

  /** The volume's head; VolumeFormatError for a format 1 volume, VolumeNotFoundError when there is none. */
  async get(name: string): Promise<Head> {
    return (await readHead(this.store, name)).head;
  }

  async exists(name: string): Promise<boolean> {
    return (await this.store.get(headKey(name))) !== undefined || (await this.store.get(legacyManifestKey(name))) !== undefined;
  }

  async list(): Promise<VolumeListing[]> {
    const heads = new Set<string>();
    const legacy = new Set<string>();
    for await (const key of this.store.list(VOLUMES_PREFIX)) {
      const m = /^volumes\/([^/]+)\/(head|manifest\.json)$/.exec(key);
      if (m === null) continue;
      (m[2] === 'head' ? heads : legacy).add(elementAt(m, 1));
    }
    const out: VolumeListing[] = [];
    for (const name of [...new Set([...heads, ...legacy])].sort()) {
      if (heads.has(name)) {
        const body = await this.store.get(headKey(name));
        if (body === undefined) continue;
        const head = parseHead(body, `${this.store.location}${headKey(name)}`);
        out.push({ format: 2, shape: shapeOf(head), head });
      } else {
        const body = await this.store.get(legacyManifestKey(name));
        if (body !== undefined)
          out.push({ format: 1, shape: parseLegacyManifest(body, `${this.store.location}${legacyManifestKey(name)}`) });
      }
    }
    return out;
  }

  /**
   * Deletes a volume: its head and snapshots move to the trash (kept for the GC grace period) and are
   * removed; the data objects are left to garbage collection, since clones may still use them.
   */
  async delete(name: string): Promise<{ snapshots: number }> {
    const { head } = await readHead(this.store, name);
    const now = new Date();
    const snapshots: string[] = [];
    for await (const key of this.store.list(snapshotsPrefix(name))) snapshots.push(key);
    for (const key of snapshots) {
      const body = await this.store.get(key);
      if (body === undefined) continue;
      await this.store.put(trashKey(name, `snapshot-${key.slice(snapshotsPrefix(name).length)}`, now), body);
      await this.store.delete(key);
    }
    await this.store.put(trashKey(name, 'head', now), encodeHead(head));
    await this.store.delete(headKey(name));
    return { snapshots: snapshots.length };
  }

  /** Deletes the volume and the journal directory kept for it here: its old records must never be replayed into a new volume of the same name. */
  async deleteWithJournal(name: string, journalDir: string): Promise<{ snapshots: number }> {
    const deleted = await this.delete(name);
    await rm(journalDir, { recursive: true, force: true });
    return deleted;
  }
}

export function checkShape(name: string, size: number, extentSize: number): void {
  if (!VOLUME_NAME.test(name)) throw new InvalidArgumentError(`"${name}" is not a valid volume name (letters, digits, . _ -; at most 63)`);
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0)
    throw new InvalidArgumentError(`volume size ${size} must be a positive multiple of 512 bytes`);
  if (!isValidExtentSize(extentSize))
    throw new InvalidArgumentError(`extent size ${extentSize} must be a power of two from 64KiB to 64MiB`);
}

export function parseLegacyManifest(body: Buffer, where: string): VolumeShape {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw new VolumeCorruptError(`manifest ${where} is not JSON`, { cause });
  }
  const parsed = LegacyManifestSchema.safeParse(json);
  if (!parsed.success)
    throw new VolumeCorruptError(
      `manifest ${where} is not a Holdfast format 1 manifest: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  const { name, size, extentSize, readOnly, createdAt } = parsed.data;
  return { name, size, extentSize, readOnly, createdAt };
}
