/**
 * gateway/hang — I/O hang: holding guest requests through storage failures, bounded by a timeout.
 *
 * Read in this order:
 *   machine.ts       the state as data: HangState (normal | hang{episode} | timed-out{since, episode})
 *                    beside StorageHealth (store, journal), the paused flag, the policy and what is
 *                    held; pure queries (refusalFor, writeRefusal, snapshot)
 *   transition.ts    transition(machine, input, now) → { machine, actions }: every decision, pure
 *   hang-monitor.ts  HangMonitor, the shell: counts held requests, runs held reads and their retries,
 *                    probes the store, keeps the deadline timer on an injected Clock, and carries out
 *                    the actions (events, logs, failing held requests)
 *   interfaces.ts    what the engine needs (options, JournalWaiters, HeldSource) and offers (HangControl)
 *   held-read.ts     one held read (an attempt still unanswered when retries are woken is given up
 *                    for a new one); store-probe.ts the probe loop while the store fails; errors.ts
 *                    StorageFailedError (what a held request fails with)
 *   volume-health.ts VolumeHealth: where a volume's uploader, head commits, compactor and journal
 *                    report their store and disk outcomes; the engine reads them, and says there
 *                    when the store answers again
 *
 * What a volume uses (one HangMonitor per volume):
 *   run(op, bytes, signal)       a store read a guest request waits on, held through failures the
 *                                policy holds; rejects with StorageFailedError (EIO), corrupt data at
 *                                once. op(attemptSignal): pass the signal to the ObjectStore call, so
 *                                an attempt the read stops waiting for is aborted
 *   writeRefusal(mustWaitForRoom)  before a write is appended: an error to answer now, or undefined
 *   journal option (JournalWaiters) writes waiting for journal room or a failing sync: a held source
 *   addHeldSource({held, fail, waitsOn})  any other component's held requests (format 2: writes
 *                                durable in the journal that wait for the lease to be renewed);
 *                                returns the function that removes it
 *   storeFailed(err, 'write'|'read') / storeAnswered('write'|'read')  outcomes of store calls made
 *                                outside run() (uploads, head commits); a DataCorruptError is counted
 *                                and reported as `data-corrupt`, never held. A volume's components
 *                                report them to its VolumeHealth, which the engine is connected to
 *   journalFailed(err) / journalRecovered()   the journal disk's failures and recovery (likewise)
 *   onStoreRecovered option      the cue to retry now (a volume passes it on to VolumeHealth)
 *   close()                      shutdown: held requests are dropped unanswered
 * What the admin API and metrics use, through the Volume (`status()`, `hangControl()`), never the
 * engine itself: HangControl (policy, setPolicy, pause, resume, release, each with who asked),
 * snapshot(), counters.
 *
 * The rules: an episode begins when a request is held and ends when no request is held any more —
 * never because a probe answered; a probe answer only wakes retries. The timeout is a timer from the
 * episode's start (any length: long ones are waited out in steps), `forever` arms none.
 */
export { StorageFailedError, type FailReason } from './errors.js';
export { HangMonitor, STALL_MS } from './hang-monitor.js';
export { RetryNow } from './held-read.js';
export type { HangControl, HangCounters, HangMonitorOptions, HeldSource, JournalWaiters } from './interfaces.js';
export type { HangSnapshot, HangStateKind } from './machine.js';
export { VolumeHealth, type JournalReports, type StoreReports } from './volume-health.js';
