import { elementAt } from '../../shared/checked.js';
import { stripVTControlCharacters } from 'node:util';
import { z } from 'zod';
import { ERROR_CLASSES, JOURNAL_PRESSURE_LEVELS } from '../../shared/events.js';
import { formatSize } from '../../shared/units.js';

/**
 * What `holdfast status` reads from `GET /v1/volumes`: the fields it prints, checked at the edge
 * (a gateway of another version, or something else on the admin port, is reported, not rendered as
 * "undefined"). `--json` prints the document as the gateway sent it.
 */
const VolumeRowSchema = z.object({
  name: z.string(),
  state: z.enum(['normal', 'hang', 'timed-out']),
  paused: z.boolean(),
  held: z.object({ requests: z.number(), bytes: z.number() }),
  episode: z.object({ durationMs: z.number() }).nullable(),
  storageUnavailableSince: z.string().nullable(),
  journalFailing: z.boolean(),
  errorClass: z.enum(ERROR_CLASSES).nullable(),
  lastError: z.string().nullable(),
  policy: z.object({ timeout: z.union([z.number(), z.string()]) }),
  journal: z.object({
    bytes: z.number(),
    limit: z.number(),
    pressure: z.enum(JOURNAL_PRESSURE_LEVELS),
    backlogRecords: z.number(),
    dirtyExtents: z.number(),
  }),
  clients: z.number(),
});

const DiskCacheSchema = z.object({
  dir: z.string(),
  limit: z.number(),
  effectiveLimit: z.number(),
  bytes: z.number(),
  objects: z.number(),
  hits: z.number(),
  misses: z.number(),
  corrupt: z.number(),
});

export const StatusDocumentSchema = z.object({
  gateway: z.string(),
  volumes: z.array(VolumeRowSchema),
  diskCache: DiskCacheSchema.nullable().optional(),
});
export type StatusDocument = z.infer<typeof StatusDocumentSchema>;
type VolumeRow = StatusDocument['volumes'][number];

/** How a cell is shown on a terminal; `style` returns the text unchanged elsewhere. */
export type Highlight = 'hang' | 'timed-out' | 'attention';
export type Style = (highlight: Highlight, text: string) => string;

export interface RenderOptions {
  readonly now: Date;
  readonly style: Style;
  /** Terminal width: the last column is cut to fit, so that no row wraps. */
  readonly columns?: number | undefined;
}

const HEADER = [
  'VOLUME',
  'STATE',
  'STORAGE',
  'HELD',
  'HELD BYTES',
  'EPISODE',
  'TIMEOUT',
  'JOURNAL',
  'BACKLOG',
  'CLIENTS',
  'LAST ERROR',
] as const;
const MIN_LAST_COLUMN = 20;

/** `hang`, `timed-out` or `normal`, with `,paused` when an operator paused the volume: one word, no spaces. */
function stateCell(v: VolumeRow): string {
  return v.paused ? `${v.state},paused` : v.state;
}

function storageCell(v: VolumeRow, now: Date): string {
  if (v.journalFailing) return 'journal-failing';
  if (v.storageUnavailableSince === null) return 'ok';
  const seconds = Math.max(0, (now.getTime() - Date.parse(v.storageUnavailableSince)) / 1000);
  return `down ${seconds.toFixed(seconds < 10 ? 1 : 0)}s`;
}

function timeoutCell(timeout: number | string): string {
  return typeof timeout === 'number' ? `${timeout / 1000}s` : timeout;
}

/** Error texts come from storage clients: one line, no terminal control sequences. */
function oneLine(text: string): string {
  return stripVTControlCharacters(text).replace(/\s+/g, ' ').trim();
}

function cells(v: VolumeRow, now: Date): string[] {
  return [
    v.name,
    stateCell(v),
    storageCell(v, now),
    String(v.held.requests),
    formatSize(v.held.bytes),
    v.episode === null ? '-' : `${(v.episode.durationMs / 1000).toFixed(1)}s`,
    timeoutCell(v.policy.timeout),
    `${formatSize(v.journal.bytes)}/${formatSize(v.journal.limit)} ${v.journal.pressure}`,
    `${v.journal.backlogRecords} rec, ${v.journal.dirtyExtents} ext`,
    String(v.clients),
    v.lastError === null ? '-' : oneLine(`${v.errorClass ?? 'error'}: ${v.lastError}`),
  ];
}

function highlightOf(v: VolumeRow, column: number): Highlight | undefined {
  if (column === 1 && v.state !== 'normal') return v.state;
  if (column === 2 && (v.storageUnavailableSince !== null || v.journalFailing)) return 'attention';
  return undefined;
}

/**
 * The status table: columns padded to their widest cell before any colour is added (escape
 * sequences take no room on screen), the last column cut to the terminal width.
 */
export function renderStatus(doc: StatusDocument, opts: RenderOptions): string {
  const rows = doc.volumes.map((v) => cells(v, opts.now));
  const widths = HEADER.map((h, i) => Math.max(h.length, ...rows.map((r) => Array.from(elementAt(r, i)).length)));
  const last = HEADER.length - 1;
  const lead = widths.slice(0, last).reduce((sum, w) => sum + w + 2, 0);
  const room = opts.columns === undefined ? Infinity : Math.max(MIN_LAST_COLUMN, opts.columns - lead - 1);
  const line = (row: readonly string[], v?: VolumeRow): string =>
    row
      .map((text, i) => {
        if (i === last)
          return Array.from(text).length > room
            ? `${Array.from(text)
                .slice(0, room - 1)
                .join('')}…`
            : text;
        const pad = ' '.repeat(elementAt(widths, i) - Array.from(text).length);
        const highlight = v === undefined ? undefined : highlightOf(v, i);
        return `${highlight === undefined ? text : opts.style(highlight, text)}${pad}`;
      })
      .join('  ')
      .trimEnd();
  const table = [`gateway ${doc.gateway} — ${opts.now.toISOString()}`, line(HEADER), ...rows.map((row, i) => line(row, doc.volumes[i]))];
  if (doc.diskCache !== undefined && doc.diskCache !== null) table.push(diskCacheLine(doc.diskCache));
  return table.join('\n');
}

/** The disk cache tier under the table: how full, and how much of what missed RAM it answered. */
function diskCacheLine(c: z.infer<typeof DiskCacheSchema>): string {
  const reads = c.hits + c.misses;
  const bound =
    c.effectiveLimit < c.limit
      ? `${formatSize(c.effectiveLimit)} (its disk has room for no more of the ${formatSize(c.limit)} limit)`
      : formatSize(c.limit);
  return [
    `disk cache ${oneLine(c.dir)}: ${formatSize(c.bytes)} of ${bound}, ${c.objects} objects`,
    reads === 0 ? 'no reads yet' : `${((100 * c.hits) / reads).toFixed(1)}% of ${reads} reads answered`,
    `${c.corrupt} dropped as damaged`,
  ].join(', ');
}
