import { defined } from '../shared/checked.js';
import { fileURLToPath } from 'node:url';
import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import {
  FlowLogDestination,
  FlowLogTrafficType,
  GatewayVpcEndpointAwsService,
  SubnetType,
  Vpc,
  type IVpc,
  type SubnetSelection,
} from 'aws-cdk-lib/aws-ec2';
import type { Construct } from 'constructs';
import { Alerting } from './constructs/alerting.js';
import { ExtentStore } from './constructs/extent-store.js';
import { GatewayService, NBD_PORT } from './constructs/gateway-service.js';
import { Journal } from './constructs/journal.js';
import type { HoldfastDeployment } from './stack-config.js';

/** The repository root: the Dockerfile, functions/ and package-lock.json live there. */
export const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface HoldfastStackProps extends StackProps {
  readonly deployment: HoldfastDeployment;
  /** Where the Dockerfile is; default: the repository root. */
  readonly projectRoot?: string;
}

/**
 * One Holdfast gateway deployment: the extent bucket, the journal on EFS, the gateway service
 * behind an internal NLB, and the events → rules → functions → SNS path that tells people about
 * hangs.
 */
export class HoldfastStack extends Stack {
  readonly store: ExtentStore;
  readonly journal: Journal;
  readonly gateway: GatewayService;
  readonly alerting: Alerting;

  constructor(scope: Construct, id: string, props: HoldfastStackProps) {
    super(scope, id, props);
    const d = props.deployment;
    const projectRoot = props.projectRoot ?? PROJECT_ROOT;
    const gatewayId = d.gatewayId ?? this.stackName;
    const vpc = this.network(d);
    const subnets: SubnetSelection =
      d.vpcId === undefined ? { subnetType: SubnetType.PRIVATE_WITH_EGRESS } : { subnets: vpc.privateSubnets };

    this.store = new ExtentStore(this, 'ExtentStore', { prefix: d.storePrefix });
    this.journal = new Journal(this, 'Journal', { vpc, subnets });
    this.alerting = new Alerting(this, 'Alerting', {
      projectRoot,
      gatewayId,
      alertEmail: d.alertEmail,
      dashboardUrl: d.dashboardUrl,
      alertDebounceMs: d.alertDebounce,
    });
    this.gateway = new GatewayService(this, 'Gateway', {
      vpc,
      subnets,
      imageDirectory: projectRoot,
      store: this.store,
      journal: this.journal,
      bus: this.alerting.bus,
      gatewayId,
      volumes: d.volumes,
      hangTimeout: d.hangTimeout,
      createVolume: d.createVolume,
      allowedCidrs: d.allowedCidrs,
      cpu: d.cpu,
      memoryMiB: d.memoryMiB,
      ephemeralStorageGiB: d.ephemeralStorageGiB,
      tls: { mode: d.tls, cert: d.tlsCert, key: d.tlsKey, ca: d.tlsCa, psk: d.tlsPsk, access: d.nbdAccess },
    });

    new CfnOutput(this, 'NbdEndpoint', {
      description: 'NBD address for VMs: nbd://HOST:10809/VOLUME',
      value: `${this.gateway.loadBalancer.loadBalancerDnsName}:${NBD_PORT}`,
    });
    new CfnOutput(this, 'AlertTopicArn', { description: 'SNS topic the alerts arrive on', value: this.alerting.topic.topicArn });
    new CfnOutput(this, 'EventBusName', {
      description: 'EventBridge bus the gateway puts its events on',
      value: this.alerting.bus.eventBusName,
    });
    new CfnOutput(this, 'ExtentBucket', { description: 'S3 bucket holding the volumes', value: this.store.bucket.bucketName });
  }

  /**
   * The operator's VPC, imported from ids alone (no lookup, so synth stays offline), or a VPC of its
   * own with flow logs and an S3 gateway endpoint, so extent traffic does not pay for NAT.
   */
  private network(d: HoldfastDeployment): IVpc {
    if (d.vpcId !== undefined) {
      return Vpc.fromVpcAttributes(this, 'Vpc', {
        vpcId: d.vpcId,
        // The config schema refuses a vpcId without these.
        availabilityZones: defined(d.availabilityZones, 'availabilityZones'),
        privateSubnetIds: defined(d.privateSubnetIds, 'privateSubnetIds'),
      });
    }
    const vpc = new Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 1,
      subnetConfiguration: [
        { name: 'public', subnetType: SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'private', subnetType: SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
      ],
      gatewayEndpoints: { S3: { service: GatewayVpcEndpointAwsService.S3 } },
    });
    vpc.addFlowLog('FlowLogs', { destination: FlowLogDestination.toCloudWatchLogs(), trafficType: FlowLogTrafficType.REJECT });
    return vpc;
  }
}
