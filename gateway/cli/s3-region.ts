import { S3Client } from '@aws-sdk/client-s3';
import type { Command } from 'commander';
import { ConfigError } from '../../shared/errors.js';
import { configFrom } from './options.js';

/**
 * Refuses an S3 store whose region nothing names, before the command touches it: the AWS SDK would
 * only say "Region is missing" at the first request (and a gateway would take it for an outage).
 * Commands without store settings, stores with --s3-region or --s3-endpoint (path-style servers get
 * a default region) and regions from the AWS environment or ~/.aws/config pass.
 */
export async function checkS3Region(cmd: Command): Promise<void> {
  if (!cmd.options.some((o) => o.long === '--store')) return;
  const config = configFrom(cmd);
  if (!config.storeUrl.startsWith('s3://') || config.s3Region !== undefined || config.s3Endpoint !== undefined) return;
  // The SDK's own region chain: AWS_REGION, AWS_DEFAULT_REGION, the profile in the shared config file.
  const client = new S3Client({});
  try {
    await client.config.region();
  } catch (cause) {
    throw new ConfigError(`no AWS region for the store ${config.storeUrl}`, {
      cause,
      hint: 'Give the bucket\'s region with --s3-region REGION (or HOLDFAST_S3_REGION, AWS_REGION, or "region" in ~/.aws/config).',
    });
  } finally {
    client.destroy();
  }
}
