/** The gateway's way of logging an error: class, message, code and a cause that adds something; the stack at debug only. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errorSerializer } from '../../gateway/logger.js';
import { StoreError } from '../../gateway/store/object-store.js';
import { HoldfastError } from '../../shared/errors.js';

const refused = (): Error => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9000'), { code: 'ECONNREFUSED' });

test('class, message and code, without a stack above debug', () => {
  for (const level of ['info', 'warn', 'error']) {
    assert.deepEqual(errorSerializer(level)(refused()), {
      class: 'Error',
      message: 'connect ECONNREFUSED 127.0.0.1:9000',
      code: 'ECONNREFUSED',
    });
  }
});

test('the stack at debug and trace', () => {
  for (const level of ['debug', 'trace'])
    assert.match(errorSerializer(level)(refused()).stack ?? '', /^Error: connect ECONNREFUSED[^\n]*\n +at /);
});

test('a cause is shown when it adds something, not when the message already quotes it', () => {
  class UploadError extends HoldfastError {}
  const wrapped = new UploadError('extent 7 of vm1 could not be uploaded', { cause: refused() });
  assert.deepEqual(errorSerializer('info')(wrapped), {
    class: 'UploadError',
    message: 'extent 7 of vm1 could not be uploaded',
    cause: { class: 'Error', message: 'connect ECONNREFUSED 127.0.0.1:9000', code: 'ECONNREFUSED' },
  });
  const quoting = new StoreError('get', 'volumes/vm1/extents/000000000007', { cause: refused() });
  const fields = errorSerializer('info')(quoting);
  assert.equal(fields.class, 'StoreError');
  assert.ok(fields.message.includes('ECONNREFUSED'), fields.message);
  assert.equal(fields.cause, undefined, `the cause is in the message already: ${JSON.stringify(fields)}`);
});

test('what is thrown but is no Error is logged as what it is', () => {
  assert.deepEqual(errorSerializer('info')('a string'), { class: 'string', message: 'a string' });
});
