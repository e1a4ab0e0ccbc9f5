import { defined } from '../shared/checked.js';
import type { S3Server } from '../tests/helpers/s3-server.js';
import { fetchVolume, setHangTimeout } from './admin.js';
import { ProcessMeter, residentMiB, sleep, startDaemon } from './proc.js';
import { s3Outage } from './recovery.js';
import { VOLUME, type UploadDrain } from './systems.js';

/**
 * The outage-writes scenario, run once per bench run on holdfast-s3: 4 KiB random writes at
 * iodepth 32 through fio's nbd engine while the S3 server is down for `outage` seconds, then the
 * server's return and the drain of the journal backlog. What it is for is the gateway's memory: its
 * peak RSS over the outage and the drain, and its RSS when the outage ends. It also counts the
 * bytes fio had acknowledged during the outage and fio's errors: the gateway is meant to hold a
 * write it cannot take, and a write it fails anyway is counted, not a reason to stop
 * (--continue_on_error=all). The volume's hang timeout is raised above the outage for the scenario
 * (and put back after): with the default 120 s the writes would fail after two minutes, and what
 * is measured is the memory of a gateway that holds them for the whole outage.
 */

/** Seconds the hang timeout is set beyond the outage. */
const TIMEOUT_MARGIN_S = 60;

const SAMPLE_MS = 1_000;
/** fio prints its cumulative counters this often: the bytes acknowledged during the outage are read between two of them. */
const STATUS_INTERVAL = '500ms';
/** How long fio may take to connect and get its first write acknowledged before the outage. */
const START_TIMEOUT_MS = 30_000;
/** After the planned end, fio is stopped with SIGINT (it then writes its final report); SIGKILL after this. */
const STOP_GRACE_MS = 120_000;

export interface OutageWritesSample {
  /** Seconds since the scenario started. */
  readonly t: number;
  /** null once the gateway is gone. */
  readonly rssMiB: number | null;
  /** MiB fio had been acknowledged by then (its last status report). */
  readonly writtenMiB: number;
  /** fio's error count by then (its last status report). */
  readonly errors: number;
  /** The gateway's own counts (admin API); null where it did not answer. */
  readonly held: number | null;
  readonly backlogRecords: number | null;
  readonly dirtyExtents: number | null;
}

export interface OutageWritesResult {
  /** Seconds since the start at which the server was killed, serving again, fio done, the backlog drained. */
  readonly downAt: number;
  readonly upAt: number;
  readonly fioEndAt: number;
  readonly drainedAt: number;
  /** Highest RSS from the first write to the drained backlog. */
  readonly peakRssMiB: number;
  /** Highest RSS from the first write to the server's return. */
  readonly outagePeakRssMiB: number;
  /** RSS at the end of the outage, just before the server was started again. */
  readonly rssAtOutageEndMiB: number;
  readonly cpuSeconds: number;
  /** Bytes fio had acknowledged between the kill and the return (interpolated between its status reports). */
  readonly outageBytes: number;
  readonly outageMiBps: number;
  /** Bytes of the whole fio run. */
  readonly bytes: number;
  /** fio's error count (--continue_on_error=all): writes the client saw fail. */
  readonly errors: number;
  /** Most requests the gateway reported held in one sample. */
  readonly maxHeld: number;
  /** Seconds from the server's return to an empty backlog (fio went on writing for part of it). */
  readonly drainSeconds: number;
  /**
   * Bytes uploaded from the server's return to the empty backlog (null if the admin API did not answer
   * at the return). Not the settle's own count: that starts once fio stopped, `after` seconds later,
   * when the backlog of the outage has long been uploaded (it read 0.00 MiB).
   */
  readonly uploadedSinceReturnBytes: number | null;
  /** The hang timeout the volume had during the scenario, in seconds. */
  readonly hangTimeoutSeconds: number;
  readonly samples: readonly OutageWritesSample[];
}

export interface OutageWritesOptions {
  /** The NBD URI of the volume, for fio. */
  readonly uri: string;
  readonly adminUrl: string;
  /** The gateway process. */
  readonly pid: number;
  readonly s3: S3Server;
  readonly size: number;
  /** Seconds of writes before the outage and after the return. */
  readonly before: number;
  readonly outage: number;
  readonly after: number;
  /** Waits until the backlog is in the store (BenchSystem.settle). */
  readonly settle: () => Promise<UploadDrain | undefined>;
}

