import { open } from 'node:fs/promises';

/** fsync of a directory: makes a file created, renamed or deleted in it survive a power loss. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
