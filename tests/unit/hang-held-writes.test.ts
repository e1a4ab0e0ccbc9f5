import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DataCorruptError, JournalIoError } from '../../shared/errors.js';
import { DEFAULT_HANG_POLICY } from '../../shared/hang-policy.js';
import { StoreError } from '../../gateway/store/object-store.js';
import { classifyError } from '../../gateway/util/classify-error.js';
import { settle } from '../helpers/fake-clock.js';
import { denied, edges, failedWith, full, harness, outcome, refused } from '../helpers/hang-harness.js';

/**
 * Writes held behind failing uploads and other held sources, on the engine's shell and a fake clock;
 * and the error classifier the engine decides by.
 */

describe('writes held behind failing uploads', () => {
  it('uploads fail while the probe answers: one episode, held throughout, failed at the deadline', async () => {
    const { monitor, journal, events, clock, state } = harness({ timeout: 3000 }, full);
    state.probeDown = false;
    monitor.storeFailed(full());
    const write = outcome(journal.wait(4096));
    monitor.refresh();
    assert.equal(monitor.state, 'hang');
    for (let t = 0; t < 2900; t += 100) {
      // The uploader retries when woken and fails again; the probe keeps answering.
      await clock.advance(100);
      monitor.storeFailed(full());
      assert.equal(monitor.state, 'hang', `still one episode at ${t + 100} ms`);
    }
    assert.ok(state.probes >= 100 && state.recovered >= 100, 'the probe answered and woke the uploader all along');
    await clock.advance(99);
    assert.equal(write.settled, false);
    await clock.advance(1);
    assert.ok(failedWith('timeout')(write.error));
    assert.equal(monitor.state, 'timed-out');
    assert.deepEqual(edges(events), ['storage-unavailable:true', 'io-hang:true', 'io-hang-timeout:true', 'io-hang:false']);
    assert.equal(monitor.counters.episodes, 1);
    assert.ok(monitor.writeRefusal(true)?.reason === 'timed-out', 'writes that need room fail fast now');
    assert.equal(monitor.writeRefusal(false), undefined, 'writes with room go on');
    monitor.storeAnswered();
    assert.equal(monitor.state, 'normal', 'an upload that succeeds ends the timeout');
    monitor.close();
  });

  it('the episode lasts until the held writes are admitted, not until the store answers', async () => {
    const { monitor, journal, events, clock } = harness({}, full);
    monitor.storeFailed(full());
    void journal.wait(4096).catch(() => undefined);
    monitor.refresh();
    assert.equal(monitor.state, 'hang');
    monitor.storeAnswered();
    await clock.advance(1000);
    assert.equal(monitor.state, 'hang', 'the write still waits for room');
    journal.waiting.splice(0);
    await clock.advance(250);
    assert.equal(monitor.state, 'normal');
    assert.deepEqual(edges(events), ['storage-unavailable:true', 'io-hang:true', 'storage-unavailable:false', 'io-hang:false']);
    monitor.close();
  });

  it('writes waiting for room are back-pressure, not a hang, while storage answers', async () => {
    const { monitor, journal, clock } = harness();
    void journal.wait(4096).catch(() => undefined);
    await clock.advance(500);
    assert.equal(monitor.state, 'normal');
    assert.equal(monitor.snapshot().held.requests, 0);
    monitor.close();
  });

  it('any component can add held requests: counted while the store fails, failed by the timeout', async () => {
    const { monitor, clock, state } = harness({ timeout: 1000 });
    state.probeDown = true;
    const failed: Error[] = [];
    let waiting = 2;
    const remove = monitor.addHeldSource({
      held: () => ({ requests: waiting, bytes: waiting * 512 }),
      fail: (e) => {
        failed.push(e);
        waiting = 0;
      },
      waitsOn: 'store',
    });
    assert.equal(monitor.state, 'normal', 'nothing held while the store answers');
    monitor.storeFailed(refused());
    assert.equal(monitor.state, 'hang');
    assert.deepEqual(monitor.snapshot().held, { requests: 2, bytes: 1024 });
    await clock.advance(1000);
    assert.equal(failed.length, 1);
    assert.ok(failedWith('timeout')(failed[0]));
    remove();
    monitor.close();
  });

  it('a journal failure the policy fails answers the journal waiters, not the held reads', async () => {
    const { monitor, journal, op, clock } = harness({ classes: { ...DEFAULT_HANG_POLICY.classes, io: 'fail' } });
    const read = outcome(monitor.run(op, 1, undefined));
    const write = outcome(journal.wait(4096));
    await clock.advance(50);
    monitor.journalFailed(new JournalIoError('sync failed', { cause: Object.assign(new Error('EIO'), { code: 'EIO' }) }));
    await settle();
    assert.ok(failedWith('policy')(write.error));
    assert.equal(read.settled, false);
    assert.equal(monitor.writeRefusal(false)?.reason, 'policy', 'new writes fail while the journal fails');
    monitor.close();
  });
});

it('errors are classified by cause', () => {
  const sdk = (name: string, status?: number) =>
    new StoreError('put', 'k', {
      cause: Object.assign(new Error(name), { name, ...(status === undefined ? {} : { $metadata: { httpStatusCode: status } }) }),
    });
  const sys = (code: string) => Object.assign(new Error(code), { code });
  const table: [Error, string][] = [
    [refused(), 'transient'],
    [new StoreError('get', 'k', { cause: sys('ECONNRESET') }), 'transient'],
    [new StoreError('get', 'k', { cause: sys('ENOTFOUND') }), 'transient'],
    [sdk('TimeoutError'), 'transient'],
    [sdk('SlowDown', 503), 'transient'],
    [sdk('InternalError', 500), 'transient'],
    [sdk('Unknown', 502), 'transient'],
    [sdk('RequestTimeout', 400), 'transient'],
    [denied(), 'denied'],
    [sdk('ExpiredToken', 400), 'denied'],
    [sdk('CredentialsProviderError'), 'denied'],
    [sdk('NoSuchBucket', 404), 'missing'],
    [sdk('InvalidArgument', 400), 'invalid'],
    [new JournalIoError('sync failed', { cause: sys('EIO') }), 'io'],
    [new JournalIoError('write failed', { cause: sys('ENOSPC') }), 'no-space'],
    [new JournalIoError('write failed', { cause: sys('EDQUOT') }), 'no-space'],
    [full(), 'no-space'],
    [new StoreError('put', 'k', { cause: sys('EACCES') }), 'denied'],
    [new StoreError('get', 'k', { cause: new DataCorruptError('bad CRC', { cause: sys('EIO') }) }), 'corrupt'],
  ];
  for (const [err, cls] of table) assert.equal(classifyError(err), cls, err.message);
});
