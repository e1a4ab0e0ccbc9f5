import { z } from 'zod';
import { ERROR_CLASSES, type ErrorClass } from './events.js';
import { parseDuration } from './units.js';

export type ClassAction = 'hold' | 'fail';
/** `off`: nothing is held; a number: milliseconds; `forever`: held until storage answers. */
export type HangTimeout = 'off' | 'forever' | number;

export interface HangPolicy {
  readonly timeout: HangTimeout;
  readonly classes: Readonly<Record<ErrorClass, ClassAction>>;
  /** Longest back-off between retries of a held request. */
  readonly retryMaxMs: number;
}

export const DEFAULT_CLASS_ACTIONS: Readonly<Record<ErrorClass, ClassAction>> = {
  transient: 'hold',
  io: 'hold',
  'no-space': 'hold',
  denied: 'fail',
  missing: 'fail',
  invalid: 'fail',
};

export const DEFAULT_HANG_POLICY: HangPolicy = { timeout: 120_000, classes: DEFAULT_CLASS_ACTIONS, retryMaxMs: 1000 };

export const HangTimeoutSchema = z.union([z.literal('off'), z.literal('forever'), z.number().int().positive(), z.string()]).transform((v, ctx): HangTimeout => {
  if (v === 'off' || v === 'forever' || typeof v === 'number') return v;
  const ms = parseDuration(v);
  if (ms === undefined || ms <= 0) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a hang timeout: use off, forever, or a duration like 120s` });
    return z.NEVER;
  }
  return ms;
});

const classActions = z.object(Object.fromEntries(ERROR_CLASSES.map((c) => [c, z.enum(['hold', 'fail']).optional()])) as Record<ErrorClass, z.ZodOptional<z.ZodEnum<{ hold: 'hold'; fail: 'fail' }>>>).strict();

/** Body of `PUT /v1/volumes/{name}/hang-policy`: any subset; what is left out stays as it is. */
export const HangPolicyPatchSchema = z
  .object({
    timeout: HangTimeoutSchema.optional(),
    classes: classActions.optional(),
    retryMax: z.union([z.number().int().positive(), z.string()]).optional(),
  })
  .strict();
export type HangPolicyPatch = z.infer<typeof HangPolicyPatchSchema>;

export function applyPolicyPatch(policy: HangPolicy, patch: HangPolicyPatch): HangPolicy {
  let retryMaxMs = policy.retryMaxMs;
  if (patch.retryMax !== undefined) {
    const ms = typeof patch.retryMax === 'number' ? patch.retryMax : parseDuration(patch.retryMax);
    if (ms === undefined || ms < 50) throw new RangeError(`retryMax ${JSON.stringify(patch.retryMax)} must be a duration of at least 50ms`);
    retryMaxMs = ms;
  }
  const classes = { ...policy.classes };
  for (const [k, v] of Object.entries(patch.classes ?? {})) if (v !== undefined) classes[k as ErrorClass] = v;
  return { timeout: patch.timeout ?? policy.timeout, classes, retryMaxMs };
}

/** `transient=hold,denied=fail` → a partial class table (config and CLI syntax). */
export function parseClassActions(text: string): Partial<Record<ErrorClass, ClassAction>> | string {
  const out: Partial<Record<ErrorClass, ClassAction>> = {};
  for (const part of text.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const [cls, action] = part.split('=');
    if (!ERROR_CLASSES.includes(cls as ErrorClass) || (action !== 'hold' && action !== 'fail')) {
      return `"${part}" is not CLASS=hold|fail with CLASS one of ${ERROR_CLASSES.join(', ')}`;
    }
    out[cls as ErrorClass] = action;
  }
  return out;
}

export function formatTimeout(t: HangTimeout): string {
  return typeof t === 'number' ? `${t / 1000}s` : t;
}
