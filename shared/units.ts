/**
 * Human sizes and durations as operators type them: `10G`, `256MiB`, `4096`; `25s`, `250ms`.
 * Size suffixes are binary (K = KiB = 1024), as for disks.
 */

import { elementAt, valueOf } from './checked.js';

const SIZE = /^(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?$/i;
const SIZE_FACTORS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

export function parseSize(text: string): number | undefined {
  const m = SIZE.exec(text.trim());
  if (m === null) return undefined;
  const bytes = Number(m[1]) * valueOf(SIZE_FACTORS, elementAt(m, 2).toUpperCase());
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/;
const DURATION_FACTORS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds; a bare number means seconds. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (m === null) return undefined;
  const ms = Number(m[1]) * valueOf(DURATION_FACTORS, m[2] ?? 's');
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1).replace(/\.0+$/, '')} ${units[i]}`;
}
