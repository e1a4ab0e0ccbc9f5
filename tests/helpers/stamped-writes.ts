import assert from 'node:assert/strict';

/**
 * Writes whose every 8-byte word says which write left it and where it is, so that what a disk or a
 * store holds can be checked against the order the writes were sent in.
 */

export interface Write {
  readonly seq: number;
  readonly offset: number;
  readonly data: Buffer;
}

/**
 * Every 8-byte word a write covers holds its sequence number, the number's complement and the word's
 * position in the volume, so each write's bytes are unique and a mismatch names the write that left the
 * bytes found. The complement tells a word one write left from one two unaligned writes share: a blend
 * of two stamps is not a stamp.
 */
export function stampedWrite(seq: number, offset: number, length: number): Write {
  assert.ok(seq <= 0xffff, 'stamps hold 16-bit sequence numbers');
  const first = Math.floor(offset / 8) * 8;
  const words = Buffer.allocUnsafe(Math.ceil((offset + length - first) / 8) * 8);
  for (let at = 0; at < words.length; at += 8) {
    words.writeUInt16LE(seq, at);
    words.writeUInt16LE(~seq & 0xffff, at + 2);
    words.writeUInt32LE((first + at) / 8, at + 4);
  }
  return { seq, offset, data: words.subarray(offset - first, offset - first + length) };
}

/** The write whose stamp the word at `word` holds, or undefined for a blend (or zeros). */
export function stampAt(volume: Buffer, word: number): number | undefined {
  const seq = volume.readUInt16LE(word);
  return volume.readUInt16LE(word + 2) === (~seq & 0xffff) && volume.readUInt32LE(word + 4) === word / 8 ? seq : undefined;
}

/** The stamp of the volume word holding byte `at` (a write that starts mid-word leaves part of it older). */
export function describeWord(volume: Buffer, at: number): string {
  const word = Math.floor(at / 8) * 8;
  const seq = stampAt(volume, word);
  return `${seq === undefined ? 'no single write' : `write #${seq}`} word ${volume.readUInt32LE(word + 4)} (${volume.subarray(word, word + 8).toString('hex')})`;
}

/**
 * What the store alone holds must be the writes in their order up to some write K (the newest stamp it shows):
 * every acknowledged write up to K, each unacknowledged one up to K wholly or not at all, nothing
 * after K. Writes on one connection are journalled in the order they were sent, which is their stamp.
 */
export function prefixMismatch(
  image: Buffer,
  log: readonly Write[],
  unackedSeqs: ReadonlySet<number>,
  /** The part of the volume the writes went to (8-byte aligned); the rest of `image` is not looked at. */
  window = { start: 0, end: image.length },
): { k: number; mismatch: string | undefined } {
  // A word tells which write left it only when that write covered all 8 of its bytes: a word two
  // unaligned writes share is a blend of their stamps.
  const bySeq = new Map(log.map((w) => [w.seq, w]));
  const visible = new Set<number>();
  for (let at = window.start; at + 8 <= window.end; at += 8) {
    const seq = stampAt(image, at);
    const w = seq === undefined ? undefined : bySeq.get(seq);
    if (w !== undefined && w.offset <= at && at + 8 <= w.offset + w.data.length) visible.add(w.seq);
  }
  let k = 0;
  for (const seq of visible) k = Math.max(k, seq);
  const expected = Buffer.alloc(image.length);
  for (const w of log) {
    if (w.seq > k) break;
    if (unackedSeqs.has(w.seq) && !visible.has(w.seq)) continue;
    w.data.copy(expected, w.offset);
  }
  if (expected.subarray(window.start, window.end).equals(image.subarray(window.start, window.end))) return { k, mismatch: undefined };
  let at = window.start;
  while (expected[at] === image[at]) at++;
  const word = Math.floor(at / 8) * 8;
  const note = (seq: number | undefined) =>
    seq === undefined
      ? 'a blend'
      : `#${seq} ${unackedSeqs.has(seq) ? 'unacknowledged' : 'acknowledged'}${visible.has(seq) ? ', visible elsewhere' : ''}`;
  return {
    k,
    mismatch: `the store alone is not the writes up to #${k}: byte ${at} holds ${describeWord(image, at)}, expected ${describeWord(expected, at)} (${note(stampAt(image, word))}; ${note(stampAt(expected, word))})`,
  };
}
