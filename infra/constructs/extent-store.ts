import { RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import { PolicyStatement, type IRole } from 'aws-cdk-lib/aws-iam';
import { BlockPublicAccess, Bucket, BucketEncryption, CfnBucket, ObjectOwnership } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export interface ExtentStoreProps {
  /** Key prefix the gateway keeps its volumes under, ending in '/'. */
  readonly prefix: string;
}

/** The S3 bucket that holds the volumes' extents: private, encrypted, TLS only, kept on stack deletion. */
export class ExtentStore extends Construct {
  readonly bucket: Bucket;
  readonly prefix: string;

  constructor(scope: Construct, id: string, props: ExtentStoreProps) {
    super(scope, id);
    this.prefix = props.prefix;
    this.bucket = new Bucket(this, 'Bucket', {
      encryption: BucketEncryption.S3_MANAGED,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      // Volumes live here: deleting the stack must not delete the disks.
      removalPolicy: RemovalPolicy.RETAIN,
    });
    Validations.of(this.bucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'Server access logs would record every extent GET and PUT of every volume (thousands per second under load) for no operational use; enable CloudTrail S3 data events on the prefix where an audit trail is required.',
    });
  }

  /**
   * Read, write and delete of the objects under the prefix, and listing only that prefix: the
   * gateway needs nothing else of the bucket.
   */
  grantVolumeAccess(role: IRole): void {
    role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'],
        resources: [this.bucket.arnForObjects(`${this.prefix}*`)],
      }),
    );
    role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [this.bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [`${this.prefix}*`] } },
      }),
    );
    const bucketId = Stack.of(this).getLogicalId(this.bucket.node.defaultChild as CfnBucket);
    Validations.of(role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::<${bucketId}.Arn>/${this.prefix}*]`,
      reason:
        'Extent objects are created at run time under the volume prefix, so object access is granted on prefix/* — the prefix only, not the bucket.',
    });
  }
}
