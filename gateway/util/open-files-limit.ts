import { readFileSync } from 'node:fs';

/**
 * The process's limit on open files (RLIMIT_NOFILE, the soft one: Node raises it to the hard limit as
 * it starts), from /proc/self/limits; undefined where that cannot be read (not Linux).
 */
export function openFilesLimit(procLimits = '/proc/self/limits'): number | undefined {
  let text: string;
  try {
    text = readFileSync(procLimits, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (m === null) return undefined;
  return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
}

/**
 * Files a component may hold open at once: `share` of the process's limit, within [min, max] — the
 * rest is left to sockets, journal segments and the like. `fallback` where the limit is unknown (`limit`: openFilesLimit()).
 */
export function openFilesBudget(share: number, min: number, max: number, fallback: number, limit: number | undefined): number {
  if (limit === undefined) return fallback;
  return Math.max(min, Math.min(max, Math.floor(limit * share)));
}
