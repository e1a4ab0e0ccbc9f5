import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { App, Validations } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { HEALTHCHECK_COMMAND } from '../../infra/constructs/gateway-service.js';
import { HoldfastStack, PROJECT_ROOT } from '../../infra/holdfast-stack.js';
import { parseDeployment } from '../../infra/stack-config.js';
import { pino } from 'pino';
import { HangMonitor } from '../../gateway/hang/hang-monitor.js';
import { StoreError } from '../../gateway/store/object-store.js';
import { DEFAULT_HANG_POLICY } from '../../shared/hang-policy.js';
import { ConfigError } from '../../shared/errors.js';
import { LAMBDA_NODE_RUNTIME } from '../../shared/node-runtime.js';
import { HoldfastEventSchema, type HoldfastEvent } from '../../shared/events.js';
import { matchesPattern, type EventPattern } from '../helpers/event-pattern.js';
import { delivered } from '../helpers/lambda.js';

// Synthesized once for the whole file: bundling the functions and staging the image take seconds.
const outdir = mkdtempSync(join(tmpdir(), 'holdfast-cdk-'));
after(() => {
  rmSync(outdir, { recursive: true, force: true });
});
// cdk.json's context, as `npx cdk synth` gives it: its feature flags and the defaults it sets.
const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> };
const app = new App({ outdir, context: cdkJson.context });
const stack = new HoldfastStack(app, 'Holdfast', {
  deployment: parseDeployment({
    allowedCidrs: '10.20.0.0/16,192.168.7.0/24',
    volumes: 'vm1,vm2',
    hangTimeout: '90s',
    alertEmail: 'ops@example.com',
    gatewayId: 'gw-prod',
    dashboardUrl: 'https://grafana.example.com/d/holdfast?var-volume={volume}',
  }),
});
const template = Template.fromStack(stack);
const json = template.toJSON() as { Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }> };
const assembly = app.synth();

function only(type: string): { id: string; props: Record<string, unknown> } {
  const found = Object.entries(json.Resources).filter(([, r]) => r.Type === type);
  assert.equal(found.length, 1, `one ${type}`);
  return { id: found[0]![0], props: found[0]![1].Properties ?? {} };
}
const logicalId = (type: string, pathPart: string): string => {
  const hit = Object.entries(template.findResources(type)).find(([id]) => id.includes(pathPart));
  assert.ok(hit, `${type} ${pathPart}`);
  return hit[0];
};

