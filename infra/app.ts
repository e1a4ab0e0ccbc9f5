import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ConfigError } from '../shared/errors.js';
import { HoldfastStack } from './holdfast-stack.js';
import { DEPLOYMENT_KEYS, parseDeployment, type HoldfastDeployment } from './stack-config.js';

/**
 * `npx cdk deploy -c allowedCidrs=10.0.0.0/16 -c volumes=vm1,vm2 -c alertEmail=ops@example.com …`:
 * every deployment setting comes from CDK context (the command line or cdk.json).
 */
const app = new App();
const settings: Record<string, unknown> = {};
for (const key of DEPLOYMENT_KEYS) {
  const value: unknown = app.node.tryGetContext(key);
  if (value !== undefined) settings[key] = value;
}
let deployment: HoldfastDeployment;
try {
  deployment = parseDeployment(settings);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  // A settings mistake is the operator's to fix: say what, without a stack trace.
  console.error(`${err.message}\n(give them as -c name=value, or in cdk.json's "context"; see README, Deploy to AWS)`);
  process.exit(1);
}
const stackName: unknown = app.node.tryGetContext('stackName');
new HoldfastStack(app, typeof stackName === 'string' ? stackName : 'Holdfast', {
  deployment,
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
});
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
