import { HoldfastError } from '../../shared/errors.js';

/** A read past the end of an array or typed array: a bug in the index arithmetic, never input. */
export class IndexOutOfRangeError extends HoldfastError {}

/**
 * `a[i]` for index arithmetic the caller has already bounded (run maps, heaps, journal and codec
 * buffers): the hot paths read typed arrays in tight loops, so this neither copies nor allocates, and a
 * read that would have been `undefined` (NaN in arithmetic, silently) throws instead.
 */
export function elementAt<T>(a: ArrayLike<T>, i: number): T {
  const v = a[i];
  if (v === undefined) throw new IndexOutOfRangeError(`index ${i} is outside 0..${a.length - 1}`);
  return v;
}
