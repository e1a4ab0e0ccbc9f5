import { HoldfastError } from './errors.js';

/**
 * Reads whose presence the caller has already established (bounded index arithmetic in run maps, heaps,
 * journal and codec buffers; regex groups that always match; fixed lookup tables). They neither copy
 * nor allocate, so hot loops can use them, and a read that would have been `undefined` (NaN in
 * arithmetic, silently) throws a named error instead.
 */

/** An index past the end of an array: a bug in the index arithmetic, never input. */
export class IndexOutOfRangeError extends HoldfastError {}

/** A key a table or map was expected to hold: a bug in the caller, never input. */
export class MissingKeyError extends HoldfastError {}

export function elementAt<T>(a: ArrayLike<T>, i: number): T {
  const v = a[i];
  if (v === undefined) throw new IndexOutOfRangeError(`index ${i} is outside 0..${a.length - 1}`);
  return v;
}

export function valueOf<T>(table: Readonly<Record<string, T>>, key: string): T {
  const v = table[key];
  if (v === undefined) throw new MissingKeyError(`no entry for ${JSON.stringify(key)}`);
  return v;
}

export function mapValue<K, V>(map: ReadonlyMap<K, V>, key: K): V {
  const v = map.get(key);
  if (v === undefined) throw new MissingKeyError(`no entry for ${String(key)}`);
  return v;
}

/** A value a state machine guarantees at this point (a payload still in memory, an error already set). */
export class MissingValueError extends HoldfastError {}

/** `v`, which the caller's state guarantees; `what` names it in the error (pass a literal: no allocation). */
export function defined<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new MissingValueError(`${what} is missing`);
  return v;
}