interface FioStatus {
  /** Milliseconds since the scenario started, when the report arrived. */
  readonly at: number;
  readonly writeBytes: number;
  readonly errors: number;
}

interface FioJob {
  readonly error: number;
  readonly total_err?: number;
  readonly write: { readonly io_bytes: number };
}

/** The gateway died during the run; the highest RSS it was seen at is still what the run is for. */
export class GatewayExitedError extends Error {
  constructor(
    message: string,
    readonly highestRssMiB: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'GatewayExitedError';
  }
}

/** A meter left running would keep the harness alive with its timer; one whose process is gone throws. */
function stopQuietly(meter: ProcessMeter | undefined): void {
  try {
    meter?.stop();
  } catch {
    // The gateway is gone; the error that ended the run says why.
  }
}

/** Cumulative bytes at `at`, linear between the two status reports around it (0 at fio's start). */
function writtenAt(reports: readonly FioStatus[], at: number, fioStart: number): number {
  let prev: Pick<FioStatus, 'at' | 'writeBytes'> = { at: fioStart, writeBytes: 0 };
  for (const r of reports) {
    if (r.at >= at)
      return r.at === prev.at ? r.writeBytes : prev.writeBytes + ((r.writeBytes - prev.writeBytes) * (at - prev.at)) / (r.at - prev.at);
    prev = r;
  }
  return prev.writeBytes;
}

export async function runOutageWrites(o: OutageWritesOptions): Promise<OutageWritesResult> {
  const hangTimeoutSeconds = Math.ceil(o.outage) + TIMEOUT_MARGIN_S;
  const previousTimeout = await setHangTimeout(o.adminUrl, VOLUME, `${hangTimeoutSeconds}s`);
  try {
    return { ...(await measure(o)), hangTimeoutSeconds };
  } finally {
    // The gateway may be gone (the error says so); a policy it no longer has needs no restoring.
    await setHangTimeout(o.adminUrl, VOLUME, previousTimeout).catch(() => undefined);
  }
}

