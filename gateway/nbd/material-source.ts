import { readFile } from 'node:fs/promises';
import { ConfigError, errorMessage } from '../../shared/errors.js';

/**
 * TLS and access settings name a file, or hold the content itself: ECS hands secrets to a
 * container as environment variables, never as files. Content is recognised by its form, which no
 * file path has: PEM (`-----BEGIN `), psktool lines (`IDENTITY:HEXKEY`), JSON (`{`).
 */
export const looksLikePem = (value: string): boolean => value.trimStart().startsWith('-----BEGIN ');
export const looksLikePskKeys = (value: string): boolean => value.includes('\n') || /^[^/\s]\S*:[0-9a-fA-F]+$/.test(value.trim());
export const looksLikeJson = (value: string): boolean => value.trimStart().startsWith('{');

/** The content `value` holds, or the content of the file it names. */
export async function readMaterial(value: string, what: string, isContent: (value: string) => boolean): Promise<Buffer> {
  if (isContent(value)) return Buffer.from(value, 'utf8');
  try {
    return await readFile(value);
  } catch (cause) {
    throw new ConfigError(`cannot read the ${what} ${value}: ${errorMessage(cause)}`, { cause });
  }
}

/** How a setting is named in messages: its path, or a mark for inline content (never the secret itself). */
export function describeSource(value: string, isContent: (value: string) => boolean): string {
  return isContent(value) ? '(inline content)' : value;
}
