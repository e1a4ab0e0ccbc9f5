import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { allocationDescriptors, MAX_DESCRIPTORS } from '../../gateway/nbd/block-status.js';
import { BufferBudget } from '../../gateway/nbd/buffer-budget.js';
import { AllocationState } from '../../gateway/nbd/constants.js';
import { ExportContractError } from '../../gateway/nbd/errors.js';

const KiB = 1024;

describe('BufferBudget', () => {
  it('lets every connection hold its reserve and shares the limit beyond it', () => {
    const budget = new BufferBudget(100 * KiB, 10 * KiB);
    const a = budget.account(1000 * KiB, () => undefined);
    const b = budget.account(1000 * KiB, () => undefined);
    assert.ok(a.tryCharge(60 * KiB));
    assert.equal(budget.sharedInUse, 50 * KiB);
    assert.ok(b.tryCharge(60 * KiB));
    assert.equal(budget.sharedInUse, 100 * KiB);
    assert.equal(a.tryCharge(KiB), false, 'the shared part is spent');
    const c = budget.account(1000 * KiB, () => undefined);
    assert.ok(c.tryCharge(10 * KiB), 'a third connection still has its reserve');
    assert.equal(c.tryCharge(1), false);
    b.release(60 * KiB);
    assert.equal(budget.sharedInUse, 50 * KiB);
    assert.ok(a.tryCharge(KiB));
  });

  it('calls back a refused connection once room comes back: at once from itself, after the poll from others', async () => {
    const budget = new BufferBudget(20 * KiB, 0);
    const calls: string[] = [];
    const a = budget.account(15 * KiB, () => calls.push('a'));
    const b = budget.account(100 * KiB, () => calls.push('b'));
    assert.ok(a.tryCharge(15 * KiB));
    assert.equal(a.tryCharge(KiB), false, 'over its own limit');
    assert.ok(b.tryCharge(5 * KiB));
    assert.equal(b.tryCharge(KiB), false, 'the shared limit is spent');
    a.release(5 * KiB);
    assert.deepEqual(calls, ['a'], 'its own bytes coming back wake a connection at once');
    await nextTurn();
    assert.deepEqual(calls, ['a', 'b'], 'others are woken after the closes of this poll have been seen');
    calls.length = 0;
    a.release(KiB);
    await nextTurn();
    assert.deepEqual(calls, [], 'only refused connections are called back, once');
  });

  it('always admits one request, however large, on a connection that holds nothing', () => {
    const budget = new BufferBudget(64 * KiB, 0);
    const a = budget.account(16 * KiB, () => undefined);
    assert.ok(a.tryCharge(32 * KiB));
    assert.equal(a.tryCharge(1), false);
  });

  it('gives everything back when a connection closes, and forgets its callback', async () => {
    let called = 0;
    const budget = new BufferBudget(10 * KiB, KiB);
    const a = budget.account(100 * KiB, () => called++);
    const b = budget.account(100 * KiB, () => undefined);
    assert.ok(a.tryCharge(8 * KiB));
    assert.equal(a.tryCharge(8 * KiB), false);
    a.close();
    assert.equal(budget.sharedInUse, 0);
    assert.ok(b.tryCharge(11 * KiB));
    b.release(11 * KiB);
    await nextTurn();
    assert.equal(called, 0, 'a closed connection is not called back');
    a.release(KiB);
    assert.equal(budget.sharedInUse, 0, 'a release after close changes nothing');
  });
});

describe('allocationDescriptors', () => {
  const HZ = AllocationState.HOLE | AllocationState.ZERO;

  it('cuts extents to the request and merges neighbours in the same state', () => {
    const extents = [
      { length: 4096, hole: true, zero: true },
      { length: 4096, hole: true, zero: true },
      { length: 8192, hole: false, zero: false },
      { length: 8192, hole: false, zero: true },
    ];
    assert.deepEqual(allocationDescriptors(extents, 20000, false), [
      { length: 8192, flags: HZ },
      { length: 8192, flags: 0 },
      { length: 3616, flags: AllocationState.ZERO },
    ]);
    assert.deepEqual(allocationDescriptors(extents, 20000, true), [{ length: 8192, flags: HZ }]);
  });

  it('sends at most MAX_DESCRIPTORS, the client asking again for the rest', () => {
    const extents = Array.from({ length: MAX_DESCRIPTORS + 10 }, (_, i) => ({ length: 512, hole: i % 2 === 0, zero: i % 2 === 0 }));
    assert.equal(allocationDescriptors(extents, 2 ** 31, false).length, MAX_DESCRIPTORS);
  });

  it('treats an empty or nonsensical answer from the export as a broken contract', () => {
    assert.throws(() => allocationDescriptors([], 4096, false), ExportContractError);
    assert.throws(() => allocationDescriptors([{ length: 0, hole: false, zero: false }], 4096, false), ExportContractError);
    assert.throws(() => allocationDescriptors([{ length: NaN, hole: false, zero: false }], 4096, false), ExportContractError);
  });
});