test('extent bucket: encrypted, public access blocked, TLS only, kept when the stack goes', () => {
  template.hasResource('AWS::S3::Bucket', {
    DeletionPolicy: 'Retain',
    Properties: {
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
    },
  });
  template.hasResourceProperties('AWS::S3::BucketPolicy', {
    PolicyDocument: {
      Statement: Match.arrayWith([
        Match.objectLike({ Effect: 'Deny', Action: 's3:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
      ]),
    },
  });
});

test('journal: encrypted EFS with backups, an access point owned by the image user, kept when the stack goes', () => {
  template.hasResource('AWS::EFS::FileSystem', {
    DeletionPolicy: 'Retain',
    Properties: { Encrypted: true, BackupPolicy: { Status: 'ENABLED' } },
  });
  template.hasResourceProperties('AWS::EFS::AccessPoint', {
    PosixUser: { Uid: '10001', Gid: '10001' },
    RootDirectory: { Path: '/holdfast-journal', CreationInfo: { OwnerUid: '10001', OwnerGid: '10001', Permissions: '750' } },
  });
  const efsSg = logicalId('AWS::EC2::SecurityGroupIngress', 'JournalFileSystem');
  template.hasResourceProperties('AWS::EC2::SecurityGroupIngress', {
    FromPort: 2049,
    ToPort: 2049,
    SourceSecurityGroupId: { 'Fn::GetAtt': [Match.stringLikeRegexp('GatewayTaskSecurityGroup'), 'GroupId'] },
  });
  assert.ok(efsSg);
});

test('task definition: the Dockerfile image, the environment from the stack props, the journal mounted, logs and a health check', () => {
  const { props } = only('AWS::ECS::TaskDefinition');
  const [container] = props.ContainerDefinitions as Record<string, unknown>[];
  const env = Object.fromEntries((container!.Environment as { Name: string; Value: unknown }[]).map((e) => [e.Name, e.Value]));
  assert.deepEqual(Object.keys(env).sort(), [
    'HOLDFAST_ADMIN',
    'HOLDFAST_CACHE_DIR',
    'HOLDFAST_DISK_CACHE_SIZE',
    'HOLDFAST_EVENTS',
    'HOLDFAST_EVENTS_SPILL',
    'HOLDFAST_GATEWAY_ID',
    'HOLDFAST_HANG_TIMEOUT',
    'HOLDFAST_JOURNAL_DIR',
    'HOLDFAST_LISTEN',
    'HOLDFAST_LOG_FORMAT',
    'HOLDFAST_MEMORY_LIMIT',
    'HOLDFAST_NBD_MAX_CONNECTIONS',
    'HOLDFAST_NBD_MAX_CONNECTIONS_PER_PEER',
    'HOLDFAST_STORE',
    'HOLDFAST_VOLUMES',
  ]);
  assert.equal(env.HOLDFAST_ADMIN, '0.0.0.0:10810');
  assert.equal(env.HOLDFAST_LISTEN, '0.0.0.0:10809');
  assert.equal(env.HOLDFAST_JOURNAL_DIR, '/mnt/journal');
  assert.equal(env.HOLDFAST_HANG_TIMEOUT, '90s');
  assert.equal(env.HOLDFAST_VOLUMES, 'vm1,vm2');
  assert.equal(env.HOLDFAST_LOG_FORMAT, 'json');
  assert.equal(env.HOLDFAST_GATEWAY_ID, 'gw-prod');
  assert.equal(env.HOLDFAST_EVENTS_SPILL, 'true');
  // The disk cache on the task's ephemeral storage (default 50 GiB), with room for a file per object open.
  assert.deepEqual(props.EphemeralStorage, { SizeInGiB: 50 });
  assert.equal(env.HOLDFAST_CACHE_DIR, '/var/lib/holdfast/cache');
  assert.equal(env.HOLDFAST_DISK_CACHE_SIZE, '40GiB');
  // The task's 2 GiB, less a tenth: the caches shrink before the task would be killed for memory.
  assert.equal(env.HOLDFAST_MEMORY_LIMIT, '1843MiB');
  assert.deepEqual(container!.Ulimits, [{ Name: 'nofile', SoftLimit: 65536, HardLimit: 65536 }]);
  assert.deepEqual(env.HOLDFAST_STORE, { 'Fn::Join': ['', ['s3://', { Ref: logicalId('AWS::S3::Bucket', 'ExtentStore') }, '/holdfast/']] });
  assert.deepEqual(env.HOLDFAST_EVENTS, { 'Fn::Join': ['', ['eventbridge:', { Ref: logicalId('AWS::Events::EventBus', 'AlertingBus') }]] });
  assert.deepEqual(container!.MountPoints, [{ ContainerPath: '/mnt/journal', ReadOnly: false, SourceVolume: 'journal' }]);
  assert.deepEqual(container!.HealthCheck, {
    Command: ['CMD-SHELL', HEALTHCHECK_COMMAND],
    Interval: 15,
    Timeout: 5,
    StartPeriod: 60,
    Retries: 3,
  });
  assert.equal((container!.LogConfiguration as { LogDriver: string }).LogDriver, 'awslogs');
  assert.match(JSON.stringify(container!.Image), /container-assets/);
  assert.deepEqual(props.Volumes, [
    {
      Name: 'journal',
      EFSVolumeConfiguration: {
        FilesystemId: { Ref: logicalId('AWS::EFS::FileSystem', 'Journal') },
        TransitEncryption: 'ENABLED',
        AuthorizationConfig: { AccessPointId: { Ref: logicalId('AWS::EFS::AccessPoint', 'Journal') }, IAM: 'ENABLED' },
      },
    },
  ]);
  assert.ok(HEALTHCHECK_COMMAND.includes('/healthz'));
});

test('service: exactly one task, never two at once; behind an internal NLB with TCP 10809 and health checks on the admin port', () => {
  template.hasResourceProperties('AWS::ECS::Service', {
    DesiredCount: 1,
    LaunchType: 'FARGATE',
    DeploymentConfiguration: Match.objectLike({ MinimumHealthyPercent: 0, MaximumPercent: 100 }),
    NetworkConfiguration: { AwsvpcConfiguration: Match.objectLike({ AssignPublicIp: 'DISABLED' }) },
  });
  template.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', { Type: 'network', Scheme: 'internal' });
  template.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', { Port: 10809, Protocol: 'TCP' });
  template.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
    Port: 10809,
    Protocol: 'TCP',
    TargetType: 'ip',
    HealthCheckProtocol: 'HTTP',
    HealthCheckPort: '10810',
    HealthCheckPath: '/healthz',
  });
});

