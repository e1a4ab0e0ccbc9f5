import { join } from 'node:path';
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import { Alarm, ComparisonOperator, Metric, TreatMissingData } from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import { AttributeType, BillingMode, Table } from 'aws-cdk-lib/aws-dynamodb';
import { EventBus, Rule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import { ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Key } from 'aws-cdk-lib/aws-kms';
import { Architecture, Runtime } from 'aws-cdk-lib/aws-lambda';
import { LogLevel, NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { ALERT_KINDS, DETAIL_TYPES, EVENT_SOURCE } from '../../shared/eventbridge.js';
import { ConfigError } from '../../shared/errors.js';
import { ESBUILD_NODE_TARGET, LAMBDA_NODE_RUNTIME } from '../../shared/node-runtime.js';

/** The CDK's own Runtime object for shared/node-runtime.ts's line, so that CDK knows its family and bundling defaults. */
function lambdaRuntime(): Runtime {
  const runtime = Runtime.ALL.find((r) => r.name === LAMBDA_NODE_RUNTIME);
  if (runtime === undefined)
    throw new ConfigError(`aws-cdk-lib does not know the Lambda runtime ${LAMBDA_NODE_RUNTIME}; update aws-cdk-lib`);
  return runtime;
}

/** Must match functions/hang-metrics (namespace, dimension names and the powertools service name). */
export const METRICS_NAMESPACE = 'Holdfast';
const METRICS_SERVICE = 'holdfast';

export interface AlertingProps {
  /** The repository root: functions/ and package-lock.json are found from it. */
  readonly projectRoot: string;
  readonly gatewayId: string;
  readonly alertEmail?: string | undefined;
  /** Put in every alert; `{volume}` and `{gateway}` are replaced. */
  readonly dashboardUrl?: string | undefined;
  /** A hang or storage outage shorter than this pages nobody. */
  readonly alertDebounceMs: number;
}

/**
 * From the gateway's events to people: the bus the gateway puts them on, a rule per function
 * matching Source and DetailType, the two functions, the SNS topic alerts arrive on, and alarms for
 * what must page even if a function is broken (hang timeouts, undeliverable alerts).
 */
export class Alerting extends Construct {
  readonly bus: EventBus;
  readonly topic: Topic;
  readonly alertRule: Rule;
  readonly metricsRule: Rule;
  readonly alertFunction: NodejsFunction;
  readonly metricsFunction: NodejsFunction;
  readonly timeoutAlarm: Alarm;

  constructor(scope: Construct, id: string, props: AlertingProps) {
    super(scope, id);
    this.bus = new EventBus(this, 'Bus');

    // A customer-managed key: CloudWatch alarms cannot publish to a topic under the AWS-managed SNS key.
    const topicKey = new Key(this, 'TopicKey', {
      enableKeyRotation: true,
      description: 'Holdfast alert topic',
      removalPolicy: RemovalPolicy.DESTROY,
    });
    topicKey.grant(new ServicePrincipal('cloudwatch.amazonaws.com'), 'kms:Decrypt', 'kms:GenerateDataKey*');
    this.topic = new Topic(this, 'Alerts', { displayName: 'Holdfast alerts', masterKey: topicKey, enforceSSL: true });
    if (props.alertEmail !== undefined) this.topic.addSubscription(new EmailSubscription(props.alertEmail));

    // Powertools Idempotency's records (key `id`, TTL `expiration`) and the alert function's debounced episodes.
    const idempotency = new Table(this, 'Idempotency', {
      partitionKey: { name: 'id', type: AttributeType.STRING },
      billingMode: BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: 'expiration',
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      // Only de-duplication state: losing it can at worst repeat an alert or a count.
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.alertFunction = this.fn('HangAlert', 'hang-alert', props.projectRoot, {
      ALERT_TOPIC_ARN: this.topic.topicArn,
      IDEMPOTENCY_TABLE: idempotency.tableName,
      ALERT_DEBOUNCE_MS: String(props.alertDebounceMs),
      ...(props.dashboardUrl === undefined ? {} : { DASHBOARD_URL: props.dashboardUrl }),
    });
    this.topic.grantPublish(this.alertFunction);
    this.metricsFunction = this.fn('HangMetrics', 'hang-metrics', props.projectRoot, { IDEMPOTENCY_TABLE: idempotency.tableName });
    for (const fn of [this.alertFunction, this.metricsFunction])
      idempotency.grant(fn, 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem');

    // Events that could not be handed to a function after EventBridge's retries land here, not nowhere.
    const deadLetters = new Queue(this, 'UndeliveredEvents', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(deadLetters).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself the dead-letter queue of the EventBridge rule targets.',
    });
    const target = (fn: NodejsFunction) =>
      new LambdaFunction(fn, { deadLetterQueue: deadLetters, retryAttempts: 8, maxEventAge: Duration.hours(2) });

    this.alertRule = new Rule(this, 'AlertRule', {
      eventBus: this.bus,
      description: 'The events that page (ALERT_ROUTES) to the alert function',
      eventPattern: { source: [EVENT_SOURCE], detailType: ALERT_KINDS.map((k) => DETAIL_TYPES[k]) },
      targets: [target(this.alertFunction)],
    });
    this.metricsRule = new Rule(this, 'MetricsRule', {
      eventBus: this.bus,
      description: 'Every Holdfast event to the metrics function',
      eventPattern: { source: [EVENT_SOURCE], detailType: Object.values(DETAIL_TYPES) },
      targets: [target(this.metricsFunction)],
    });

    const page = new SnsAction(this.topic);
    this.timeoutAlarm = new Alarm(this, 'HangTimeoutAlarm', {
      alarmDescription: `A Holdfast volume on gateway ${props.gatewayId} hit its hang timeout: guest I/O is failing with EIO.`,
      metric: new Metric({
        namespace: METRICS_NAMESPACE,
        metricName: 'HangTimeouts',
        dimensionsMap: { service: METRICS_SERVICE, Gateway: props.gatewayId },
        statistic: 'Sum',
        period: Duration.minutes(1),
      }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    this.timeoutAlarm.addAlarmAction(page);
    const undelivered = new Alarm(this, 'UndeliveredEventsAlarm', {
      alarmDescription:
        'Holdfast events could not be delivered to the alert or metrics function (see the dead-letter queue): alerts may be missing.',
      metric: deadLetters.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    undelivered.addAlarmAction(page);
    const failing = new Alarm(this, 'AlertFunctionErrorsAlarm', {
      alarmDescription: 'The Holdfast alert function fails (SNS or DynamoDB errors): alerts may be late or missing.',
      metric: this.alertFunction.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    failing.addAlarmAction(page);
  }

  /**
   * A function bundled by esbuild on this machine (never in Docker, so synth works offline), the
   * same way `npm run build` bundles it: minified ESM with a source map, the AWS SDK inside.
   */
  private fn(id: string, name: string, projectRoot: string, environment: Record<string, string>): NodejsFunction {
    const fn = new NodejsFunction(this, id, {
      entry: join(projectRoot, 'functions', name, 'index.ts'),
      handler: 'handler',
      projectRoot,
      depsLockFilePath: join(projectRoot, 'package-lock.json'),
      runtime: lambdaRuntime(),
      architecture: Architecture.ARM_64,
      memorySize: 256,
      timeout: Duration.seconds(30),
      environment: { NODE_OPTIONS: '--enable-source-maps', POWERTOOLS_LOG_LEVEL: 'INFO', ...environment },
      logGroup: new LogGroup(this, `${id}Logs`, { retention: RetentionDays.ONE_MONTH, removalPolicy: RemovalPolicy.DESTROY }),
      bundling: {
        forceDockerBundling: false,
        // esbuild's size summary on every synth is noise; its warnings and errors still show.
        logLevel: LogLevel.WARNING,
        minify: true,
        sourceMap: true,
        sourcesContent: false,
        format: OutputFormat.ESM,
        target: ESBUILD_NODE_TARGET,
        mainFields: ['module', 'main'],
        externalModules: [],
        banner:
          "import { createRequire as __holdfastCreateRequire } from 'node:module'; const require = __holdfastCreateRequire(import.meta.url);",
      },
    });
    Validations.of(fn).acknowledge({
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
      reason: 'AWSLambdaBasicExecutionRole only lets the function write its own CloudWatch logs.',
    });
    Validations.of(fn).acknowledge({
      id: 'AwsSolutions-IAM5[Action::kms:GenerateDataKey*]',
      reason:
        'kms:GenerateDataKey* on the alert topic key is what publishing to an encrypted topic needs (granted by topic.grantPublish, on that one key).',
    });
    return fn;
  }
}
