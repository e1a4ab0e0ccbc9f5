import { pino } from 'pino';
import type { HoldfastEvent, RequestedBy } from '../../shared/events.js';
import { DEFAULT_HANG_POLICY, type HangPolicy } from '../../shared/hang-policy.js';
import { HangMonitor, StorageFailedError } from '../../gateway/hang/index.js';
import { StoreError } from '../../gateway/store/object-store.js';
import { FakeClock } from './fake-clock.js';

/** A hang engine on a fake clock over a store the test turns off and on: for the shell's unit tests. */

const logger = pino({ level: 'silent' });
export const BY: RequestedBy = { address: '127.0.0.1:50000', token: null };
export const refused = () =>
  new StoreError('get', 'k', { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }) });
export const denied = () =>
  new StoreError('get', 'k', {
    cause: Object.assign(new Error('Access Denied'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } }),
  });
export const full = () =>
  new StoreError('put', 'k', { cause: Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' }) });

/** Writes waiting for journal room, as the journal reports them. */
export class Waiters {
  waiting: { bytes: number; reject: (e: Error) => void }[] = [];
  wait(bytes: number): Promise<void> {
    return new Promise((_, reject) => this.waiting.push({ bytes, reject }));
  }
  held() {
    return { requests: this.waiting.length, bytes: this.waiting.reduce((n, w) => n + w.bytes, 0) };
  }
  failWaiters(err: Error) {
    for (const w of this.waiting.splice(0)) w.reject(err);
  }
  usage() {
    return { bytes: 0, limit: 100 };
  }
}

/** A store that fails while `down` is set (reads with `makeError`); the probe answers while `probeDown` is not set. */
export function harness(policy: Partial<HangPolicy> = {}, makeError: () => Error = refused) {
  const clock = new FakeClock();
  const events: HoldfastEvent[] = [];
  const state = { down: true, probeDown: true, calls: 0, probes: 0, recovered: 0 };
  const journal = new Waiters();
  const monitor = new HangMonitor({
    volume: 'v1',
    gateway: 'gw-test',
    policy: { ...DEFAULT_HANG_POLICY, retryMaxMs: 200, ...policy },
    probe: async () => {
      state.probes++;
      if (state.probeDown) throw makeError();
    },
    journal,
    events: { publish: (e) => events.push(e), close: async () => undefined },
    logger,
    probeIntervalMs: 20,
    retryInitialMs: 10,
    onStoreRecovered: () => state.recovered++,
    clock,
    idPrefix: 'test',
  });
  const op = async () => {
    state.calls++;
    if (state.down) throw makeError();
    return 'data';
  };
  const up = () => {
    state.down = false;
    state.probeDown = false;
  };
  return { monitor, events, state, op, clock, journal, up };
}

/** Records how a promise settled, without awaiting it. */
export function outcome<T>(p: Promise<T>): { value?: T; error?: unknown; settled: boolean } {
  const o: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  p.then(
    (value) => Object.assign(o, { value, settled: true }),
    (error: unknown) => Object.assign(o, { error, settled: true }),
  );
  return o;
}

/** The edges of conditions and operator actions (journal pressure, sampled on its own timer, left out). */
export const edges = (events: HoldfastEvent[]) =>
  events.filter((e) => e.kind !== 'journal-pressure').map((e) => `${e.kind}${'set' in e ? `:${e.set}` : ''}`);
export const failedWith = (reason: string) => (e: unknown) => e instanceof StorageFailedError && e.reason === reason;