test('security groups admit NBD only from the configured networks, and the task only from its load balancer', () => {
  const sgs = template.findResources('AWS::EC2::SecurityGroup');
  const lb = Object.entries(sgs).find(([id]) => id.includes('LoadBalancerSecurityGroup'))!;
  const ingress = (lb[1].Properties as { SecurityGroupIngress: Record<string, unknown>[] }).SecurityGroupIngress;
  assert.deepEqual(
    ingress.map((r) => [r.CidrIp, r.FromPort, r.ToPort]),
    [
      ['10.20.0.0/16', 10809, 10809],
      ['192.168.7.0/24', 10809, 10809],
    ],
  );
  const taskIngress = Object.values(template.findResources('AWS::EC2::SecurityGroupIngress'))
    .map((r) => r.Properties as Record<string, unknown>)
    .filter((p) => JSON.stringify(p.GroupId).includes('GatewayTaskSecurityGroup'));
  assert.deepEqual(taskIngress.map((p) => p.FromPort).sort(), [10809, 10810]);
  for (const p of taskIngress) assert.match(JSON.stringify(p.SourceSecurityGroupId), /LoadBalancerSecurityGroup/);
  assert.doesNotMatch(
    JSON.stringify(json.Resources),
    /"CidrIp":"0\.0\.0\.0\/0","Description":"[^"]*","FromPort"/,
    'no ingress from anywhere',
  );
});

test('IAM: the task may use only its bucket prefix, put events only on its bus, and mount only its access point', () => {
  const policies = Object.entries(template.findResources('AWS::IAM::Policy')).filter(([id]) => id.includes('TaskRole'));
  assert.equal(policies.length, 1);
  const statements = (policies[0]![1].Properties as { PolicyDocument: { Statement: Record<string, unknown>[] } }).PolicyDocument.Statement;
  const bucket = logicalId('AWS::S3::Bucket', 'ExtentStore');
  const accessPointArn = {
    'Fn::Join': [
      '',
      [
        'arn:',
        { Ref: 'AWS::Partition' },
        ':elasticfilesystem:',
        { Ref: 'AWS::Region' },
        ':',
        { Ref: 'AWS::AccountId' },
        ':access-point/',
        { Ref: logicalId('AWS::EFS::AccessPoint', 'Journal') },
      ],
    ],
  };
  assert.deepEqual(statements, [
    {
      Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'],
      Effect: 'Allow',
      Resource: { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, '/holdfast/*']] },
    },
    {
      Action: 's3:ListBucket',
      Condition: { StringLike: { 's3:prefix': ['holdfast/*'] } },
      Effect: 'Allow',
      Resource: { 'Fn::GetAtt': [bucket, 'Arn'] },
    },
    {
      Action: ['elasticfilesystem:ClientMount', 'elasticfilesystem:ClientWrite'],
      Condition: { StringEquals: { 'elasticfilesystem:AccessPointArn': accessPointArn } },
      Effect: 'Allow',
      Resource: { 'Fn::GetAtt': [logicalId('AWS::EFS::FileSystem', 'Journal'), 'Arn'] },
    },
    { Action: 'events:PutEvents', Effect: 'Allow', Resource: { 'Fn::GetAtt': [logicalId('AWS::Events::EventBus', 'AlertingBus'), 'Arn'] } },
  ]);
});

