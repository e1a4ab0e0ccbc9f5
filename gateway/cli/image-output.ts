import { InvalidArgumentError } from '../../shared/errors.js';

/**
 * The path `holdfast export` writes for FILE: `-` is stdout (written in order, and the summary goes
 * to stderr). A disk image is not for a terminal: stdout must be redirected or piped.
 */
export function exportOutputPath(file: string): string {
  if (file !== '-') return file;
  if (process.stdout.isTTY)
    throw new InvalidArgumentError('stdout is a terminal, not a place for a disk image', {
      hint: 'Redirect or pipe it (holdfast export NAME - > disk.img), or give a file name.',
    });
  return '/dev/stdout';
}
