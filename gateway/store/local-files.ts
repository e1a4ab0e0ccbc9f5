/** The file operations the local directory store is made of: synced temp files, reads into a caller's buffer, durable directories. */
import { randomBytes } from 'node:crypto';
import { mkdir, open } from 'node:fs/promises';
import path from 'node:path';
import { syncDirectory } from '../util/sync-directory.js';

/**
 * Marks the name of a file that `put` is still writing. Keys may not contain it, so a temp file
 * left behind by a crash can never be mistaken for an object.
 */
export const TEMP_FILE_MARKER = '.holdfast-tmp.';

/** Writes `body` to a fresh temp file beside `file`, synced; returns its path. */
export async function writeTemp(file: string, body: Buffer): Promise<string> {
  const temp = `${file}${TEMP_FILE_MARKER}${randomBytes(6).toString('hex')}`;
  const handle = await open(temp, 'wx');
  try {
    await handle.writeFile(body);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  return temp;
}

/** The whole file, in `into` when it fits. */
export async function readInto(file: string, into: Buffer): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    if (size > into.length) return await handle.readFile();
    let done = 0;
    while (done < size) {
      const { bytesRead } = await handle.read(into, done, size - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return into.subarray(0, done);
  } finally {
    await handle.close();
  }
}

/**
 * A new directory only survives power loss once its parent has been fsynced, so every
 * directory that mkdir created is synced through its parent.
 */
export async function makeDirectoryDurably(dir: string): Promise<void> {
  const firstCreated = await mkdir(dir, { recursive: true });
  if (firstCreated === undefined) return;
  for (let created = dir; ; created = path.dirname(created)) {
    await syncDirectory(path.dirname(created));
    if (created === firstCreated || created === path.dirname(created)) break;
  }
}