test('EventBridge: a bus, and rules on Source and DetailType that invoke each function with a dead-letter queue', () => {
  template.resourceCountIs('AWS::Events::EventBus', 1);
  template.resourceCountIs('AWS::Events::Rule', 2);
  for (const [id, fn] of [
    ['AlertRule', 'HangAlert'],
    ['MetricsRule', 'HangMetrics'],
  ] as const) {
    const rule = template.findResources('AWS::Events::Rule')[logicalId('AWS::Events::Rule', id)]!.Properties as {
      EventBusName: unknown;
      Targets: Record<string, unknown>[];
      EventPattern: Record<string, unknown>;
    };
    assert.deepEqual(rule.EventBusName, { Ref: logicalId('AWS::Events::EventBus', 'AlertingBus') });
    assert.deepEqual(Object.keys(rule.EventPattern).sort(), ['detail-type', 'source']);
    assert.equal(rule.Targets.length, 1);
    assert.deepEqual(rule.Targets[0]!.Arn, { 'Fn::GetAtt': [logicalId('AWS::Lambda::Function', fn), 'Arn'] });
    assert.ok(rule.Targets[0]!.DeadLetterConfig);
  }
});

test('functions: the shared Node.js runtime line from local esbuild bundles (minified, source maps), configured for the topic, table and dashboard', () => {
  const fns = template.findResources('AWS::Lambda::Function');
  const alert = fns[logicalId('AWS::Lambda::Function', 'HangAlert')]!.Properties as Record<string, unknown>;
  const metrics = fns[logicalId('AWS::Lambda::Function', 'HangMetrics')]!.Properties as Record<string, unknown>;
  for (const p of [alert, metrics]) {
    assert.equal(p.Runtime, LAMBDA_NODE_RUNTIME);
    assert.equal(p.Handler, 'index.handler');
  }
  const env = (alert.Environment as { Variables: Record<string, unknown> }).Variables;
  assert.deepEqual(env.ALERT_TOPIC_ARN, { Ref: logicalId('AWS::SNS::Topic', 'Alerts') });
  assert.deepEqual(env.IDEMPOTENCY_TABLE, { Ref: logicalId('AWS::DynamoDB::Table', 'Idempotency') });
  assert.equal(env.ALERT_DEBOUNCE_MS, '2000', 'the default debounce of brief hangs and outages');
  assert.deepEqual((metrics.Environment as { Variables: Record<string, unknown> }).Variables.IDEMPOTENCY_TABLE, {
    Ref: logicalId('AWS::DynamoDB::Table', 'Idempotency'),
  });
  assert.equal(env.DASHBOARD_URL, 'https://grafana.example.com/d/holdfast?var-volume={volume}');
  for (const p of [alert, metrics]) {
    const key = String((p.Code as { S3Key: unknown }).S3Key).replace(/\.zip$/, '');
    const dir = join(assembly.directory, `asset.${key}`);
    assert.deepEqual(readdirSync(dir).sort(), ['index.mjs', 'index.mjs.map']);
    const code = readFileSync(join(dir, 'index.mjs'), 'utf8');
    assert.ok(code.length / code.split('\n').length > 2000, 'minified');
    assert.match(code, /sourceMappingURL=index\.mjs\.map/);
  }
  // Powertools Idempotency's default attribute names: the key `id`, the TTL `expiration`.
  template.hasResourceProperties('AWS::DynamoDB::Table', {
    KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
    TimeToLiveSpecification: { AttributeName: 'expiration', Enabled: true },
  });
  for (const fn of ['HangAlert', 'HangMetrics']) {
    const role = (
      template.findResources('AWS::Lambda::Function')[logicalId('AWS::Lambda::Function', fn)]!.Properties as {
        Role: { 'Fn::GetAtt': [string, string] };
      }
    ).Role['Fn::GetAtt'][0];
    const policies = Object.values(template.findResources('AWS::IAM::Policy')).filter((p) =>
      JSON.stringify((p.Properties as { Roles: unknown }).Roles).includes(role),
    );
    const actions = policies.flatMap((p) =>
      (p.Properties as { PolicyDocument: { Statement: { Action: string | string[] }[] } }).PolicyDocument.Statement.flatMap(
        (st) => st.Action,
      ),
    );
    for (const action of ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'])
      assert.ok(actions.includes(action), `${fn} may ${action}: ${actions.join(', ')}`);
  }
});

test('alerts arrive on an encrypted SNS topic with the e-mail subscribed; hang timeouts raise an alarm on it', () => {
  template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
  template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com' });
  template.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Namespace: 'Holdfast',
    MetricName: 'HangTimeouts',
    Dimensions: Match.arrayWith([
      { Name: 'Gateway', Value: 'gw-prod' },
      { Name: 'service', Value: 'holdfast' },
    ]),
    Statistic: 'Sum',
    Threshold: 1,
    ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    AlarmActions: [{ Ref: logicalId('AWS::SNS::Topic', 'Alerts') }],
  });
});

