import { InvalidArgumentError } from '../../shared/errors.js';
import { parseSize } from '../../shared/units.js';
import { isValidExtentSize } from '../../shared/volume-manifest.js';

/** Command-line arguments of the volume commands, parsed once and refused with the flag's name. */

const MAX_CONCURRENCY = 256;

export function sizeArgument(text: string, what: string): number {
  const n = parseSize(text);
  if (n === undefined) throw new InvalidArgumentError(`${what} "${text}" is not a size like 10G, 512MiB or 1048576`);
  return n;
}

export function concurrencyArgument(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > MAX_CONCURRENCY)
    throw new InvalidArgumentError(`--concurrency "${text}" must be a whole number from 1 to ${MAX_CONCURRENCY}`);
  return n;
}

export function volumeSizeArgument(text: string): number {
  const n = sizeArgument(text, '--size');
  if (n <= 0 || n % 512 !== 0) throw new InvalidArgumentError(`--size ${text} must be a positive multiple of 512 bytes`);
  return n;
}

export function extentSizeArgument(text: string): number {
  const n = sizeArgument(text, '--extent-size');
  if (!isValidExtentSize(n)) throw new InvalidArgumentError(`--extent-size ${text} must be a power of two from 64KiB to 64MiB`);
  return n;
}
