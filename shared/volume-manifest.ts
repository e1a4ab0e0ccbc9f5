import { z } from 'zod';

/** Format version written into every manifest; a gateway refuses manifests it does not know. */
export const VOLUME_FORMAT_VERSION = 1;

export const MIN_EXTENT_SIZE = 64 * 1024;
export const MAX_EXTENT_SIZE = 64 * 1024 * 1024;
export const DEFAULT_EXTENT_SIZE = 4 * 1024 * 1024;
/** Volume names become object keys, directory names and NBD export names. */
export const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

export const VolumeManifestSchema = z
  .object({
    format: z.literal(VOLUME_FORMAT_VERSION),
    name: z.string().regex(VOLUME_NAME),
    size: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
    extentSize: z
      .number()
      .int()
      .min(MIN_EXTENT_SIZE)
      .max(MAX_EXTENT_SIZE)
      .refine(isPowerOfTwo, 'extentSize must be a power of two'),
    readOnly: z.boolean(),
    createdAt: z.string(),
  })
  .refine((m) => m.size % 512 === 0, { message: 'size must be a multiple of 512 bytes', path: ['size'] });

export type VolumeManifest = z.infer<typeof VolumeManifestSchema>;

export function isValidExtentSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_EXTENT_SIZE && n <= MAX_EXTENT_SIZE && isPowerOfTwo(n);
}
