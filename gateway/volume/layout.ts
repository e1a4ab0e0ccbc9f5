/**
 * Where a volume's objects live in the store. Extent keys are fixed-width hex so that a listing
 * comes back in extent order.
 */
export const VOLUMES_PREFIX = 'volumes/';

export function volumePrefix(name: string): string {
  return `${VOLUMES_PREFIX}${name}/`;
}

export function manifestKey(name: string): string {
  return `${volumePrefix(name)}manifest.json`;
}

export function leaseKey(name: string): string {
  return `${volumePrefix(name)}lease.json`;
}

export function extentsPrefix(name: string): string {
  return `${volumePrefix(name)}extents/`;
}

export function extentKey(name: string, index: number): string {
  return `${extentsPrefix(name)}${index.toString(16).padStart(12, '0')}`;
}

export function extentIndexFromKey(name: string, key: string): number | undefined {
  const prefix = extentsPrefix(name);
  if (!key.startsWith(prefix)) return undefined;
  const hex = key.slice(prefix.length);
  return /^[0-9a-f]{12}$/.test(hex) ? parseInt(hex, 16) : undefined;
}
