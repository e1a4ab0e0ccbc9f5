import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, describe, it, type TestContext } from 'node:test';
import type { HoldfastEvent, IoHangEvent } from '../../shared/events.js';
import { type ConsoleLine, type GuestSetup, prepareGuest } from '../helpers/vm-guest.js';
import { type Rig, startRig } from '../helpers/vm-rig.js';

/**
 * The reason Holdfast exists, with a real guest kernel: a Linux VM whose disk is a Holdfast volume
 * keeps a writable ext4 through S3 outages and a gateway restart, while the same outage without
 * I/O hang (or longer than the hang timeout) reaches the guest as I/O errors.
 *
 * The guest (tests/vm/guest-init.sh) writes, fsyncs and cold-reads files in a loop; each scenario
 * makes its outage once the loop runs, lets the loop go on for a few rounds after storage is back,
 * then has the guest report, remount and re-read everything.
 */

const BOOT_TIMEOUT_MS = 120_000;
const ROUND_TIMEOUT_MS = 90_000;
const REPORT_TIMEOUT_MS = 120_000;
const SCENARIO_TIMEOUT_MS = 300_000;
/** Rounds of the guest loop before the outage (so it lands mid-workload) and after it (recovery shown). */
const ROUNDS_BEFORE = 2;
const ROUNDS_AFTER = 3;
const OUTAGE_MS = 15_000;
const SHORT_HANG_TIMEOUT_MS = 5_000;
/** docs/io-hang.md: a hang timeout fails the held requests within 100 ms of its deadline. */
const TIMEOUT_ACCURACY_MS = 100;
const LONG_OUTAGE_MS = 20_000;
/** The hang timeout of the ride-through scenarios: the gateway's default, far above the outages. */
const DEFAULT_HANG_TIMEOUT = '120s';
/** What the guest kernel prints when an I/O error reaches it. */
const KERNEL_ERROR = /I\/O error|EXT4-fs error|Remounting filesystem read-only|Aborting journal/;

interface WorkloadReport {
  /** Lines the workload printed about failed commands and wrong data. */
  readonly workloadErrors: readonly ConsoleLine[];
  /** Kernel console lines about I/O errors and ext4 giving up. */
  readonly kernelErrors: readonly ConsoleLine[];
  /** `rw` or `ro`: the mount's flag in /proc/mounts when the workload ended, before the remount. */
  readonly mount: string;
  /** `yes`, or `no: ` and why creating a file failed, when the workload ended. */
  readonly writable: string;
  /** Counts from the guest's dmesg. */
  readonly dmesg: string;
  /** Path → sha256 of each file the guest wrote and fsynced. */
  readonly written: ReadonlyMap<string, string>;
  /** Path → sha256 (or `unreadable`) of every file, re-read after the remount. */
  readonly sums: ReadonlyMap<string, string>;
  readonly fatal: readonly string[];
}

function parseReport(lines: readonly ConsoleLine[]): WorkloadReport {
  const workloadErrors: ConsoleLine[] = [];
  const kernelErrors: ConsoleLine[] = [];
  const written = new Map<string, string>();
  const sums = new Map<string, string>();
  const fatal: string[] = [];
  let mount = 'unknown';
  let writable = 'unknown';
  let dmesg = 'none';
  for (const line of lines) {
    const m = /@@hf (\S+) ?(.*)$/.exec(line.text);
    if (m === null) {
      if (KERNEL_ERROR.test(line.text)) kernelErrors.push(line);
      continue;
    }
    const [, tag, rest = ''] = m;
    const [first = '', second = ''] = rest.split(' ');
    switch (tag) {
      case 'ERROR':
        workloadErrors.push(line);
        break;
      case 'FATAL':
        fatal.push(rest);
        break;
      case 'WROTE':
        written.set(first, second);
        break;
      case 'SUM':
        sums.set(first, second);
        break;
      case 'MOUNT':
        mount = rest;
        break;
      case 'WRITABLE':
        writable = rest;
        break;
      case 'KERNEL':
        dmesg = rest;
        break;
    }
  }
  return { workloadErrors, kernelErrors, mount, writable, dmesg, written, sums, fatal };
}

