import { randomUUID } from 'node:crypto';
import { rename, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { syncDirectory } from './sync-directory.js';

/**
 * Replaces the file at `path` so that a crash or power loss leaves either the old contents or the new
 * ones, never a mix or nothing: the data goes to a temporary file beside it and is synced, the
 * temporary file is renamed over the old one, and the directory is synced so that the rename itself
 * survives. The temporary name is unique, so concurrent writers cannot clobber each other's halves.
 */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  const temp = `${path}.${randomUUID()}.tmp`;
  try {
    await writeFile(temp, data, { flush: true });
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await syncDirectory(dirname(path));
}
