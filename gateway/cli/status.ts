import { styleText } from 'node:util';
import type { Command } from 'commander';
import { HoldfastError, InvalidArgumentError } from '../../shared/errors.js';
import { parseDuration } from '../../shared/units.js';
import { configFrom, addSettingOptions } from './options.js';
import { type Highlight, type StatusDocument, StatusDocumentSchema, renderStatus } from './status-table.js';

/** The admin API could not be reached or refused the request. */
export class AdminUnreachableError extends HoldfastError {}

const DEFAULT_WATCH_MS = 1000;
/** Faster refreshes only load the gateway; slower ones are hardly watching. */
const MIN_WATCH_MS = 100;
const MAX_WATCH_MS = 3_600_000;

/** `--watch`, `--watch 5s`, `--watch 500ms`: the refresh interval, or a usage error. */
export function watchInterval(value: string | boolean): number {
  if (value === true) return DEFAULT_WATCH_MS;
  const ms = typeof value === 'string' ? parseDuration(value) : undefined;
  if (ms === undefined || ms < MIN_WATCH_MS || ms > MAX_WATCH_MS) {
    throw new InvalidArgumentError(`--watch "${String(value)}" is not an interval from 100ms to 1h like 1s, 500ms or 5 (seconds)`);
  }
  return ms;
}

async function fetchStatus(base: string, token: string | undefined): Promise<{ raw: unknown; doc: StatusDocument }> {
  let res: Response;
  try {
    res = await fetch(`${base}/v1/volumes`, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(5000),
    });
  } catch (cause) {
    throw new AdminUnreachableError(`cannot reach the gateway's admin API at ${base}`, {
      cause,
      hint: 'Is the gateway running? Give its admin address with --admin HOST:PORT (or HOLDFAST_ADMIN).',
    });
  }
  if (!res.ok)
    throw new AdminUnreachableError(
      `admin API at ${base} answered ${res.status}: ${(await res.text()).slice(0, 200)}`,
      res.status === 401 ? { hint: 'Give the token with --admin-token (or HOLDFAST_ADMIN_TOKEN).' } : undefined,
    );
  const raw: unknown = await res.json().catch(() => undefined);
  const parsed = StatusDocumentSchema.safeParse(raw);
  if (!parsed.success)
    throw new AdminUnreachableError(
      `${base}/v1/volumes did not answer a Holdfast status document: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`,
    );
  return { raw, doc: parsed.data };
}

const COLOURS: Record<Highlight, Parameters<typeof styleText>[0]> = {
  hang: ['bold', 'yellow'],
  'timed-out': ['bold', 'red'],
  attention: 'yellow',
};

/** Colours only when stdout is a terminal that has them (and NO_COLOR is unset); FORCE_COLOR forces them. */
function style(highlight: Highlight, text: string): string {
  return styleText(COLOURS[highlight], text, { stream: process.stdout });
}

export function registerStatus(program: Command): void {
  const cmd = program
    .command('status')
    .description("print every volume's hang state, held requests, journal and last error (from the admin API)")
    .option('--watch [interval]', 'refresh until interrupted, every interval (default 1s); ends quietly when its reader goes away (| head)')
    .option('--json', 'machine-readable output: the admin API document');
  addSettingOptions(cmd, ['admin', 'adminToken']).action(async (opts: { watch?: string | boolean; json?: boolean }, c: Command) => {
    const interval = opts.watch === undefined ? undefined : watchInterval(opts.watch);
    const config = configFrom(c);
    const base = `http://${config.admin.host.includes(':') ? `[${config.admin.host}]` : config.admin.host}:${config.admin.port}`;
    const show = async () => {
      const { raw, doc } = await fetchStatus(base, config.adminToken);
      return opts.json === true
        ? JSON.stringify(raw, null, 2)
        : renderStatus(doc, {
            now: new Date(),
            style,
            columns: process.stdout.isTTY && process.stdout.columns > 0 ? process.stdout.columns : undefined,
          });
    };
    if (interval === undefined) {
      process.stdout.write(`${await show()}\n`);
      return;
    }
    for (;;) {
      let text: string;
      try {
        text = await show();
      } catch (err) {
        text =
          err instanceof HoldfastError && err.hint !== undefined
            ? `${err.message}\n${err.hint}`
            : err instanceof Error
              ? err.message
              : String(err);
      }
      // Clear the screen on a terminal; append otherwise, so a log of the watch stays readable.
      process.stdout.write(process.stdout.isTTY ? `\x1b[H\x1b[2J${text}\n` : `${text}\n\n`);
      await new Promise((r) => setTimeout(r, interval));
    }
  });
}
