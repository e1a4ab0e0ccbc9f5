/**
 * How the gateway's Node process is started wherever its memory matters: the container image
 * (Dockerfile), `npm start` and the benchmark. A unit test keeps the three in step.
 *
 * --max-semi-space-size: V8's young generation grows to 3 × 16 MiB by default; the gateway's
 * short-lived objects (requests, promises) are collected as well at 4 MiB, for ~25 MiB less heap.
 *
 * Not set, on purpose: a fixed MALLOC_MMAP_THRESHOLD_ (1 MiB) keeps glibc from serving 4 MiB extents
 * out of its fragmented heap arena (~50 MiB less RSS under random writes), but every extent buffer
 * then costs a fresh mmap and 1024 page faults, and uploads and cold sequential reads lost 15-20 %
 * of their speed in the benchmark. Recycling extent buffers would get both; it is not done yet.
 */
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