test('cdk-nag AwsSolutions: no finding left, and every acknowledged one says why', () => {
  const report = new AwsSolutionsChecks(app).validateScope(app);
  assert.deepEqual(
    report.violations.map((v) => `${v.ruleName} at ${v.violatingResources.map((r) => r.constructPath).join(', ')}`),
    [],
  );
  const acknowledged = stack.node
    .findAll()
    .flatMap((c) => c.node.metadata.filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY))
    .flatMap((m) => Object.entries(m.data as Record<string, unknown>));
  assert.ok(acknowledged.length >= 6, `${acknowledged.length} acknowledgments`);
  for (const [id, reason] of acknowledged) {
    const text = typeof reason === 'string' ? reason : JSON.stringify(reason);
    assert.ok(text.length > 40, `${id} needs a reason: ${text}`);
  }
  assert.deepEqual(Annotations.fromStack(stack).findError('*', Match.anyValue()), []);
});

test('cdk synth has nothing to warn about: every feature flag is configured, and no construct warns', () => {
  const manifest = JSON.parse(readFileSync(join(assembly.directory, 'manifest.json'), 'utf8')) as {
    artifacts: Record<string, { type: string; properties?: { flags?: Record<string, { userValue?: unknown }> } }>;
  };
  const report = Object.values(manifest.artifacts).find((a) => a.type === 'cdk:feature-flag-report');
  assert.ok(report?.properties?.flags !== undefined, 'aws-cdk-lib reports its feature flags');
  const unconfigured = Object.entries(report.properties.flags)
    .filter(([, f]) => !('userValue' in f))
    .map(([name]) => name);
  assert.deepEqual(unconfigured, [], 'cdk.json sets every flag (the CLI warns about the others)');
  assert.deepEqual(Annotations.fromStack(stack).findWarning('*', Match.anyValue()), []);
});

test('the template matches the committed snapshot (UPDATE_SNAPSHOTS=1 rewrites it)', () => {
  const file = new URL('./__snapshots__/infra-stack.template.json', import.meta.url);
  // Asset hashes change with every edit of the gateway or the functions; the template's shape must not.
  const normalized = `${JSON.stringify(json, null, 2).replace(/[0-9a-f]{64}/g, '<asset-hash>')}\n`;
  if (process.env.UPDATE_SNAPSHOTS === '1') writeFileSync(file, normalized);
  assert.ok(existsSync(file), 'no snapshot committed: run with UPDATE_SNAPSHOTS=1 and review it');
  assert.equal(normalized, readFileSync(file, 'utf8'));
});

test('the image asset holds only what the Dockerfile copies, and the Dockerfile runs the same health check as ECS', () => {
  const image = readdirSync(assembly.directory).find(
    (d) => d.startsWith('asset.') && existsSync(join(assembly.directory, d, 'Dockerfile')),
  )!;
  assert.deepEqual(readdirSync(join(assembly.directory, image)).sort(), [
    '.dockerignore',
    'Dockerfile',
    'functions',
    'gateway',
    'package-lock.json',
    'package.json',
    'scripts',
    'shared',
    'tsconfig.json',
  ]);
  const dockerfile = readFileSync(join(PROJECT_ROOT, 'Dockerfile'), 'utf8');
  assert.ok(dockerfile.replace(/\\\n\s*/g, '').includes(`CMD ${HEALTHCHECK_COMMAND}`), 'HEALTHCHECK matches the ECS health check');
  assert.match(dockerfile, /^USER holdfast$/m);
});

