/**
 * How the gateway's Node process is started wherever its memory matters: the container image
 * (Dockerfile), `npm start` and the benchmark. A unit test keeps the three in step (the allocator:
 * the image and the benchmark; `npm start` runs wherever the library may be missing).
 *
 * --max-semi-space-size=8: V8's young generation grows to 3 × 16 MiB by default. At 4 MiB it was
 * ~25 MiB less heap on a fresh process, but once a burst of store traffic had raised the old
 * generation's limit (the large volume's sequential warm pass from S3, 4 GiB through the disk cache),
 * the scavenges ran so often that requests still in flight were promoted, and the old generation
 * filled with them between major GCs: random reads then peaked at 474-482 MiB RSS (heap 77-97 MiB, of
 * it 22-33 MiB live) against 409-420 at 8 MiB and 431 at 16 (4 GiB volume, 256 MiB cache, disk cache
 * filled from RGW, fio 4 KiB iodepth 32 for 20 s; a zipf 70/30 mix 431 against 408). IOPS were no
 * lower at 8 (20,376-24,844 against 16,414-20,848).
 *
 * --heap-growing-percent=50 was tried and not kept. V8 lets the old generation grow to 1.1-4 times what
 * survived a major GC; fixed at 1.5 it held random reads' peak RSS 60 MiB lower (4 GiB volume, 256 MiB
 * cache, disk cache, fio 20 s: 433-453 MiB against 497-506, heap 45-54 MiB against 84-90), but cost the
 * writes that run beside compaction, whose delta index is a large live heap to mark again and again:
 * bench:sustained, 4 GiB, 120 s, --index-memory 8MiB, alternating, 2 runs each: 7,549-7,739 IOPS over
 * the run against 8,755-9,296, slowest 10-s window 3,262-3,606 against 4,807-5,736.
 *
 * jemalloc instead of glibc's malloc (Debian's libjemalloc2, preloaded). Extents, deltas and S3
 * bodies are MiB-sized buffers freed in no particular order; glibc serves them from its heap arenas
 * and keeps what they free, so the gateway's RSS stayed at its high-water mark: after 1 GiB of 1 MiB
 * writes, 30 s of 4 KiB random writes and 20 s of sequential ones on a 1 GiB volume, RSS was 382 MiB
 * (peak 402) with glibc and 135-152 MiB (peak 319-329) with jemalloc. CPU per request showed no
 * difference beyond the noise (measured alternating on a loaded machine: gateway CPU for 102,400 cached
 * 4 KiB reads 1.54-1.62 s with glibc, 1.55-1.56 s with jemalloc; for 51,200 writes and their upload
 * 7.1-7.8 s and 6.2-7.6 s). A fixed MALLOC_MMAP_THRESHOLD_ got part of it (214 MiB, peak 379) at
 * the cost of an mmap and its page faults for every large buffer.
 *
 * JEMALLOC_CONF: jemalloc keeps freed pages resident for 10 s by default before it returns them; the
 * gateway frees 4 MiB buffers steadily (extents the GC found dead, S3 bodies), so its RSS carried tens
 * of MiB of pages it no longer used. Returning them after 1 s, from jemalloc's own background thread
 * (not in the allocating thread), cut peak RSS by 35-50 MiB on reads (1 GiB volume, 256 MiB cache:
 * random reads 478 MiB against 487-516, sequential 483 against 489-536) with no loss of write speed
 * beyond the noise (4 KiB random writes 12.6-15.5k IOPS against 13.7-14.6k, alternating, 3 runs each;
 * 1 MiB sequential writes 179-203 MiB/s against 170-171). Decay 0 in the allocating thread was tried
 * before: 10-50 MiB less, sequential writes 10-15 % slower.
 */
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8'];

/** Where Debian's libjemalloc2 puts the library on this machine's architecture. */
export const JEMALLOC_LIBRARY = `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/libjemalloc.so.2`;

/** jemalloc's settings for the gateway (MALLOC_CONF): freed pages go back to the system after 1 s, from a background thread. */
export const JEMALLOC_CONF = 'background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0';

/** The environment variables that make the gateway's process use jemalloc (the image sets the same). */
export function gatewayAllocatorEnv(library: string = JEMALLOC_LIBRARY): { readonly LD_PRELOAD: string; readonly MALLOC_CONF: string } {
  return { LD_PRELOAD: library, MALLOC_CONF: JEMALLOC_CONF };
}
