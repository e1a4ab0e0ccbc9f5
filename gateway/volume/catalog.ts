import { InvalidArgumentError, VolumeExistsError, VolumeNotFoundError } from '../../shared/errors.js';
import {
  DEFAULT_EXTENT_SIZE,
  VOLUME_FORMAT_VERSION,
  VOLUME_NAME,
  VolumeManifestSchema,
  isValidExtentSize,
  type VolumeManifest,
} from '../../shared/volume-manifest.js';
import type { ObjectStore } from '../store/object-store.js';
import { VolumeCorruptError } from './errors.js';
import { VOLUMES_PREFIX, extentsPrefix, manifestKey, volumePrefix } from './layout.js';

export interface CreateVolumeRequest {
  readonly name: string;
  readonly size: number;
  readonly extentSize?: number;
  readonly readOnly?: boolean;
}

/** The volumes in an object store: their manifests, and creating and deleting them. */
export class VolumeCatalog {
  constructor(private readonly store: ObjectStore) {}

  async create(req: CreateVolumeRequest): Promise<VolumeManifest> {
    const extentSize = req.extentSize ?? DEFAULT_EXTENT_SIZE;
    if (!VOLUME_NAME.test(req.name)) throw new InvalidArgumentError(`"${req.name}" is not a valid volume name (letters, digits, . _ -; at most 63)`);
    if (!Number.isSafeInteger(req.size) || req.size <= 0 || req.size % 512 !== 0) {
      throw new InvalidArgumentError(`volume size ${req.size} must be a positive multiple of 512 bytes`);
    }
    if (!isValidExtentSize(extentSize)) throw new InvalidArgumentError(`extent size ${extentSize} must be a power of two from 64KiB to 64MiB`);
    if ((await this.store.get(manifestKey(req.name))) !== undefined) throw new VolumeExistsError(`volume ${req.name} already exists`);
    const manifest: VolumeManifest = {
      format: VOLUME_FORMAT_VERSION,
      name: req.name,
      size: req.size,
      extentSize,
      readOnly: req.readOnly ?? false,
      createdAt: new Date().toISOString(),
    };
    await this.store.put(manifestKey(req.name), Buffer.from(JSON.stringify(manifest, null, 2)));
    return manifest;
  }

  async get(name: string): Promise<VolumeManifest> {
    const body = await this.store.get(manifestKey(name));
    if (body === undefined) throw new VolumeNotFoundError(`volume ${name} does not exist in ${this.store.location}`);
    return parseManifest(body, `${this.store.location}${manifestKey(name)}`);
  }

  async exists(name: string): Promise<boolean> {
    return (await this.store.get(manifestKey(name))) !== undefined;
  }

  async list(): Promise<VolumeManifest[]> {
    const out: VolumeManifest[] = [];
    for await (const key of this.store.list(VOLUMES_PREFIX)) {
      const m = /^volumes\/([^/]+)\/manifest\.json$/.exec(key);
      if (m !== null) out.push(await this.get(m[1]!));
    }
    return out;
  }

  /** Number of extent objects the volume has in the store. */
  async countExtents(name: string): Promise<number> {
    let n = 0;
    for await (const key of this.store.list(extentsPrefix(name))) if (key.length > 0) n++;
    return n;
  }

  /** Deletes every object of the volume, the manifest last so that a half-done delete can be redone. */
  async delete(name: string, onProgress?: (deleted: number) => void): Promise<void> {
    await this.get(name);
    const keys: string[] = [];
    for await (const key of this.store.list(volumePrefix(name))) keys.push(key);
    const manifest = manifestKey(name);
    let deleted = 0;
    for (const key of keys) {
      if (key === manifest) continue;
      await this.store.delete(key);
      onProgress?.(++deleted);
    }
    await this.store.delete(manifest);
  }
}

export function parseManifest(body: Buffer, where: string): VolumeManifest {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw new VolumeCorruptError(`manifest ${where} is not JSON`, { cause });
  }
  const parsed = VolumeManifestSchema.safeParse(json);
  if (!parsed.success) {
    throw new VolumeCorruptError(`manifest ${where} is not a Holdfast volume manifest of format ${VOLUME_FORMAT_VERSION}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}