test('deployment settings are checked before anything is synthesized', () => {
  const bad = (input: Record<string, unknown>, message: RegExp) => {
    assert.throws(
      () => parseDeployment(input),
      (e: unknown) => e instanceof ConfigError && message.test(e.message),
    );
  };
  bad({ volumes: 'vm1' }, /allowedCidrs: required/);
  bad({ allowedCidrs: '0.0.0.0/0x', volumes: 'vm1' }, /allowedCidrs\.0: not an IPv4 CIDR/);
  bad({ allowedCidrs: '10.0.0.0/8', volumes: '' }, /volumes: name the volumes/);
  bad({ allowedCidrs: '10.0.0.0/8', volumes: 'vm1', hangTimeout: 'soon' }, /hangTimeout: not a hang timeout/);
  bad({ allowedCidrs: '10.0.0.0/8', volumes: 'vm1', vpcId: 'vpc-1234' }, /vpcId: with vpcId, give privateSubnetIds/);
  bad({ allowedCidrs: '10.0.0.0/8', volumes: 'vm1', createVolume: 'vm9=10G' }, /createVolume must name one of volumes/);
  const ok = parseDeployment({
    allowedCidrs: ['10.0.0.0/8'],
    volumes: 'vm1, vm2',
    vpcId: 'vpc-1234',
    privateSubnetIds: 'subnet-a,subnet-b',
    availabilityZones: 'eu-west-1a,eu-west-1b',
  });
  assert.deepEqual(ok.volumes, ['vm1', 'vm2']);
  assert.equal(ok.hangTimeout, '120s');
});

/**
 * The events a real HangMonitor raises through one outage: the store goes down under a held read,
 * the hang times out, the store comes back; the journal fills to 80 % meanwhile.
 */
async function gatewayEvents(): Promise<HoldfastEvent[]> {
  const events: HoldfastEvent[] = [];
  const state = { down: true, journalBytes: 0 };
  const refused = () =>
    new StoreError('get', 'volumes/vm1/extents/000000000001', {
      cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }),
    });
  const monitor = new HangMonitor({
    volume: 'vm1',
    gateway: 'gw-prod',
    policy: { ...DEFAULT_HANG_POLICY, timeout: 150, retryMaxMs: 50 },
    probe: async () => {
      if (state.down) throw refused();
    },
    journal: {
      held: () => ({ requests: 0, bytes: 0 }),
      failWaiters: () => undefined,
      usage: () => ({ bytes: state.journalBytes, limit: 100 }),
    },
    events: { publish: (e) => events.push(e), close: async () => undefined },
    logger: pino({ level: 'silent' }),
    probeIntervalMs: 20,
    retryInitialMs: 10,
  });
  const read = monitor.run(
    async () => {
      if (state.down) throw refused();
      return 'data';
    },
    4096,
    undefined,
  );
  await assert.rejects(read);
  state.journalBytes = 80;
  monitor.refresh();
  state.down = false;
  const deadline = Date.now() + 5000;
  while (monitor.state !== 'normal' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  monitor.close();
  return events.map((e) => HoldfastEventSchema.parse(e));
}

test('the rules match what the gateway emits: its real events, as the sink puts them, against the synthesized patterns', async () => {
  const events = await gatewayEvents();
  const edges = events.map((e) => `${e.kind}:${'set' in e ? e.set : 'level' in e ? e.level : ''}`);
  assert.deepEqual([...edges].sort(), [
    'io-hang-timeout:false',
    'io-hang-timeout:true',
    'io-hang:false',
    'io-hang:true',
    'journal-pressure:high',
    'storage-unavailable:false',
    'storage-unavailable:true',
  ]);
  const rules = template.findResources('AWS::Events::Rule');
  const pattern = (id: string) => (rules[logicalId('AWS::Events::Rule', id)]!.Properties as { EventPattern: EventPattern }).EventPattern;
  const matched = (id: string) =>
    events
      .filter((e) => matchesPattern(delivered(e), pattern(id)))
      .map((e) => `${e.kind}:${'set' in e ? e.set : 'level' in e ? e.level : ''}`);
  assert.deepEqual(matched('AlertRule').sort(), edges.filter((e) => !e.startsWith('journal-pressure')).sort());
  assert.deepEqual(matched('MetricsRule').sort(), [...edges].sort());
  const forged = { ...delivered(events[0]!), source: 'aws.ec2' };
  assert.ok(
    !matchesPattern(forged, pattern('AlertRule')) && !matchesPattern(forged, pattern('MetricsRule')),
    'another source matches no rule',
  );
});
