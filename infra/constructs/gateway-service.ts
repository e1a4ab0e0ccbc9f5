import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import { Peer, Port, SecurityGroup, type IVpc, type SubnetSelection } from 'aws-cdk-lib/aws-ec2';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import {
  Cluster,
  ContainerImage,
  ContainerInsights,
  CpuArchitecture,
  FargatePlatformVersion,
  FargateService,
  FargateTaskDefinition,
  LogDrivers,
  OperatingSystemFamily,
  Secret as EcsSecret,
  UlimitName,
} from 'aws-cdk-lib/aws-ecs';
import { NetworkLoadBalancer, Protocol } from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import type { IEventBus } from 'aws-cdk-lib/aws-events';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Secret } from 'aws-cdk-lib/aws-secretsmanager';
import { StringParameter } from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import type { ExtentStore } from './extent-store.js';
import type { Journal } from './journal.js';

export const NBD_PORT = 10809;
export const ADMIN_PORT = 10810;
export const JOURNAL_MOUNT = '/mnt/journal';
/** The disk cache, on the task's ephemeral storage (the image's data directory, owned by its user). */
export const DISK_CACHE_DIR = '/var/lib/holdfast/cache';
/**
 * The share of the task's memory the gateway keeps its resident set under (--memory-limit): its caches
 * shrink before the task would be killed for memory; the rest is the kernel's and the agent's margin.
 */
export const MEMORY_LIMIT_SHARE = 0.9;
/** Ephemeral storage left to the image, logs and the disk cache's own free-space margin. */
export const DISK_CACHE_HEADROOM_GIB = 10;
/** RLIMIT_NOFILE of the gateway's container (Fargate's own default soft limit is 1,024). */
const OPEN_FILES = 65_536;

/** The same probe as the Dockerfile's HEALTHCHECK (ECS does not run that one): GET /healthz on the admin port. */
export const HEALTHCHECK_COMMAND = `node -e "fetch('http://127.0.0.1:'+(process.env.HOLDFAST_ADMIN||':10810').split(':').pop()+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"`;

/** NBD TLS for the task: each secret as `secretsmanager:NAME_OR_ARN` or `ssm:/PARAMETER/NAME`. */
export interface GatewayTls {
  readonly mode: 'off' | 'on' | 'require';
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly ca?: string | undefined;
  readonly psk?: string | undefined;
  /** Inline JSON, or a secret or parameter holding it. */
  readonly access?: string | undefined;
}

/**
 * Connections reach the task from the load balancer's own addresses (an IP target group over TCP
 * does not preserve client addresses), so a per-address limit would be one limit for everyone:
 * it is raised to the total.
 */
const NBD_MAX_CONNECTIONS = 1024;

export interface GatewayServiceProps {
  readonly vpc: IVpc;
  readonly subnets: SubnetSelection;
  /** Directory holding the Dockerfile (the repository root). */
  readonly imageDirectory: string;
  readonly store: ExtentStore;
  readonly journal: Journal;
  readonly bus: IEventBus;
  readonly gatewayId: string;
  readonly volumes: readonly string[];
  readonly hangTimeout: string;
  readonly createVolume?: string | undefined;
  /** Networks whose hosts may connect to NBD through the load balancer. */
  readonly allowedCidrs: readonly string[];
  readonly cpu: number;
  readonly memoryMiB: number;
  /** The task's ephemeral storage, which holds the disk cache (all of it but DISK_CACHE_HEADROOM_GIB). */
  readonly ephemeralStorageGiB: number;
  readonly tls?: GatewayTls;
}

/**
 * The gateway as one Fargate task behind an internal Network Load Balancer. One task at a time
 * serves a volume set: a volume's journal and lease admit one gateway, so a deployment stops the
 * old task before it starts the new one (minimum healthy 0 %, maximum 100 %).
 */
export class GatewayService extends Construct {
  readonly service: FargateService;
  readonly loadBalancer: NetworkLoadBalancer;
  readonly taskDefinition: FargateTaskDefinition;
  readonly logGroup: LogGroup;

