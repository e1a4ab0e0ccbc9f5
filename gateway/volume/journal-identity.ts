import { randomUUID } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';

/**
 * The identity of a journal directory, kept in it. A gateway taking a volume whose last owner had the
 * same identity can replay that owner's journal (the same task after a crash, or its replacement on the
 * same EFS); one with another identity cannot, and must not pretend to.
 */
export async function journalIdentity(journalRoot: string): Promise<string> {
  await mkdir(journalRoot, { recursive: true });
  const path = join(journalRoot, 'journal-id');
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    await writeFileAtomic(path, `${randomUUID()}\n`);
    return (await readFile(path, 'utf8')).trim();
  }
}