interface Outcome {
  /** Guest path → sha256 of the files the host put on the filesystem. */
  readonly seed: ReadonlyMap<string, string>;
  readonly report: WorkloadReport;
  readonly lines: readonly ConsoleLine[];
  readonly outageStart: number;
  readonly outageEnd: number;
  readonly events: readonly HoldfastEvent[];
  readonly transcript: string;
}

function firstGuestError(report: WorkloadReport): ConsoleLine | undefined {
  return [...report.workloadErrors, ...report.kernelErrors].sort((a, b) => a.at - b.at)[0];
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

type IoHangCleared = Extract<IoHangEvent, { set: false }>;

function endedHangs(events: readonly HoldfastEvent[]): IoHangCleared[] {
  return events.filter((e): e is IoHangCleared => e.kind === 'io-hang' && !e.set);
}

/** Each hang episode's duration from its io-hang events; one whose gateway was killed has no end. */
function hangSummary(events: readonly HoldfastEvent[]): string {
  const ended = endedHangs(events);
  const episodes = events
    .filter((e) => e.kind === 'io-hang' && e.set)
    .map((begun) => {
      const end = ended.find((e) => e.episode === begun.episode);
      return end === undefined ? 'one not ended (its gateway was killed)' : seconds(end.durationMs);
    });
  const timeouts = events.filter((e) => e.kind === 'io-hang-timeout' && e.set).length;
  return `${episodes.length === 0 ? 'none' : episodes.join(', ')}${timeouts > 0 ? ` (${timeouts} timed out)` : ''}`;
}

/** The longest silence of the workload across the outage: how long the guest's I/O was stuck. */
function longestStall(outcome: Outcome): number {
  const marks = outcome.lines.filter((l) => /@@hf (ITER|WROTE|ERROR) /.test(l.text));
  let longest = 0;
  for (let i = 1; i < marks.length; i++) {
    const [a, b] = [marks[i - 1]!, marks[i]!];
    if (b.at >= outcome.outageStart && a.at <= outcome.outageEnd) longest = Math.max(longest, b.at - a.at);
  }
  return longest;
}

function describeOutcome(outcome: Outcome): string {
  const { report } = outcome;
  const first = firstGuestError(report);
  const errors =
    first === undefined
      ? 'guest-visible errors: 0'
      : `guest-visible errors: ${report.workloadErrors.length} workload errors and ${report.kernelErrors.length} kernel error lines, ` +
        `the first ${seconds(first.at - outcome.outageStart)} after the outage began (${first.text.trim()})`;
  return (
    `outage ${seconds(outcome.outageEnd - outcome.outageStart)}; ${errors}; longest guest I/O stall ${seconds(longestStall(outcome))}; ` +
    `filesystem: /proc/mounts ${report.mount}, writable ${report.writable}, dmesg ${report.dmesg}; hang episodes: ${hangSummary(outcome.events)}`
  );
}

async function waitForEvent(rig: Rig, matches: (e: HoldfastEvent) => boolean, timeoutMs: number): Promise<HoldfastEvent> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = rig.events().find(matches);
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`no such gateway event within ${timeoutMs} ms; events: ${JSON.stringify(rig.events())}`);
    await sleep(100);
  }
}

/**
 * Boots the guest on a fresh volume, runs `outage` once the workload is under way (it returns when
 * storage is back), lets the workload run on, and collects the guest's report and the events.
 */