  constructor(scope: Construct, id: string, props: GatewayServiceProps) {
    super(scope, id);
    const cluster = new Cluster(this, 'Cluster', { vpc: props.vpc, containerInsightsV2: ContainerInsights.ENABLED });

    this.taskDefinition = new FargateTaskDefinition(this, 'Task', {
      cpu: props.cpu,
      memoryLimitMiB: props.memoryMiB,
      ephemeralStorageGiB: props.ephemeralStorageGiB,
      runtimePlatform: { cpuArchitecture: CpuArchitecture.X86_64, operatingSystemFamily: OperatingSystemFamily.LINUX },
      volumes: [
        {
          name: 'journal',
          efsVolumeConfiguration: {
            fileSystemId: props.journal.fileSystem.fileSystemId,
            transitEncryption: 'ENABLED',
            authorizationConfig: { accessPointId: props.journal.accessPoint.accessPointId, iam: 'ENABLED' },
          },
        },
      ],
    });
    props.store.grantVolumeAccess(this.taskDefinition.taskRole);
    props.journal.grantMount(this.taskDefinition.taskRole);
    props.bus.grantPutEventsTo(this.taskDefinition.taskRole);

    this.logGroup = new LogGroup(this, 'Logs', { retention: RetentionDays.ONE_MONTH, removalPolicy: RemovalPolicy.DESTROY });
    const container = this.taskDefinition.addContainer('gateway', {
      image: ContainerImage.fromAsset(props.imageDirectory, { file: 'Dockerfile', platform: Platform.LINUX_AMD64 }),
      essential: true,
      environment: {
        HOLDFAST_LISTEN: `0.0.0.0:${NBD_PORT}`,
        HOLDFAST_ADMIN: `0.0.0.0:${ADMIN_PORT}`,
        HOLDFAST_STORE: `s3://${props.store.bucket.bucketName}/${props.store.prefix}`,
        HOLDFAST_JOURNAL_DIR: JOURNAL_MOUNT,
        HOLDFAST_EVENTS: `eventbridge:${props.bus.eventBusName}`,
        HOLDFAST_EVENTS_SPILL: 'true',
        HOLDFAST_HANG_TIMEOUT: props.hangTimeout,
        HOLDFAST_VOLUMES: props.volumes.join(','),
        HOLDFAST_GATEWAY_ID: props.gatewayId,
        HOLDFAST_LOG_FORMAT: 'json',
        HOLDFAST_NBD_MAX_CONNECTIONS: String(NBD_MAX_CONNECTIONS),
        HOLDFAST_NBD_MAX_CONNECTIONS_PER_PEER: String(NBD_MAX_CONNECTIONS),
        HOLDFAST_CACHE_DIR: DISK_CACHE_DIR,
        HOLDFAST_DISK_CACHE_SIZE: `${props.ephemeralStorageGiB - DISK_CACHE_HEADROOM_GIB}GiB`,
        HOLDFAST_MEMORY_LIMIT: `${Math.floor(props.memoryMiB * MEMORY_LIMIT_SHARE)}MiB`,
        ...(props.createVolume === undefined ? {} : { HOLDFAST_CREATE_VOLUME: props.createVolume }),
        ...(props.tls === undefined || props.tls.mode === 'off' ? {} : { HOLDFAST_TLS: props.tls.mode }),
        ...(props.tls?.access?.startsWith('{') === true ? { HOLDFAST_NBD_ACCESS: props.tls.access } : {}),
      },
      secrets: this.tlsSecrets(props.tls),
      portMappings: [{ containerPort: NBD_PORT }, { containerPort: ADMIN_PORT }],
      // The disk cache holds a file per store object open (gateway/disk-cache): thousands on a large volume.
      ulimits: [{ name: UlimitName.NOFILE, softLimit: OPEN_FILES, hardLimit: OPEN_FILES }],
      healthCheck: {
        command: ['CMD-SHELL', HEALTHCHECK_COMMAND],
        interval: Duration.seconds(15),
        timeout: Duration.seconds(5),
        startPeriod: Duration.seconds(60),
        retries: 3,
      },
      // The gateway's own --shutdown-grace is 25 s; ECS must not SIGKILL before it has synced.
      stopTimeout: Duration.seconds(40),
      logging: LogDrivers.awsLogs({ streamPrefix: 'gateway', logGroup: this.logGroup }),
    });
    container.addMountPoints({ containerPath: JOURNAL_MOUNT, sourceVolume: 'journal', readOnly: false });

    const lbSecurityGroup = new SecurityGroup(this, 'LoadBalancerSecurityGroup', {
      vpc: props.vpc,
      description: 'Holdfast NBD load balancer: NBD from the allowed networks only',
      allowAllOutbound: false,
    });
    for (const cidr of props.allowedCidrs) lbSecurityGroup.addIngressRule(Peer.ipv4(cidr), Port.tcp(NBD_PORT), `NBD from ${cidr}`);
    const taskSecurityGroup = new SecurityGroup(this, 'TaskSecurityGroup', {
      vpc: props.vpc,
      description: 'Holdfast gateway task: NBD and health checks from its load balancer only',
      allowAllOutbound: true,
    });
    taskSecurityGroup.addIngressRule(lbSecurityGroup, Port.tcp(NBD_PORT), 'NBD from the load balancer');
    taskSecurityGroup.addIngressRule(lbSecurityGroup, Port.tcp(ADMIN_PORT), 'health checks from the load balancer');
    lbSecurityGroup.addEgressRule(taskSecurityGroup, Port.tcp(NBD_PORT), 'NBD to the gateway task');
    lbSecurityGroup.addEgressRule(taskSecurityGroup, Port.tcp(ADMIN_PORT), 'health checks to the gateway task');
    props.journal.allowMountFrom(taskSecurityGroup);

    this.service = new FargateService(this, 'Service', {
      cluster,
      taskDefinition: this.taskDefinition,
      desiredCount: 1,
      minHealthyPercent: 0,
      maxHealthyPercent: 100,
      circuitBreaker: { rollback: true },
      vpcSubnets: props.subnets,
      securityGroups: [taskSecurityGroup],
      assignPublicIp: false,
      platformVersion: FargatePlatformVersion.LATEST,
      // Journal replay on start can take a while after an outage; health checks wait for it.
      healthCheckGracePeriod: Duration.minutes(5),
    });

    this.loadBalancer = new NetworkLoadBalancer(this, 'LoadBalancer', {
      vpc: props.vpc,
      vpcSubnets: props.subnets,
      internetFacing: false,
      crossZoneEnabled: true,
      securityGroups: [lbSecurityGroup],
    });
    const listener = this.loadBalancer.addListener('Nbd', { port: NBD_PORT, protocol: Protocol.TCP });
    listener.addTargets('Gateway', {
      port: NBD_PORT,
      protocol: Protocol.TCP,
      targets: [this.service.loadBalancerTarget({ containerName: 'gateway', containerPort: NBD_PORT })],
      // Long-lived NBD connections of a stopping task are cut when it exits anyway; do not wait 300 s.
      deregistrationDelay: Duration.seconds(30),
      healthCheck: {
        protocol: Protocol.HTTP,
        port: String(ADMIN_PORT),
        path: '/healthz',
        interval: Duration.seconds(10),
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 2,
      },
    });

    Validations.of(this.loadBalancer).acknowledge({
      id: 'AwsSolutions-ELB2',
      reason:
        'NLB access logs are written only for TLS listeners; NBD is a plain TCP listener, so there is nothing to log. VPC flow logs cover the connections.',
    });
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'The execution role needs ecr:GetAuthorizationToken to pull the image, an action that has no resource to scope it to.',
    });
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason:
        'The environment holds configuration only (addresses, bucket, bus, volume names, timeouts, the NBD access rules); TLS keys come as ECS secrets from Secrets Manager or SSM, AWS credentials from the task role.',
    });
  }

  /**
   * TLS keys and certificates as ECS secrets: the task receives their content in the environment
   * variables the gateway reads (it takes PEM, psktool lines and JSON as content as well as paths).
   * ECS grants the execution role read access to each one.
   */
  private tlsSecrets(tls: GatewayTls | undefined): Record<string, EcsSecret> {
    if (tls === undefined || tls.mode === 'off') return {};
    const sources: Array<[string, string | undefined]> = [
      ['HOLDFAST_TLS_CERT', tls.cert],
      ['HOLDFAST_TLS_KEY', tls.key],
      ['HOLDFAST_TLS_CA', tls.ca],
      ['HOLDFAST_TLS_PSK', tls.psk],
      ['HOLDFAST_NBD_ACCESS', tls.access?.startsWith('{') === true ? undefined : tls.access],
    ];
    const secrets: Record<string, EcsSecret> = {};
    for (const [variable, source] of sources) {
      if (source === undefined) continue;
      const id = `TlsSource${variable}`;
      if (source.startsWith('ssm:')) {
        secrets[variable] = EcsSecret.fromSsmParameter(
          StringParameter.fromSecureStringParameterAttributes(this, id, { parameterName: source.slice('ssm:'.length) }),
        );
      } else {
        const nameOrArn = source.slice('secretsmanager:'.length);
        const secret = nameOrArn.startsWith('arn:')
          ? Secret.fromSecretCompleteArn(this, id, nameOrArn)
          : Secret.fromSecretNameV2(this, id, nameOrArn);
        secrets[variable] = EcsSecret.fromSecretsManager(secret);
      }
    }
    return secrets;
  }
}
