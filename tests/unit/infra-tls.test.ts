import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { App } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { HoldfastStack } from '../../infra/holdfast-stack.js';
import { parseDeployment } from '../../infra/stack-config.js';
import { ConfigError } from '../../shared/errors.js';

const outdir = mkdtempSync(join(tmpdir(), 'holdfast-cdk-tls-'));
after(() => {
  rmSync(outdir, { recursive: true, force: true });
});
const app = new App({ outdir });
const stack = new HoldfastStack(app, 'HoldfastTls', {
  deployment: parseDeployment({
    allowedCidrs: '10.20.0.0/16',
    volumes: 'vm1',
    tls: 'require',
    tlsCert: 'secretsmanager:holdfast/nbd-cert',
    tlsKey: 'secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:holdfast/nbd-key-AbCdEf',
    tlsPsk: 'ssm:/holdfast/nbd-psk',
    nbdAccess: '{"vm1-host": {"vm1": "rw"}}',
  }),
});
const template = Template.fromStack(stack);

test('TLS settings reach the task: the mode and access rules in the environment, keys as ECS secrets', () => {
  const [definition] = Object.values(template.findResources('AWS::ECS::TaskDefinition'));
  const [container] = (definition!.Properties as { ContainerDefinitions: Record<string, unknown>[] }).ContainerDefinitions;
  const env = Object.fromEntries((container!.Environment as { Name: string; Value: unknown }[]).map((e) => [e.Name, e.Value]));
  assert.equal(env.HOLDFAST_TLS, 'require');
  assert.equal(env.HOLDFAST_NBD_ACCESS, '{"vm1-host": {"vm1": "rw"}}');
  assert.equal(env.HOLDFAST_NBD_MAX_CONNECTIONS_PER_PEER, env.HOLDFAST_NBD_MAX_CONNECTIONS, 'behind the NLB every client has its address');
  const secrets = Object.fromEntries(
    (container!.Secrets as { Name: string; ValueFrom: unknown }[]).map((s) => [s.Name, JSON.stringify(s.ValueFrom)]),
  );
  assert.deepEqual(Object.keys(secrets).sort(), ['HOLDFAST_TLS_CERT', 'HOLDFAST_TLS_KEY', 'HOLDFAST_TLS_PSK']);
  assert.match(secrets.HOLDFAST_TLS_CERT!, /secret:holdfast\/nbd-cert/);
  assert.match(secrets.HOLDFAST_TLS_KEY!, /secret:holdfast\/nbd-key-AbCdEf/);
  assert.match(secrets.HOLDFAST_TLS_PSK!, /parameter\/holdfast\/nbd-psk/);
  for (const name of ['HOLDFAST_TLS_CERT', 'HOLDFAST_TLS_KEY', 'HOLDFAST_TLS_PSK'])
    assert.equal(env[name], undefined, `${name} is never plain environment`);
});

test('the execution role may read exactly those secrets, and cdk-nag has nothing to say', () => {
  const policies = Object.entries(template.findResources('AWS::IAM::Policy'));
  const execution = JSON.stringify(policies.filter(([id]) => id.includes('ExecutionRole')));
  assert.match(execution, /secretsmanager:GetSecretValue/);
  assert.match(execution, /secret:holdfast\/nbd-cert/);
  assert.match(execution, /secret:holdfast\/nbd-key-AbCdEf/);
  assert.match(execution, /ssm:GetParameters/);
  assert.match(execution, /parameter\/holdfast\/nbd-psk/);
  assert.doesNotMatch(
    JSON.stringify(policies.filter(([id]) => id.includes('TaskRole'))),
    /secretsmanager|ssm:/,
    'the running gateway itself never reads them',
  );
  const report = new AwsSolutionsChecks(app).validateScope(app);
  assert.deepEqual(
    report.violations.map((v) => `${v.ruleName} at ${v.violatingResources.map((r) => r.constructPath).join(', ')}`),
    [],
  );
  assert.deepEqual(Annotations.fromStack(stack).findError('*', Match.anyValue()), []);
});

test('TLS deployment settings are checked together', () => {
  const base = { allowedCidrs: '10.0.0.0/8', volumes: 'vm1' };
  const bad = (input: Record<string, unknown>, message: RegExp): void => {
    assert.throws(
      () => parseDeployment({ ...base, ...input }),
      (e: unknown) => e instanceof ConfigError && message.test(e.message),
      JSON.stringify(input),
    );
  };
  bad({ tlsPsk: 'ssm:/p' }, /tlsPsk: needs tls=on or tls=require/);
  bad({ tls: 'require' }, /tls: TLS needs tlsCert and tlsKey, or tlsPsk/);
  bad({ tls: 'on', tlsCert: 'secretsmanager:c' }, /tlsCert: give tlsCert and tlsKey together/);
  bad({ tls: 'on', tlsPsk: '/etc/keys.psk' }, /tlsPsk: secretsmanager:NAME_OR_ARN or ssm:\/PARAMETER\/NAME/);
  bad({ tls: 'on', tlsPsk: 'ssm:/p', tlsCa: 'ssm:/ca' }, /tlsCa: client certificates are checked only with a server certificate/);
  assert.equal(parseDeployment(base).tls, 'off');
});