async function runScenario(t: TestContext, setup: GuestSetup, hangTimeout: string, outage: (rig: Rig) => Promise<void>): Promise<Outcome> {
  // The suite's timings depend on the accelerator, so the report names it.
  t.diagnostic(`guest: kernel ${setup.kernelVersion} under ${setup.accel} (${setup.accelReason})`);
  const rig = await startRig({ setup, hangTimeout });
  try {
    const { guest } = rig;
    await guest.waitForLine(/@@hf WORKLOAD START/, BOOT_TIMEOUT_MS);
    await guest.waitForLine(new RegExp(`@@hf ITER ${ROUNDS_BEFORE} `), ROUND_TIMEOUT_MS);
    const outageStart = Date.now();
    await outage(rig);
    const outageEnd = Date.now();
    let from = guest.lines.length;
    for (let i = 0; i < ROUNDS_AFTER; i++) from = (await guest.waitForLine(/@@hf ITER /, ROUND_TIMEOUT_MS, from)).index + 1;
    guest.send('STOP');
    await guest.waitForLine(/@@hf WORKLOAD DONE/, REPORT_TIMEOUT_MS);
    await guest.exited;
    const lines = [...guest.lines];
    return {
      seed: rig.seed,
      report: parseReport(lines),
      lines,
      outageStart,
      outageEnd,
      events: rig.events(),
      transcript: guest.transcript(),
    };
  } finally {
    await rig.dispose();
  }
}

/** Scenarios 1–3: nothing reached the guest, the filesystem stayed writable, and all data is right. */
function assertRodeThrough(t: TestContext, outcome: Outcome): void {
  const { report, transcript } = outcome;
  const context = `\n${transcript}`;
  assert.deepEqual(report.fatal, [], `the guest gave up${context}`);
  assert.deepEqual(
    report.workloadErrors.map((l) => l.text),
    [],
    `the workload saw errors${context}`,
  );
  assert.deepEqual(
    report.kernelErrors.map((l) => l.text),
    [],
    `the guest kernel saw I/O errors${context}`,
  );
  assert.equal(report.mount, 'rw', `the filesystem went read-only${context}`);
  assert.equal(report.writable, 'yes', `the filesystem refuses writes${context}`);
  assert.equal(report.dmesg, 'io_errors=0 remount_ro=0 ext4_errors=0', `the guest's dmesg shows errors${context}`);

  const expected = new Map([...outcome.seed, ...report.written]);
  assert.ok(report.written.size >= ROUNDS_BEFORE + ROUNDS_AFTER, `the guest wrote only ${report.written.size} files${context}`);
  assert.deepEqual(new Map(report.sums), expected, `files re-read after the remount differ from what was written${context}`);

  assert.ok(
    endedHangs(outcome.events).length > 0,
    `the outage held no guest I/O (no io-hang episode ended); events: ${JSON.stringify(outcome.events)}${context}`,
  );
  t.diagnostic(
    `${describeOutcome(outcome)}; ${report.written.size} files written, all ${expected.size} files re-read intact after a remount`,
  );
}

