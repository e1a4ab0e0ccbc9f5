import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GatewayConfigSchema } from '../../shared/config.js';
import {
  DEFAULT_HANG_POLICY,
  HangPolicyDocumentSchema,
  HangPolicyPatchSchema,
  applyPolicyPatch,
  parseClassActions,
  policyDocument,
} from '../../shared/hang-policy.js';

/** The hang policy at the edges: what the admin API shows and takes, and the configuration. */

describe('hang policy document', () => {
  it('what GET returns is accepted by PUT and changes nothing', () => {
    for (const timeout of [120_000, 250, 'off', 'forever'] as const) {
      const policy = { ...DEFAULT_HANG_POLICY, timeout, retryMaxMs: 1500 };
      const doc = policyDocument(policy);
      HangPolicyDocumentSchema.parse(doc);
      const patch = HangPolicyPatchSchema.parse(JSON.parse(JSON.stringify(doc)));
      assert.deepEqual(applyPolicyPatch(DEFAULT_HANG_POLICY, patch), policy);
    }
  });

  it('durations are strings whatever the timeout', () => {
    assert.deepEqual(policyDocument({ ...DEFAULT_HANG_POLICY, timeout: 'forever' }).timeout, 'forever');
    assert.deepEqual(policyDocument(DEFAULT_HANG_POLICY), { timeout: '120s', classes: DEFAULT_HANG_POLICY.classes, retryMax: '1s' });
    assert.equal(policyDocument({ ...DEFAULT_HANG_POLICY, timeout: 1500 }).timeout, '1500ms');
  });

  it('refuses what it cannot mean, saying why', () => {
    const refused = (body: unknown): string => {
      const r = HangPolicyPatchSchema.safeParse(body);
      assert.ok(!r.success, `accepted ${JSON.stringify(body)}`);
      return r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    };
    assert.match(refused({ timeout: 30000 }), /timeout: .*string/i);
    assert.match(refused({ timeout: 'soon' }), /not a hang timeout/);
    assert.match(refused({ timeout: '99999999999999999999s' }), /longer than a hang timeout can be; use forever/);
    assert.match(refused({ retryMax: '10ms' }), /at least 50ms/);
    assert.match(refused({ classes: { corrupt: 'hold' } }), /corrupt data is never held/);
    assert.match(refused({ classes: { transient: 'maybe' } }), /classes\.transient/);
    assert.match(refused({ retryMaxMs: 1000 }), /retryMaxMs/);
  });

  it('a timeout longer than a Node timer is accepted: the engine waits it out in steps', () => {
    const patch = HangPolicyPatchSchema.parse({ timeout: '597h' });
    assert.equal(patch.timeout, 597 * 3_600_000);
    assert.ok(typeof patch.timeout === 'number' && patch.timeout > 2 ** 31);
  });
});

describe('hang policy configuration', () => {
  it('takes the same timeouts and refuses a timeout no number holds', () => {
    assert.equal(GatewayConfigSchema.parse({ hangTimeout: '597h' }).hangTimeout, 597 * 3_600_000);
    assert.equal(GatewayConfigSchema.parse({ hangTimeout: 'forever' }).hangTimeout, 'forever');
    const r = GatewayConfigSchema.safeParse({ hangTimeout: '99999999999999999999s' });
    assert.ok(!r.success && /use forever/.test(r.error.message));
  });

  it('class overrides name policy classes; corrupt is never held', () => {
    assert.deepEqual(parseClassActions('denied=hold, no-space=fail'), { denied: 'hold', 'no-space': 'fail' });
    const corrupt = parseClassActions('corrupt=hold');
    assert.ok(typeof corrupt === 'string' && /never held/.test(corrupt));
    const bogus = parseClassActions('bogus=hold');
    assert.ok(typeof bogus === 'string' && /CLASS one of transient, denied, missing, no-space, io, invalid$/.test(bogus));
  });
});
