import { RemovalPolicy } from 'aws-cdk-lib';
import type { IConnectable, IVpc, SubnetSelection } from 'aws-cdk-lib/aws-ec2';
import { AccessPoint, FileSystem, PerformanceMode, ThroughputMode } from 'aws-cdk-lib/aws-efs';
import { PolicyStatement, type IGrantable } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

/** The uid and gid the gateway image runs as (see the Dockerfile); the access point writes as them. */
export const GATEWAY_UID = '10001';

export interface JournalProps {
  readonly vpc: IVpc;
  readonly subnets: SubnetSelection;
}

/**
 * The write journal on EFS: every acknowledged write is in it until it is in S3, so it must outlive
 * the task (a replacement task replays it), be encrypted, and be backed up.
 */
export class Journal extends Construct {
  readonly fileSystem: FileSystem;
  readonly accessPoint: AccessPoint;

  constructor(scope: Construct, id: string, props: JournalProps) {
    super(scope, id);
    this.fileSystem = new FileSystem(this, 'FileSystem', {
      vpc: props.vpc,
      vpcSubnets: props.subnets,
      encrypted: true,
      enableAutomaticBackups: true,
      performanceMode: PerformanceMode.GENERAL_PURPOSE,
      // Journal traffic comes in bursts (group commits, then segment retirement); elastic follows them.
      throughputMode: ThroughputMode.ELASTIC,
      // Holds acknowledged writes not yet uploaded: never deleted with the stack.
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.accessPoint = this.fileSystem.addAccessPoint('AccessPoint', {
      path: '/holdfast-journal',
      posixUser: { uid: GATEWAY_UID, gid: GATEWAY_UID },
      createAcl: { ownerUid: GATEWAY_UID, ownerGid: GATEWAY_UID, permissions: '750' },
    });
  }

  allowMountFrom(peer: IConnectable): void {
    this.fileSystem.connections.allowDefaultPortFrom(peer, 'NFS from the gateway task');
  }

  /** Mount and write through the journal's access point only (IAM-authorized mounts). */
  grantMount(grantee: IGrantable): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['elasticfilesystem:ClientMount', 'elasticfilesystem:ClientWrite'],
        resources: [this.fileSystem.fileSystemArn],
        conditions: { StringEquals: { 'elasticfilesystem:AccessPointArn': this.accessPoint.accessPointArn } },
      }),
    );
  }
}
