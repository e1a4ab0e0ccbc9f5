/**
 * Where a materialized extent's buffer comes from and goes back to when it is not used after all
 * (volume/extent-buffers.ts): buffers of `size` bytes, at least an extent and its tables.
 */
export interface ExtentBufferSource {
  readonly size: number;
  take(): Buffer;
  release(buf: Buffer): void;
}

/** `len` zero bytes, in a buffer from `buffers` when there are any. */
export function zeroed(len: number, buffers: ExtentBufferSource | undefined): Buffer {
  return buffers === undefined ? Buffer.alloc(len) : buffers.take().subarray(0, len).fill(0);
}
