import type { HoldfastEvent } from '../../shared/events.js';
import { formatBytes, formatDuration } from '../common/format.js';

/** The episodes a person is alerted about: a set edge and a clear edge each. */
export type AlertEvent = Extract<HoldfastEvent, { set: boolean }>;

/** One-off incidents a person is alerted about: no episode to clear. */
export type IncidentEvent = Extract<HoldfastEvent, { kind: 'volume-deposed' | 'data-corrupt' }>;

export interface AlertMessage {
  /** SNS subjects must be ASCII, one line, under 100 characters. */
  readonly subject: string;
  readonly body: string;
}

const WHAT: Record<AlertEvent['kind'], { title: string; raised: string; cleared: string; action: string }> = {
  'io-hang': {
    title: 'I/O HANG',
    raised:
      'is HOLDING guest I/O: the storage it needs stopped answering. The VM sees a slow disk, not errors, until storage answers or the hang timeout runs out.',
    cleared: 'is no longer holding guest I/O: every held request completed.',
    action:
      'Check the S3 bucket and the network path from the gateway task to it. When the hang timeout runs out, held requests fail with EIO. Pause, resume or release through the admin API (docs/io-hang.md).',
  },
  'io-hang-timeout': {
    title: 'HANG TIMEOUT - guest I/O FAILING',
    raised:
      'hit its hang timeout: held requests were FAILED with EIO, and new requests that need the failing storage fail at once. The guest filesystem may remount read-only.',
    cleared: 'answers again after a hang timeout: requests are served normally.',
    action: 'Storage is still failing. Fix it first; then check the guest (dmesg, filesystem state) — it saw I/O errors.',
  },
  'storage-unavailable': {
    title: 'STORAGE UNAVAILABLE',
    raised: 'cannot reach its object store. Writes still land in the journal; reads of uncached data will hang if this lasts.',
    cleared: 'reaches its object store again.',
    action: 'Check S3 (service health, bucket policy, the task role, VPC endpoints / NAT). The journal absorbs writes until it fills.',
  },
};

function asciiLine(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').replace(/\s+/g, ' ');
}

function dashboardLink(template: string | undefined, event: HoldfastEvent): string | undefined {
  if (template === undefined || template === '') return undefined;
  return template.replaceAll('{volume}', encodeURIComponent(event.volume)).replaceAll('{gateway}', encodeURIComponent(event.gateway));
}

/**
 * A message for the person paged at 3 a.m.: what is wrong in the subject, then which volume and
 * gateway, since when, how much guest I/O is waiting, the last storage error and where to look.
 * A clear event says it is over and how long it lasted.
 */
export function alertMessage(event: AlertEvent, dashboardUrl?: string): AlertMessage {
  const what = WHAT[event.kind];
  const at = new Date(event.time);
  const lines: string[] = [];
  let subject: string;
  if (event.set) {
    subject = `[Holdfast] ${what.title}: volume ${event.volume} on ${event.gateway}`;
    if (event.kind === 'io-hang') subject += ` (${event.held.requests} held)`;
    lines.push(`Volume "${event.volume}" on gateway "${event.gateway}" ${what.raised}`, '');
    lines.push(`Since:        ${at.toISOString()}`);
  } else {
    subject = `[Holdfast] RESOLVED ${what.title}: volume ${event.volume} after ${formatDuration(event.durationMs)}`;
    lines.push(`Volume "${event.volume}" on gateway "${event.gateway}" ${what.cleared}`, '');
    lines.push(
      `Lasted:       ${formatDuration(event.durationMs)} (from ${new Date(at.getTime() - event.durationMs).toISOString()} to ${at.toISOString()})`,
    );
  }
  lines.push(`Held now:     ${event.held.requests} request${event.held.requests === 1 ? '' : 's'} (${formatBytes(event.held.bytes)})`);
  if (event.errorClass !== null) lines.push(`Error class:  ${event.errorClass}`);
  if (event.lastError !== null) lines.push(`Last error:   ${event.lastError}`);
  lines.push(`Episode:      ${event.episode}`);
  const link = dashboardLink(dashboardUrl, event);
  if (link !== undefined) lines.push(`Dashboard:    ${link}`);
  if (event.set) lines.push('', `What to do: ${what.action}`);
  return { subject: asciiLine(subject).slice(0, 99), body: lines.join('\n') };
}

const INCIDENTS: Record<IncidentEvent['kind'], { title: string; what: (e: IncidentEvent) => string; action: string }> = {
  'volume-deposed': {
    title: 'VOLUME TAKEN OVER',
    what: (e) =>
      `was taken over by another gateway: this one stopped serving it and disconnected its clients (${e.kind === 'volume-deposed' ? `epoch ${e.epoch}: ${e.reason}` : ''}).`,
    action:
      'Check which gateway serves the volume now (holdfast volume inspect) and that exactly one should; clients reconnect to the new owner.',
  },
  'data-corrupt': {
    title: 'DATA CORRUPT',
    what: (e) =>
      `read stored data that failed its checksum; the request failed with EIO (${e.kind === 'data-corrupt' ? (e.lastError ?? '') : ''}).`,
    action: 'Do not retry blindly: the object named is damaged. Restore the volume from a snapshot or a backup, and check the bucket.',
  },
};

/** The page for a one-off incident: what happened, to which volume, when, and what to do. */
export function incidentMessage(event: IncidentEvent, dashboardUrl?: string): AlertMessage {
  const it = INCIDENTS[event.kind];
  const lines = [
    `Volume "${event.volume}" on gateway "${event.gateway}" ${it.what(event)}`,
    '',
    `At:           ${new Date(event.time).toISOString()}`,
  ];
  if (event.errorClass !== null) lines.push(`Error class:  ${event.errorClass}`);
  if (event.lastError !== null) lines.push(`Last error:   ${event.lastError}`);
  const link = dashboardLink(dashboardUrl, event);
  if (link !== undefined) lines.push(`Dashboard:    ${link}`);
  lines.push('', `What to do: ${it.action}`);
  return { subject: asciiLine(`[Holdfast] ${it.title}: volume ${event.volume} on ${event.gateway}`).slice(0, 99), body: lines.join('\n') };
}
