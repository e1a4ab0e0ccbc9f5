import { z } from 'zod';
import { HoldfastEventSchema, type HoldfastEvent } from '../../shared/events.js';
import type { LogLine } from './gateway-process.js';

/**
 * A client for the gateway's admin HTTP API as operators use it: plain HTTP and JSON, each answer
 * checked against the fields the tests rely on, so that a changed response shape fails loudly.
 */

const HeldSchema = z.object({ requests: z.number().int().nonnegative(), bytes: z.number().int().nonnegative() });

export const VolumeStatusSchema = z.object({
  name: z.string(),
  size: z.number().int().positive(),
  clients: z.number().int().nonnegative(),
  state: z.enum(['normal', 'hang', 'timed-out']),
  paused: z.boolean(),
  held: HeldSchema,
  episode: z
    .object({ id: z.string(), startedAt: z.iso.datetime(), durationMs: z.number(), deadline: z.iso.datetime().nullable() })
    .nullable(),
  timedOutSince: z.string().nullable(),
  storageUnavailableSince: z.string().nullable(),
  errorClass: z.string().nullable(),
  lastError: z.string().nullable(),
  journal: z.object({
    bytes: z.number(),
    limit: z.number(),
    pressure: z.enum(['normal', 'high', 'full']),
    backlogRecords: z.number(),
    dirtyExtents: z.number(),
  }),
});
export type VolumeStatus = z.infer<typeof VolumeStatusSchema>;

export class AdminApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

async function call(adminUrl: string, method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`${adminUrl}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? null : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new AdminApiError(res.status, `${method} ${path}: HTTP ${res.status}: ${text}`);
  return JSON.parse(text) as unknown;
}

export async function volumeStatus(adminUrl: string, volume: string): Promise<VolumeStatus> {
  return VolumeStatusSchema.parse(await call(adminUrl, 'GET', `/v1/volumes/${encodeURIComponent(volume)}`));
}

export async function setHangPolicy(adminUrl: string, volume: string, patch: Record<string, unknown>): Promise<void> {
  await call(adminUrl, 'PUT', `/v1/volumes/${encodeURIComponent(volume)}/hang-policy`, patch);
}

/** pause and release answer how many held requests they failed; resume answers nothing of note. */
export async function volumeAction(adminUrl: string, volume: string, action: 'pause' | 'resume' | 'release'): Promise<number> {
  const body = z
    .object({ failed: z.number().int().nonnegative().optional() })
    .parse(await call(adminUrl, 'POST', `/v1/volumes/${encodeURIComponent(volume)}/${action}`));
  return body.failed ?? 0;
}

/** The samples of one Prometheus text exposition. */
export class MetricSamples {
  private readonly samples: { name: string; labels: Record<string, string>; value: number }[] = [];

  constructor(text: string) {
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (m === null) continue;
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
      this.samples.push({ name: m[1]!, labels, value: Number(m[3]) });
    }
  }

  /** The one sample named `name` whose labels include `labels`; a missing sample is an error, not 0. */
  value(name: string, labels: Record<string, string> = {}): number {
    const found = this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    if (found.length !== 1) throw new Error(`expected one sample ${name}${JSON.stringify(labels)}, found ${found.length}`);
    return found[0]!.value;
  }
}

export async function scrapeMetrics(adminUrl: string): Promise<MetricSamples> {
  const res = await fetch(`${adminUrl}/metrics`);
  const text = await res.text();
  if (!res.ok) throw new AdminApiError(res.status, `GET /metrics: HTTP ${res.status}: ${text}`);
  return new MetricSamples(text);
}

/** The events a gateway logged (its default sink), each checked against the shared schema. */
export function loggedEvents(logs: readonly LogLine[]): HoldfastEvent[] {
  const out: HoldfastEvent[] = [];
  for (const line of logs) {
    if (line.event === undefined) continue;
    out.push(HoldfastEventSchema.parse(line.event));
  }
  return out;
}
