import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';

const MiB = 2 ** 20;

/** Writes `size` bytes of random data to `file` and syncs it: the data set every system serves. */
export async function fillRawFile(file: string, size: number): Promise<void> {
  const block = randomBytes(MiB);
  const fh = await open(file, 'w');
  try {
    for (let at = 0; at < size; at += MiB) {
      // Every MiB differs, so no layer below can share or compress them.
      block.writeUInt32LE(at / MiB, 0);
      await fh.write(block, 0, MiB, at);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}
