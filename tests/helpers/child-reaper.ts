import type { ChildProcess } from 'node:child_process';

const live = new Set<ChildProcess>();
let hooked = false;

/**
 * Kills `child` if the test process exits while it still runs: a leftover gateway, S3 server or
 * guest would keep its port, journal lock or CPU after the test run. Returns a function that stops
 * tracking it (call it once the child has exited).
 */
export function reapOnExit(child: ChildProcess): () => void {
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  live.add(child);
  return () => live.delete(child);
}