describe('VM acceptance: a Linux guest on a Holdfast volume through storage outages', () => {
  let setup: GuestSetup;
  before(async () => {
    setup = await prepareGuest();
  });

  it(
    '1. S3 killed for 15 s mid-workload: no guest error, ext4 stays writable, data intact',
    { timeout: SCENARIO_TIMEOUT_MS },
    async (t) => {
      const outcome = await runScenario(t, setup, DEFAULT_HANG_TIMEOUT, async (rig) => {
        await rig.s3.kill();
        await sleep(OUTAGE_MS);
        await rig.s3.restart();
      });
      assertRodeThrough(t, outcome);
    },
  );

  it('2. S3 frozen (SIGSTOP) for 15 s: the same', { timeout: SCENARIO_TIMEOUT_MS }, async (t) => {
    const outcome = await runScenario(t, setup, DEFAULT_HANG_TIMEOUT, async (rig) => {
      rig.s3.freeze();
      await sleep(OUTAGE_MS);
      rig.s3.thaw();
    });
    assertRodeThrough(t, outcome);
  });

  it(
    '3. gateway SIGKILLed during an S3 outage, restarted 5 s later, S3 back 10 s after: nothing lost',
    { timeout: SCENARIO_TIMEOUT_MS },
    async (t) => {
      let killedAt = 0;
      const outcome = await runScenario(t, setup, DEFAULT_HANG_TIMEOUT, async (rig) => {
        await rig.s3.kill();
        // Killed while guest reads are held: they must be resent by QEMU and answered by the new gateway.
        await waitForEvent(rig, (e) => e.kind === 'io-hang' && e.set, OUTAGE_MS);
        await rig.killGateway();
        killedAt = Date.now();
        await sleep(5_000);
        await rig.restartGateway();
        await sleep(Math.max(0, killedAt + 15_000 - Date.now()));
        await rig.s3.restart();
      });
      assertRodeThrough(t, outcome);
      t.diagnostic(
        `the gateway was killed ${seconds(killedAt - outcome.outageStart)} into the outage, down 5 s; S3 back ${seconds(outcome.outageEnd - killedAt)} after the kill`,
      );
    },
  );

  it('4. control: the same outage with hang timeout off reaches the guest as I/O errors', { timeout: SCENARIO_TIMEOUT_MS }, async (t) => {
    const outcome = await runScenario(t, setup, 'off', async (rig) => {
      await rig.s3.kill();
      await sleep(OUTAGE_MS);
      await rig.s3.restart();
    });
    const first = firstGuestError(outcome.report);
    assert.ok(first !== undefined, `without I/O hang the outage must reach the guest as errors, and none did\n${outcome.transcript}`);
    assert.ok(first.at >= outcome.outageStart, `a guest error came before the outage: ${first.text}`);
    t.diagnostic(`hang timeout off; ${describeOutcome(outcome)}`);
  });

  it(
    '5. an outage longer than a 5 s hang timeout: the guest sees errors after the timeout, not before',
    { timeout: SCENARIO_TIMEOUT_MS },
    async (t) => {
      const outcome = await runScenario(t, setup, `${SHORT_HANG_TIMEOUT_MS}ms`, async (rig) => {
        await rig.s3.kill();
        await sleep(LONG_OUTAGE_MS);
        await rig.s3.restart();
      });
      const { events } = outcome;
      const first = firstGuestError(outcome.report);
      assert.ok(first !== undefined, `an outage past the hang timeout must reach the guest as errors, and none did\n${outcome.transcript}`);
      const afterStart = first.at - outcome.outageStart;
      // The hang can begin a few milliseconds after the outage does (a killed server refuses at once).
      assert.ok(
        afterStart >= SHORT_HANG_TIMEOUT_MS - TIMEOUT_ACCURACY_MS,
        `the guest saw an error ${afterStart} ms into the outage, before the ${SHORT_HANG_TIMEOUT_MS} ms hang timeout: ${first.text}\n${outcome.transcript}`,
      );
      assert.ok(first.at <= outcome.outageEnd, `the first guest error came only after the outage ended: ${first.text}`);
      const hangStart = events.find((e) => e.kind === 'io-hang' && e.set);
      const timeout = events.find((e) => e.kind === 'io-hang-timeout' && e.set);
      assert.ok(
        hangStart !== undefined && timeout !== undefined,
        `expected io-hang and io-hang-timeout events; got ${JSON.stringify(events)}`,
      );
      const hangBegan = Date.parse(hangStart.time);
      const timedOut = Date.parse(timeout.time);
      // Console lines are stamped with the host's clock when they arrive, after the guest printed
      // them; the gateway stamps io-hang-timeout with the same clock before it fails the held
      // requests. An error the timeout caused therefore arrives at or after that stamp.
      assert.ok(first.at >= timedOut, `the guest saw an error ${timedOut - first.at} ms before the hang timeout fired: ${first.text}`);
      // And the timeout itself came no sooner than its deadline allows: the io-hang event is stamped a
      // little after the clock the timer counts from, and a Node timer may fire a millisecond early by
      // Date.now(), which the documented accuracy covers.
      assert.ok(
        first.at >= hangBegan + SHORT_HANG_TIMEOUT_MS - TIMEOUT_ACCURACY_MS,
        `the guest saw an error ${first.at - hangBegan} ms into the hang episode, more than ${TIMEOUT_ACCURACY_MS} ms before its ${SHORT_HANG_TIMEOUT_MS} ms timeout`,
      );
      t.diagnostic(
        `hang timeout ${seconds(SHORT_HANG_TIMEOUT_MS)}; ${describeOutcome(outcome)}; the first error came ${seconds(first.at - hangBegan)} after ` +
          `the hang began (io-hang-timeout event ${seconds(timedOut - hangBegan)} after it)`,
      );
    },
  );
});