async function measure(o: OutageWritesOptions): Promise<Omit<OutageWritesResult, 'hangTimeoutSeconds'>> {
  const t0 = performance.now();
  const now = (): number => performance.now() - t0;
  const args = [
    '--name=outage-writes',
    '--ioengine=nbd',
    `--uri=${o.uri}`,
    '--output-format=json',
    `--status-interval=${STATUS_INTERVAL}`,
    '--randrepeat=0',
    '--norandommap',
    '--rw=randwrite',
    '--bs=4k',
    '--iodepth=32',
    `--size=${o.size}`,
    '--time_based',
    // A ceiling only: the harness ends the run with SIGINT once the margin after the return is over.
    `--runtime=${Math.ceil(o.before + o.outage + o.after) + 600}`,
    // Count failed writes and go on, rather than stop at the first one.
    '--continue_on_error=all',
  ];
  const reports: FioStatus[] = [];
  let pending = '';
  let unreadable = 0;
  const meter = new ProcessMeter(o.pid);
  let afterMeter: ProcessMeter | undefined;
  const fioStart = now();
  const fio = startDaemon('fio', args);
  fio.child.stdout?.on('data', (chunk: string) => {
    pending += chunk;
    // Every report is a JSON document whose closing brace stands alone at the start of a line.
    for (let end = pending.search(/^\}$/m); end >= 0; end = pending.search(/^\}$/m)) {
      const start = pending.search(/^\{$/m);
      const text = pending.slice(Math.max(start, 0), end + 1);
      pending = pending.slice(end + 1);
      try {
        const job = (JSON.parse(text) as { jobs: readonly FioJob[] }).jobs[0];
        if (job !== undefined)
          reports.push({ at: now(), writeBytes: job.write.io_bytes, errors: Math.max(job.total_err ?? 0, job.error === 0 ? 0 : 1) });
      } catch {
        unreadable++;
      }
    }
  });
  let stderr = '';
  fio.child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_096);
  });
  const exited = (): boolean => fio.child.exitCode !== null || fio.child.signalCode !== null;
  const why = (): string => stderr.trim() || 'no message';

  const samples: OutageWritesSample[] = [];
  let sampling = true;
  const sampler = (async (): Promise<void> => {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- cleared by the caller while this loop awaits
    while (sampling) {
      const v = await fetchVolume(o.adminUrl, VOLUME).catch(() => undefined);
      samples.push({
        t: now() / 1000,
        rssMiB: residentMiB(o.pid) ?? null,
        writtenMiB: (reports.at(-1)?.writeBytes ?? 0) / 2 ** 20,
        errors: reports.at(-1)?.errors ?? 0,
        held: v?.heldRequests ?? null,
        backlogRecords: v?.backlogRecords ?? null,
        dirtyExtents: v?.dirtyExtents ?? null,
      });
      await sleep(SAMPLE_MS);
    }
  })();

  let outageUsage: { peakRssMiB: number; cpuSeconds: number } | undefined;
  let afterUsage: { peakRssMiB: number; cpuSeconds: number } | undefined;
  let downAt: number | undefined;
  try {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!reports.some((r) => r.writeBytes > 0)) {
      if (exited()) throw new Error(`fio exited before writing: ${why()}`);
      if (Date.now() > deadline) throw new Error(`fio wrote nothing within ${START_TIMEOUT_MS} ms: ${why()}`);
      await sleep(50);
    }
    await sleep(o.before * 1000);
    downAt = now();
    let rssAtOutageEndMiB = 0;
    await s3Outage(o.s3, o.outage, () => {
      rssAtOutageEndMiB = residentMiB(o.pid) ?? 0;
      outageUsage = meter.stop();
      afterMeter = new ProcessMeter(o.pid);
    });
    const upAt = now();
    const atReturn = await fetchVolume(o.adminUrl, VOLUME).catch(() => undefined);
    if (exited()) throw new Error(`fio ended during the outage (${reports.at(-1)?.errors ?? 'unknown'} errors): ${why()}`);
    await sleep(o.after * 1000);
    if (exited()) throw new Error(`fio ended before it was stopped (${reports.at(-1)?.errors ?? 'unknown'} errors): ${why()}`);
    // fio stops its job on SIGINT and then writes its final report.
    await fio.stop('SIGINT', STOP_GRACE_MS);
    const fioEndAt = now();
    const final = reports.at(-1);
    if (fio.child.signalCode !== null || final === undefined)
      throw new Error(`fio gave no final report (${fio.child.signalCode ?? 'no output'}): ${why()}`);
    if (unreadable > 0) throw new Error(`${unreadable} of fio's reports were not JSON`);
    await o.settle();
    const drainedAt = now();
    const atEnd = await fetchVolume(o.adminUrl, VOLUME);
    afterUsage = defined(afterMeter, 'meter after the outage').stop();
    const during = defined(outageUsage, 'meter of the outage');
    const outageBytes = writtenAt(reports, upAt, fioStart) - writtenAt(reports, downAt, fioStart);
    return {
      downAt: downAt / 1000,
      upAt: upAt / 1000,
      fioEndAt: fioEndAt / 1000,
      drainedAt: drainedAt / 1000,
      peakRssMiB: Math.max(during.peakRssMiB, afterUsage.peakRssMiB),
      outagePeakRssMiB: during.peakRssMiB,
      rssAtOutageEndMiB,
      cpuSeconds: during.cpuSeconds + afterUsage.cpuSeconds,
      outageBytes,
      outageMiBps: outageBytes / 2 ** 20 / ((upAt - downAt) / 1000),
      bytes: final.writeBytes,
      errors: final.errors,
      maxHeld: Math.max(0, ...samples.map((s) => s.held ?? 0)),
      drainSeconds: (drainedAt - upAt) / 1000,
      uploadedSinceReturnBytes: atReturn === undefined ? null : atEnd.uploadBytes - atReturn.uploadBytes,
      samples,
    };
  } catch (err) {
    if (residentMiB(o.pid) !== undefined) throw err;
    // Whatever failed next, the cause is the gateway's end: say when, and what it was doing.
    const last = samples.findLast((s) => s.rssMiB !== null);
    const highest = Math.max(0, ...samples.map((s) => s.rssMiB ?? 0));
    const when =
      downAt === undefined
        ? 'before the outage'
        : `within ${((last?.t ?? 0) + SAMPLE_MS / 1000 - downAt / 1000).toFixed(0)} s after the S3 server went down`;
    throw new GatewayExitedError(
      `the gateway (pid ${o.pid}) exited ${when}: its last RSS sample ${Math.round(last?.rssMiB ?? 0)} MiB, highest ${Math.round(highest)} MiB; fio had counted ${reports.at(-1)?.errors ?? 0} errors`,
      highest,
      { cause: err },
    );
  } finally {
    await fio.stop('SIGKILL');
    sampling = false;
    await sampler;
    if (outageUsage === undefined) stopQuietly(meter);
    if (afterUsage === undefined) stopQuietly(afterMeter);
  }
}
