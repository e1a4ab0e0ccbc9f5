import { z } from 'zod';
import { ConfigError } from '../../shared/errors.js';
import { VOLUME_NAME } from '../../shared/volume-manifest.js';

/** How a client may use an export it is allowed to open. */
export type AccessMode = 'rw' | 'ro';

/**
 * Which exports a client may open. `identity` is the PSK identity or the client certificate's
 * common name established by TLS, undefined for a client without either.
 */
export interface AccessPolicy {
  /** The client's access to `exportName`, or undefined when it may not open (nor see) it. */
  grant(identity: string | undefined, exportName: string): AccessMode | undefined;
  /** True when some exports are refused to clients without an identity (they must start TLS). */
  readonly needsIdentity: boolean;
}

/** Without an access file: every client may open every export read-write. */
export const OPEN_ACCESS: AccessPolicy = {
  grant: () => 'rw',
  needsIdentity: false,
};

const WILDCARD = '*';

const AccessFileSchema = z.record(
  z.string().min(1, 'an identity must not be empty').max(4096),
  z.record(z.string(), z.enum(['rw', 'ro'], { error: 'access must be "rw" or "ro"' })).superRefine((volumes, ctx) => {
    // Checked here rather than in the key schema, whose failures zod reports without this message.
    for (const name of Object.keys(volumes)) {
      if (name !== WILDCARD && !VOLUME_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'a volume name or "*"' });
    }
  }),
);

/**
 * Access rules from a JSON file mapping identities to volumes, `"*"` standing for every volume:
 * `{"alice": {"vm1": "rw", "base-image": "ro"}, "backup": {"*": "ro"}}`. A named volume's entry wins
 * over the identity's wildcard. Clients without an identity, and identities not listed, open nothing.
 */
export class IdentityAccess implements AccessPolicy {
  readonly needsIdentity = true;

  private constructor(private readonly rules: ReadonlyMap<string, ReadonlyMap<string, AccessMode>>) {}

  static parse(text: string, path: string): IdentityAccess {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (cause) {
      throw new ConfigError(`access file ${path} is not valid JSON: ${(cause as Error).message}`, { cause });
    }
    const parsed = AccessFileSchema.safeParse(json);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((issue) => `${issue.path.map(String).join('.') || '(top level)'}: ${issue.message}`);
      throw new ConfigError(`access file ${path} is not {"IDENTITY": {"VOLUME or *": "rw" | "ro"}}:\n  ${problems.join('\n  ')}`);
    }
    const rules = new Map<string, Map<string, AccessMode>>();
    for (const [identity, volumes] of Object.entries(parsed.data)) rules.set(identity, new Map(Object.entries(volumes)));
    return new IdentityAccess(rules);
  }

  grant(identity: string | undefined, exportName: string): AccessMode | undefined {
    if (identity === undefined) return undefined;
    const volumes = this.rules.get(identity);
    return volumes?.get(exportName) ?? volumes?.get(WILDCARD);
  }
}
