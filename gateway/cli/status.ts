import type { Command } from 'commander';
import { HoldfastError } from '../../shared/errors.js';
import { formatSize, parseDuration } from '../../shared/units.js';
import { VolumesResponseSchema, type VolumeStatus } from '../admin/volume-status.js';
import { configFrom, addSettingOptions } from './options.js';

/** The admin API could not be reached or refused the request. */
export class AdminUnreachableError extends HoldfastError {}

async function fetchStatus(base: string, token: string | undefined): Promise<{ gateway: string; volumes: VolumeStatus[] }> {
  let res: Response;
  try {
    res = await fetch(`${base}/v1/volumes`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) });
  } catch (cause) {
    throw new AdminUnreachableError(`cannot reach the gateway's admin API at ${base} (is it running? see --admin)`, { cause });
  }
  if (!res.ok) throw new AdminUnreachableError(`admin API at ${base} answered ${res.status}: ${await res.text()}`);
  const parsed = VolumesResponseSchema.safeParse(await res.json().catch(() => undefined));
  if (!parsed.success) throw new AdminUnreachableError(`admin API at ${base} answered something that is not a volume list: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

function render(status: { gateway: string; volumes: VolumeStatus[] }): string {
  const header = ['VOLUME', 'STATE', 'HELD', 'HELD BYTES', 'EPISODE', 'TIMEOUT', 'JOURNAL', 'BACKLOG', 'CLIENTS', 'LAST ERROR'];
  const rows = status.volumes.map((v) => [
    v.name,
    `${v.state}${v.paused ? ' (paused)' : ''}${v.storageUnavailableSince !== null && v.state === 'normal' ? ' (storage unavailable)' : ''}`,
    String(v.held.requests),
    formatSize(v.held.bytes),
    v.episode === null ? '-' : `${(v.episode.durationMs / 1000).toFixed(1)}s`,
    v.policy.timeout,
    `${formatSize(v.journal.bytes)}/${formatSize(v.journal.limit)} ${v.journal.pressure}`,
    `${v.journal.backlogRecords} rec, ${v.journal.dirtyExtents} ext`,
    String(v.clients),
    v.lastError === null ? '-' : `${v.errorClass ?? ''}: ${v.lastError}`.slice(0, 60),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [`gateway ${status.gateway} — ${new Date().toISOString()}`, line(header), ...rows.map(line)].join('\n');
}

export function registerStatus(program: Command): void {
  const cmd = program
    .command('status')
    .description("print every volume's hang state, held requests, journal and last error (from the admin API)")
    .option('--watch [interval]', 'refresh until interrupted (default every 1s)')
    .option('--json', 'machine-readable output');
  addSettingOptions(cmd, ['admin', 'adminToken']).action(async (opts: { watch?: string | boolean; json?: boolean }, c: Command) => {
    const config = configFrom(c);
    const base = `http://${config.admin.host.includes(':') ? `[${config.admin.host}]` : config.admin.host}:${config.admin.port}`;
    const show = async () => {
      const status = await fetchStatus(base, config.adminToken);
      return opts.json === true ? JSON.stringify(status, null, 2) : render(status);
    };
    if (opts.watch === undefined) {
      process.stdout.write(`${await show()}\n`);
      return;
    }
    const interval = typeof opts.watch === 'string' ? parseDuration(opts.watch) ?? 1000 : 1000;
    for (;;) {
      let text: string;
      try {
        text = await show();
      } catch (err) {
        text = err instanceof Error ? err.message : String(err);
      }
      // Clear the screen on a terminal; append otherwise, so a log of the watch stays readable.
      process.stdout.write(process.stdout.isTTY ? `\x1b[H\x1b[2J${text}\n` : `${text}\n\n`);
      await new Promise((r) => setTimeout(r, interval));
    }
  });
}
