import { SingleBar } from 'cli-progress';
import { formatSize } from '../../shared/units.js';

const PROGRESS_LINE_EVERY_MS = 5000;
const MiB = 2 ** 20;

export interface Progress {
  advance(bytes: number): void;
  stop(): void;
}

/** A bar on a terminal; elsewhere (logs, CI) a plain line every few seconds. */
export function startProgress(label: string, total: number): Progress {
  return process.stderr.isTTY ? barProgress(label, total) : lineProgress(label, total);
}

function barProgress(label: string, total: number): Progress {
  const started = Date.now();
  const bar = new SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% | {doneText} / {totalText} | {rateText} | ETA {eta_formatted}`,
    hideCursor: true,
    // Our own signal handler releases the volume lock; the bar is stopped in a finally.
    gracefulExit: false,
    etaBuffer: 50,
  });
  const payload = (done: number) => ({
    doneText: formatSize(done),
    totalText: formatSize(total),
    rateText: `${mibPerSecond(done, Date.now() - started)} MiB/s`,
  });
  let done = 0;
  bar.start(total, 0, payload(0));
  return {
    advance(bytes) {
      done += bytes;
      bar.update(done, payload(done));
    },
    stop: () => {
      bar.stop();
    },
  };
}

function lineProgress(label: string, total: number): Progress {
  const started = Date.now();
  let done = 0;
  const timer = setInterval(() => {
    const elapsed = Date.now() - started;
    const rate = done / Math.max(elapsed, 1);
    const eta = rate > 0 ? `, ETA ${Math.ceil((total - done) / rate / 1000)} s` : '';
    process.stderr.write(
      `${label}: ${formatSize(done)} of ${formatSize(total)} (${Math.floor((done / Math.max(total, 1)) * 100)}%), ${mibPerSecond(done, elapsed)} MiB/s${eta}\n`,
    );
  }, PROGRESS_LINE_EVERY_MS);
  timer.unref();
  return {
    advance(bytes) {
      done += bytes;
    },
    stop: () => {
      clearInterval(timer);
    },
  };
}

export function rateText(bytes: number, elapsedMs: number): string {
  return `in ${(elapsedMs / 1000).toFixed(2)} s (${mibPerSecond(bytes, elapsedMs)} MiB/s)`;
}

export function mibPerSecond(bytes: number, elapsedMs: number): string {
  return (bytes / MiB / (Math.max(elapsedMs, 1) / 1000)).toFixed(1);
}
