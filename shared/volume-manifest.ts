import { z } from 'zod';

/**
 * What every Holdfast volume is, whatever its on-store format: a name, a size and an extent size.
 * Format 2 keeps these in the volume's head (gateway/image/head.ts); format 1 kept them in a
 * `manifest.json`, which only `holdfast volume upgrade` still reads.
 */
export const VOLUME_FORMAT_VERSION = 2;
export const LEGACY_VOLUME_FORMAT_VERSION = 1;

export const MIN_EXTENT_SIZE = 64 * 1024;
export const MAX_EXTENT_SIZE = 64 * 1024 * 1024;
export const DEFAULT_EXTENT_SIZE = 4 * 1024 * 1024;
/** Volume names become object keys, directory names and NBD export names. */
export const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Snapshot names become object keys and follow the same rule. */
export const SNAPSHOT_NAME = VOLUME_NAME;

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

const shapeFields = {
  name: z.string().regex(VOLUME_NAME),
  size: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  extentSize: z.number().int().min(MIN_EXTENT_SIZE).max(MAX_EXTENT_SIZE).refine(isPowerOfTwo, 'extentSize must be a power of two'),
  readOnly: z.boolean(),
  createdAt: z.string(),
};

/** The shape of a volume: what the NBD server, the CLI and the admin API show of it. */
export const VolumeShapeSchema = z
  .object(shapeFields)
  .refine((m) => m.size % 512 === 0, { error: 'size must be a multiple of 512 bytes', path: ['size'] });
export type VolumeShape = z.infer<typeof VolumeShapeSchema>;

/** A format 1 `manifest.json`. */
export const LegacyManifestSchema = z
  .object({ format: z.literal(LEGACY_VOLUME_FORMAT_VERSION), ...shapeFields })
  .refine((m) => m.size % 512 === 0, { error: 'size must be a multiple of 512 bytes', path: ['size'] });
export type LegacyManifest = z.infer<typeof LegacyManifestSchema>;

export function isValidExtentSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_EXTENT_SIZE && n <= MAX_EXTENT_SIZE && isPowerOfTwo(n);
}
