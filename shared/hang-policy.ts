import { z } from 'zod';
import { ERROR_CLASSES, type ErrorClass } from './events.js';
import { parseDuration } from './units.js';

/**
 * The hang policy of a volume: how long guest I/O is held through a storage failure, and which error
 * classes are held at all. Inside the gateway durations are milliseconds; at the edges (the admin
 * API, `holdfast status`) every duration is a string like `120s` or `250ms` — GET returns one, PUT
 * takes one, so a document read can be written back unchanged.
 */

export type ClassAction = 'hold' | 'fail';
/** The classes a policy decides on: all but `corrupt`, which is never held (waiting does not mend bad data). */
export type PolicyClass = Exclude<ErrorClass, 'corrupt'>;
export const POLICY_CLASSES = ERROR_CLASSES.filter((c): c is PolicyClass => c !== 'corrupt');

/** `off`: nothing is held; a number: milliseconds; `forever`: held until storage answers. */
export type HangTimeout = 'off' | 'forever' | number;

export interface HangPolicy {
  readonly timeout: HangTimeout;
  readonly classes: Readonly<Record<PolicyClass, ClassAction>>;
  /** Longest back-off between retries of a held request. */
  readonly retryMaxMs: number;
}

export const DEFAULT_CLASS_ACTIONS: Readonly<Record<PolicyClass, ClassAction>> = {
  transient: 'hold',
  io: 'hold',
  'no-space': 'hold',
  denied: 'fail',
  missing: 'fail',
  invalid: 'fail',
};

export const DEFAULT_HANG_POLICY: HangPolicy = { timeout: 120_000, classes: DEFAULT_CLASS_ACTIONS, retryMaxMs: 1000 };

/** Shortest retry back-off an operator may set: below it a held request would hammer the failing store. */
export const MIN_RETRY_MAX_MS = 50;

/** True when a failure of `errorClass` is held under `policy`. */
export function holdsClass(policy: HangPolicy, errorClass: ErrorClass): boolean {
  return errorClass !== 'corrupt' && policy.timeout !== 'off' && policy.classes[errorClass] === 'hold';
}

/**
 * `off`, `forever` or a duration, as milliseconds. Any duration a number holds exactly is accepted
 * (the engine waits out the ones longer than a Node timer in steps); beyond that the text is refused.
 */
export function parseHangTimeout(text: string): HangTimeout | { readonly error: string } {
  if (text === 'off' || text === 'forever') return text;
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0)
    return { error: `${JSON.stringify(text)} is not a hang timeout: use off, forever, or a duration like 120s` };
  if (!Number.isSafeInteger(ms))
    return { error: `${JSON.stringify(text)} is longer than a hang timeout can be; use forever to hold until storage answers` };
  return ms;
}

/** A timeout as text: `off`, `forever` or a duration; the admin API takes nothing else. */
const timeoutText = z.string().transform((v, ctx): HangTimeout => {
  const parsed = parseHangTimeout(v);
  if (typeof parsed === 'object') {
    ctx.addIssue({ code: 'custom', message: parsed.error });
    return z.NEVER;
  }
  return parsed;
});

/** The timeout in configuration: text as on the command line, or milliseconds in a JSON config file. */
export const HangTimeoutSchema = z.union([z.number().int().positive().max(Number.MAX_SAFE_INTEGER), timeoutText]);

const retryMaxText = z.string().transform((v, ctx): number => {
  const ms = parseDuration(v);
  if (ms === undefined || !Number.isSafeInteger(ms) || ms < MIN_RETRY_MAX_MS) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a duration of at least ${MIN_RETRY_MAX_MS}ms` });
    return z.NEVER;
  }
  return ms;
});

const action = z.enum(['hold', 'fail']);
const classActions = z
  .object({
    ...(Object.fromEntries(POLICY_CLASSES.map((c) => [c, action.optional()])) as Record<PolicyClass, z.ZodOptional<typeof action>>),
    corrupt: z.never({ error: 'corrupt data is never held: waiting does not mend it' }).optional(),
  })
  .strict();

/**
 * Body of `PUT /v1/volumes/{name}/hang-policy`: any part of what GET returns; what is left out
 * stays as it is. Durations are strings only, as GET shows them.
 */
export const HangPolicyPatchSchema = z
  .object({
    timeout: timeoutText.optional(),
    classes: classActions.optional(),
    retryMax: retryMaxText.optional(),
  })
  .strict();
export type HangPolicyPatch = z.infer<typeof HangPolicyPatchSchema>;

export function applyPolicyPatch(policy: HangPolicy, patch: HangPolicyPatch): HangPolicy {
  const classes = { ...policy.classes };
  for (const c of POLICY_CLASSES) {
    const given = patch.classes?.[c];
    if (given !== undefined) classes[c] = given;
  }
  return { timeout: patch.timeout ?? policy.timeout, classes, retryMaxMs: patch.retryMax ?? policy.retryMaxMs };
}

/** What `GET /v1/volumes/{name}/hang-policy` returns and the volume status shows. */
export interface HangPolicyDocument {
  readonly timeout: string;
  readonly classes: Readonly<Record<PolicyClass, ClassAction>>;
  readonly retryMax: string;
}

export const HangPolicyDocumentSchema = z
  .object({
    timeout: z.string(),
    classes: z.object(Object.fromEntries(POLICY_CLASSES.map((c) => [c, action])) as Record<PolicyClass, typeof action>),
    retryMax: z.string(),
  })
  .strict();

export function policyDocument(policy: HangPolicy): HangPolicyDocument {
  // Classes in one fixed order, so that the document reads the same whatever built the policy.
  const classes = Object.fromEntries(POLICY_CLASSES.map((c) => [c, policy.classes[c]])) as Record<PolicyClass, ClassAction>;
  return { timeout: formatTimeout(policy.timeout), classes, retryMax: formatDuration(policy.retryMaxMs) };
}

/** `transient=hold,denied=fail` → a partial class table (config and CLI syntax). */
export function parseClassActions(text: string): Partial<Record<PolicyClass, ClassAction>> | string {
  const out: Partial<Record<PolicyClass, ClassAction>> = {};
  for (const part of text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')) {
    const [cls, act] = part.split('=');
    if (cls === 'corrupt') return 'corrupt data is never held: waiting does not mend it';
    const policyClass = POLICY_CLASSES.find((c) => c === cls);
    if (policyClass === undefined || (act !== 'hold' && act !== 'fail')) {
      return `"${part}" is not CLASS=hold|fail with CLASS one of ${POLICY_CLASSES.join(', ')}`;
    }
    out[policyClass] = act;
  }
  return out;
}

/** Milliseconds as the shortest text parseDuration reads back to the same value: `120s`, `250ms`. */
export function formatDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

export function formatTimeout(t: HangTimeout): string {
  return typeof t === 'number' ? formatDuration(t) : t;
}
