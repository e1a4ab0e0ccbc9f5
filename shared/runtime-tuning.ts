/**
 * How the gateway's Node process is started wherever its memory matters: the container image
 * (Dockerfile), `npm start` and the benchmark. A unit test keeps the three in step.
 *
 * - MALLOC_MMAP_THRESHOLD_: glibc serves allocations above a threshold with mmap and returns them
 *   to the system when freed, but it raises that threshold to the size of every mmapped block freed,
 *   so after the first 4 MiB extent is freed all later extents come from the heap arena, whose free
 *   space is fragmented and never given back: measured, ~60 MiB more RSS under random writes. A
 *   fixed threshold turns the adjustment off.
 * - --max-semi-space-size: V8's young generation grows to 3 × 16 MiB by default; the gateway's
 *   short-lived objects (requests, promises) are collected as well at 4 MiB, ~25 MiB less heap.
 */
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
export const GATEWAY_ENV: Readonly<Record<string, string>> = { MALLOC_MMAP_THRESHOLD_: '1048576' };
