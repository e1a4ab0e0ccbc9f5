/**
 * Test-only switches that make a step of the storage protocol fail or crash the process, so that tests
 * can check the invariants after a failure at every step (the way trusted storage systems test
 * theirs). Armed by the HOLDFAST_FAILPOINTS environment variable — `name=crash`, `name=error`,
 * `name=error*3` (three times), comma-separated — or by a test through `arm`. Unarmed, a failpoint
 * costs one map lookup.
 */
import { HoldfastError } from '../shared/errors.js';

/** An injected failure; classified like a transient storage error, so it is retried. */
export class FailpointError extends HoldfastError {}

export type FailpointAction = 'error' | 'crash';

/** The steps that have failpoints; a name not in this list is refused when arming. */
export const FAILPOINTS = [
  'upload.before-put',
  'upload.after-put',
  'commit.before-head',
  'commit.after-head',
  'compact.after-put',
  'compact.before-commit',
  'compact.after-commit',
  'gc.before-delete',
  'gc.mid-delete',
  'takeover.after-head',
  'upgrade.after-extent',
] as const;
export type FailpointName = (typeof FAILPOINTS)[number];

export class Failpoints {
  private readonly armed = new Map<FailpointName, { action: FailpointAction; remaining: number; skip: number }>();
  /** Hit counts, for tests that check a point was reached. */
  readonly hits = new Map<FailpointName, number>();

  /** What a crash does: a real process dies on the spot; a model test replaces this. */
  constructor(private readonly crash: (name: FailpointName) => never = defaultCrash) {}

  static fromEnv(text: string | undefined): Failpoints {
    const fp = new Failpoints();
    for (const part of (text ?? '')
      .split(',')
      .map((p) => p.trim())
      .filter((p) => p !== '')) {
      const m = /^([a-z.-]+)=(error|crash)(?:\*(\d+)|@(\d+))?$/.exec(part);
      if (m === null || !FAILPOINTS.includes(m[1] as FailpointName))
        throw new RangeError(
          `HOLDFAST_FAILPOINTS: ${JSON.stringify(part)} is not NAME=error|crash[*TIMES|@NTH] with NAME one of ${FAILPOINTS.join(', ')}`,
        );
      fp.arm(
        m[1] as FailpointName,
        m[2] as FailpointAction,
        m[3] === undefined ? 1 : Number(m[3]),
        m[4] === undefined ? 0 : Number(m[4]) - 1,
      );
    }
    return fp;
  }

  /** Fails the next `times` hits, after letting `skip` hits pass. */
  arm(name: FailpointName, action: FailpointAction, times = 1, skip = 0): void {
    this.armed.set(name, { action, remaining: times, skip });
  }

  disarm(): void {
    this.armed.clear();
  }

  /** Called at the step: throws FailpointError, crashes, or returns. */
  hit(name: FailpointName): void {
    this.hits.set(name, (this.hits.get(name) ?? 0) + 1);
    const a = this.armed.get(name);
    if (a === undefined) return;
    if (a.skip > 0) {
      a.skip--;
      return;
    }
    if (--a.remaining <= 0) this.armed.delete(name);
    if (a.action === 'crash') this.crash(name);
    throw new FailpointError(`failpoint ${name}`);
  }
}

function defaultCrash(name: FailpointName): never {
  process.stderr.write(`failpoint ${name}: crashing\n`);
  process.kill(process.pid, 'SIGKILL');
  throw new FailpointError(`failpoint ${name}: crash`);
}

/** The process's failpoints, armed from the environment once. */
export const processFailpoints = Failpoints.fromEnv(process.env.HOLDFAST_FAILPOINTS);
