import { elementAt } from '../shared/checked.js';
import { z } from 'zod';
import { splitList } from '../shared/config.js';
import { DEFAULT_ALERT_DEBOUNCE_MS, MAX_ALERT_DEBOUNCE_MS } from '../shared/eventbridge.js';
import { parseDuration } from '../shared/units.js';
import { ConfigError } from '../shared/errors.js';
import { HangTimeoutSchema } from '../shared/hang-policy.js';
import { VOLUME_NAME } from '../shared/volume-manifest.js';

const list = z.union([z.array(z.string()), z.string().transform(splitList)], {
  error: (issue) => (issue.input === undefined ? 'required (a comma-separated list)' : 'not a comma-separated list'),
});
const cidr = z.string().regex(/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/, 'not an IPv4 CIDR like 10.0.0.0/16');
/** Where a TLS secret comes from: a Secrets Manager secret (name or ARN) or an SSM SecureString parameter. */
const secretSource = z.string().regex(/^(secretsmanager:\S+|ssm:\/\S+)$/, 'secretsmanager:NAME_OR_ARN or ssm:/PARAMETER/NAME');

/**
 * What an operator chooses for a Holdfast deployment. Given as CDK context (`-c name=value`, lists
 * comma-separated, or in cdk.json) or as props in code; validated with the gateway's own rules so a
 * bad value fails `cdk synth`, not the running task.
 */
export const HoldfastDeploymentSchema = z
  .object({
    /** Networks whose hosts may connect to NBD through the load balancer. */
    allowedCidrs: list.pipe(z.array(cidr).min(1, 'name at least one network that may connect to NBD')),
    /** The volume set the task serves (HOLDFAST_VOLUMES); one task per volume set. */
    volumes: list.pipe(
      z
        .array(z.string().regex(VOLUME_NAME, 'volume names are letters, digits, . _ - (max 63)'))
        .min(1, 'name the volumes this gateway serves'),
    ),
    hangTimeout: z
      .string()
      .default('120s')
      .refine((v) => HangTimeoutSchema.safeParse(v).success, 'not a hang timeout: off, forever or a duration like 120s'),
    /** A hang or storage outage shorter than this pages nobody (the alert function waits this long). */
    alertDebounce: z
      .string()
      .default(`${DEFAULT_ALERT_DEBOUNCE_MS}ms`)
      .transform((v, ctx) => {
        const ms = parseDuration(v);
        if (ms === undefined || ms > MAX_ALERT_DEBOUNCE_MS) {
          ctx.addIssue({ code: 'custom', message: `not a duration from 0 to ${MAX_ALERT_DEBOUNCE_MS / 1000}s like 2s or 500ms` });
          return z.NEVER;
        }
        return ms;
      }),
    alertEmail: z.email().optional(),
    /** An existing VPC; without one the stack creates a VPC of its own. */
    vpcId: z.string().startsWith('vpc-').optional(),
    privateSubnetIds: list.pipe(z.array(z.string().startsWith('subnet-'))).optional(),
    availabilityZones: list.optional(),
    /** Names the gateway in events, metrics and alarms; default: the stack name. */
    gatewayId: z.string().min(1).optional(),
    storePrefix: z
      .string()
      .regex(/^([A-Za-z0-9._-]+\/)+$/, 'a key prefix like holdfast/ (ending in /)')
      .default('holdfast/'),
    /** Volume created on first start (NAME=SIZE), one of `volumes`. */
    createVolume: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}=\d+[KMGT]?i?B?$/, 'NAME=SIZE like vm1=20G')
      .optional(),
    dashboardUrl: z.url().optional(),
    cpu: z.coerce.number().int().default(1024),
    memoryMiB: z.coerce.number().int().default(2048),
    /** The task's ephemeral storage (Fargate: 21-200 GiB), the disk cache's home: all of it but DISK_CACHE_HEADROOM_GIB. */
    ephemeralStorageGiB: z.coerce.number().int().min(21, 'Fargate gives 21 to 200 GiB').max(200, 'Fargate gives 21 to 200 GiB').default(50),
    /** NBD STARTTLS (HOLDFAST_TLS): off, on, or require — see docs/securing-nbd.md. */
    tls: z.enum(['off', 'on', 'require']).default('off'),
    /** Server certificate chain (PEM) and its key, for X.509. */
    tlsCert: secretSource.optional(),
    tlsKey: secretSource.optional(),
    /** CA (PEM) client certificates must be signed by. */
    tlsCa: secretSource.optional(),
    /** TLS-PSK keys, psktool format. */
    tlsPsk: secretSource.optional(),
    /** Which volumes each TLS identity may open: JSON given inline, or a secret / parameter holding it. */
    nbdAccess: z
      .union([secretSource, z.string().startsWith('{', 'inline JSON, secretsmanager:NAME_OR_ARN or ssm:/PARAMETER/NAME')])
      .optional(),
  })
  .superRefine((d, ctx) => {
    if (d.tls === 'off') {
      for (const key of ['tlsCert', 'tlsKey', 'tlsCa', 'tlsPsk', 'nbdAccess'] as const) {
        if (d[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'needs tls=on or tls=require' });
      }
      return;
    }
    if ((d.tlsCert === undefined) !== (d.tlsKey === undefined))
      ctx.addIssue({ code: 'custom', path: ['tlsCert'], message: 'give tlsCert and tlsKey together' });
    if (d.tlsCert === undefined && d.tlsPsk === undefined)
      ctx.addIssue({ code: 'custom', path: ['tls'], message: 'TLS needs tlsCert and tlsKey, or tlsPsk' });
    if (d.tlsCa !== undefined && d.tlsCert === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['tlsCa'],
        message: 'client certificates are checked only with a server certificate (tlsCert, tlsKey)',
      });
  })
  .refine(
    (d) =>
      d.vpcId === undefined ||
      (d.privateSubnetIds !== undefined &&
        d.availabilityZones !== undefined &&
        d.privateSubnetIds.length === d.availabilityZones.length &&
        d.privateSubnetIds.length > 0),
    {
      error: 'with vpcId, give privateSubnetIds and availabilityZones too (as many of each)',
      path: ['vpcId'],
    },
  )
  .refine((d) => d.createVolume === undefined || d.volumes.includes(elementAt(d.createVolume.split('='), 0)), {
    error: 'createVolume must name one of volumes',
    path: ['createVolume'],
  });

export type HoldfastDeploymentInput = z.input<typeof HoldfastDeploymentSchema>;
export type HoldfastDeployment = z.output<typeof HoldfastDeploymentSchema>;

export const DEPLOYMENT_KEYS = Object.keys(HoldfastDeploymentSchema.shape) as (keyof HoldfastDeploymentInput)[];

export function parseDeployment(input: Record<string, unknown>): HoldfastDeployment {
  const parsed = HoldfastDeploymentSchema.safeParse(input);
  if (!parsed.success)
    throw new ConfigError(
      `invalid Holdfast deployment settings:\n  ${parsed.error.issues.map((i) => `${i.path.join('.') || '(settings)'}: ${i.message}`).join('\n  ')}`,
    );
  return parsed.data;
}
