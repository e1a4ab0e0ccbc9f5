/**
 * EventBridge event-pattern matching, as documented for rules ("Amazon EventBridge event
 * patterns"): no maintained npm library does it offline, so the infra tests use this one. It covers
 * exact values, prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists and $or;
 * an unknown operator throws rather than silently not matching.
 */
export type EventPattern = { readonly [key: string]: unknown };

export class UnsupportedPatternError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedPatternError';
  }
}

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function matchesPattern(event: unknown, pattern: EventPattern): boolean {
  return matchObject(event, pattern);
}

function matchObject(value: unknown, pattern: EventPattern): boolean {
  for (const [key, sub] of Object.entries(pattern)) {
    if (key === '$or') {
      if (!Array.isArray(sub) || !sub.some((alt) => isObject(alt) && matchObject(value, alt))) return false;
      continue;
    }
    const field = isObject(value) ? value[key] : undefined;
    if (Array.isArray(sub)) {
      if (!matchField(field, sub)) return false;
    } else if (isObject(sub)) {
      if (!isObject(field) || !matchObject(field, sub)) return false;
    } else {
      throw new UnsupportedPatternError(`pattern value for ${key} must be an array or an object, not ${JSON.stringify(sub)}`);
    }
  }
  return true;
}

/** A leaf: the field (or any element of it, when it is an array) must match one of the rules. */
function matchField(field: unknown, rules: readonly unknown[]): boolean {
  const exists = field !== undefined;
  const values = Array.isArray(field) ? (field as Json[]) : exists ? [field as Json] : [];
  return rules.some((rule) => {
    if (isObject(rule) && 'exists' in rule) return rule.exists === exists;
    return values.some((v) => matchValue(v, rule));
  });
}

function matchValue(value: Json, rule: unknown): boolean {
  if (!isObject(rule)) {
    if (typeof rule === 'number' && typeof value === 'number') return rule === value;
    return rule === value;
  }
  const entries = Object.entries(rule);
  if (entries.length !== 1) throw new UnsupportedPatternError(`a matching rule has one operator: ${JSON.stringify(rule)}`);
  const [op, arg] = entries[0]!;
  switch (op) {
    case 'prefix':
      return (
        typeof value === 'string' &&
        (isObject(arg)
          ? typeof arg['equals-ignore-case'] === 'string' && value.toLowerCase().startsWith(arg['equals-ignore-case'].toLowerCase())
          : typeof arg === 'string' && value.startsWith(arg))
      );
    case 'suffix':
      return (
        typeof value === 'string' &&
        (isObject(arg)
          ? typeof arg['equals-ignore-case'] === 'string' && value.toLowerCase().endsWith(arg['equals-ignore-case'].toLowerCase())
          : typeof arg === 'string' && value.endsWith(arg))
      );
    case 'equals-ignore-case':
      return typeof value === 'string' && typeof arg === 'string' && value.toLowerCase() === arg.toLowerCase();
    case 'wildcard':
      return typeof value === 'string' && typeof arg === 'string' && wildcard(arg).test(value);
    case 'anything-but':
      return !anythingButExcludes(value, arg);
    case 'numeric':
      return typeof value === 'number' && Array.isArray(arg) && numeric(value, arg);
    default:
      throw new UnsupportedPatternError(`unsupported operator ${op}`);
  }
}

function anythingButExcludes(value: Json, arg: unknown): boolean {
  if (Array.isArray(arg)) return arg.some((a) => a === value);
  if (isObject(arg)) return matchValue(value, arg);
  return arg === value;
}

function wildcard(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .split('*')
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
    's',
  );
}

function numeric(value: number, conditions: readonly unknown[]): boolean {
  for (let i = 0; i < conditions.length; i += 2) {
    const op = conditions[i];
    const bound = conditions[i + 1];
    if (typeof bound !== 'number') throw new UnsupportedPatternError(`numeric bound ${JSON.stringify(bound)} is not a number`);
    const ok =
      op === '='
        ? value === bound
        : op === '<'
          ? value < bound
          : op === '<='
            ? value <= bound
            : op === '>'
              ? value > bound
              : op === '>='
                ? value >= bound
                : undefined;
    if (ok === undefined) throw new UnsupportedPatternError(`numeric operator ${String(op)}`);
    if (!ok) return false;
  }
  return true;
}
