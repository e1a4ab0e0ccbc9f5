/** `holdfast status`'s table: aligned whatever the cells hold, coloured only inside the padding. */
import assert from 'node:assert/strict';
import { stripVTControlCharacters } from 'node:util';
import { test } from 'node:test';
import { renderStatus, type StatusDocument, type Style } from '../../gateway/cli/status-table.js';

const now = new Date('2026-11-30T10:00:00.000Z');
const plain: Style = (_h, text) => text;
const ansi: Style = (h, text) => `\x1b[${h === 'timed-out' ? 31 : h === 'hang' ? 33 : 35}m${text}\x1b[39m`;

function volume(name: string, over: Partial<StatusDocument['volumes'][number]> = {}): StatusDocument['volumes'][number] {
  return {
    name,
    state: 'normal',
    paused: false,
    held: { requests: 0, bytes: 0 },
    episode: null,
    storageUnavailableSince: null,
    journalFailing: false,
    errorClass: null,
    lastError: null,
    policy: { timeout: 120_000 },
    journal: { bytes: 4096, limit: 2 ** 30, pressure: 'normal', backlogRecords: 1, dirtyExtents: 1 },
    clients: 1,
    ...over,
  };
}

const doc: StatusDocument = {
  gateway: 'gw-1',
  volumes: [
    volume('demo', {
      paused: true,
      storageUnavailableSince: '2026-11-30T09:59:48.000Z',
      errorClass: 'transient',
      lastError: 'object store get …\nfailed:\tETIMEDOUT \x1b[31mred\x1b[0m',
    }),
    volume('a-much-longer-volume-name', { state: 'hang', held: { requests: 3, bytes: 12288 }, episode: { durationMs: 4200 } }),
    volume('db', { state: 'timed-out', policy: { timeout: 'forever' }, journalFailing: true }),
  ],
};

/** Start offsets of the header's columns, found from the header line. */
function columnStarts(header: string): number[] {
  return [...header.matchAll(/(?:^|\s{2})(\S+(?: \S+)*)/g)].map((m) => m.index + m[0].indexOf(m[1]!));
}

test('every row starts each column where the header does, paused and storage flags included', () => {
  for (const style of [plain, ansi]) {
    const lines = renderStatus(doc, { now, style }).split('\n').map(stripVTControlCharacters);
    assert.equal(lines[0], 'gateway gw-1 — 2026-11-30T10:00:00.000Z');
    const starts = columnStarts(lines[1]!);
    assert.equal(starts.length, 11);
    for (const row of lines.slice(2)) {
      for (const at of starts.slice(1)) assert.equal(row[at - 1], ' ', `column at ${at} in ${JSON.stringify(row)}`);
      for (const at of starts) assert.notEqual(row[at], ' ', `a cell starts at ${at} in ${JSON.stringify(row)}`);
    }
    assert.match(
      lines[2]!,
      /^demo +normal,paused +down 12s +0 +0 B +- +120s +4 KiB\/1 GiB normal +1 rec, 1 ext +1 +transient: object store get … failed: ETIMEDOUT red$/,
    );
    assert.match(lines[3]!, /^a-much-longer-volume-name +hang +ok +3 +12 KiB +4\.2s +120s /);
    assert.match(lines[4]!, /^db +timed-out +journal-failing +.* forever +/);
  }
});

test('colours wrap only the hang and timed-out states and a storage problem, never their padding', () => {
  const lines = renderStatus(doc, { now, style: ansi }).split('\n');
  assert.ok(lines[3]!.includes('\x1b[33mhang\x1b[39m      '), lines[3]);
  assert.ok(lines[4]!.includes('\x1b[31mtimed-out\x1b[39m'), lines[4]);
  assert.ok(lines[2]!.includes('\x1b[35mdown 12s\x1b[39m'), lines[2]);
  assert.ok(!lines[2]!.includes('\x1b[33mnormal'), 'normal is not highlighted');
  assert.ok(!lines[2]!.includes('\x1b[31mred'), 'a control sequence in an error text is not passed to the terminal');
});

test('on a narrow terminal the last column is cut so that no row wraps', () => {
  const text = renderStatus(doc, { now, style: ansi, columns: 160 });
  const widths = text
    .split('\n')
    .slice(1)
    .map((l) => Array.from(stripVTControlCharacters(l)).length);
  assert.ok(Math.max(...widths) < 160, `widths ${widths.join(', ')}\n${text}`);
  assert.match(text, / 1 {8}transient: object st…$/m);
});
