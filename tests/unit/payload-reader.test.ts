import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { JournalCorruptError } from '../../shared/errors.js';
import { Journal, type JournalEntry } from '../../gateway/journal/journal.js';
import { type PayloadPiece, readPayloads } from '../../gateway/journal/payload-reader.js';
import { RecordKind } from '../../gateway/journal/record.js';

const logger = pino({ level: 'silent' });
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hf-payloads-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A journal of small 1 MiB segments holding records of the given sizes, each filled with its own byte pattern. */
async function journalWith(sizes: readonly number[]): Promise<{ journal: Journal; entries: JournalEntry[] }> {
  const { journal } = await Journal.open({
    dir,
    segmentBytes: 1024 * 1024,
    limitBytes: 256 * 1024 * 1024,
    maxPayload: 32 * 1024 * 1024,
    logger,
    retryInitialMs: 1,
    retryMaxMs: 2,
  });
  const entries: JournalEntry[] = [];
  for (const [i, size] of sizes.entries()) {
    const data = Buffer.alloc(size);
    for (let b = 0; b < size; b++) data[b] = (i * 31 + b * 7) & 0xff;
    const room = journal.reserve(size);
    if (room) await room;
    const entry = journal.append(RecordKind.Write, i * 65536, size, data);
    entries.push(entry);
    // One group commit per record, so that the segments roll over as they fill.
    await journal.waitDurable(entry.seq);
  }
  return { journal, entries };
}

test('pieces read in spans equal the same pieces read one record at a time, across segments, gaps and large records', async () => {
  // Sizes from 512 B to 1.5 MiB: gaps of more than 64 KiB between pieces, spans cut at 1 MiB, records alone over it.
  const sizes = Array.from({ length: 300 }, (_, i) => (i % 37 === 0 ? 1_500_000 : 512 + ((i * 7919) % 40_000)));
  const { journal, entries } = await journalWith(sizes);
  assert.ok((await readdir(dir)).filter((n) => n.endsWith('.seg')).length > 3, 'the records span several segments');
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.tuple(fc.nat(entries.length - 1), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true })),
        {
          minLength: 1,
          maxLength: 200,
        },
      ),
      async (picks) => {
        const pieces: PayloadPiece[] = [];
        let into = 0;
        for (const [index, a, b] of picks) {
          const entry = entries[index] as JournalEntry;
          const from = Math.floor(a * (entry.length - 1));
          const length = 1 + Math.floor(b * (entry.length - from - 1));
          pieces.push({ entry, from, length, into });
          into += length;
        }
        const expected = Buffer.alloc(into);
        for (const p of pieces) await journal.readPayload(p.entry, p.from, p.length, expected, p.into);
        const got = Buffer.alloc(into);
        await readPayloads(pieces, got);
        assert.ok(got.equals(expected));
      },
    ),
    { numRuns: 60 },
  );
  await journal.close();
});

test('a segment cut short under a span is reported as corrupt, not read as zeros', async () => {
  const { journal, entries } = await journalWith([4096, 4096, 4096, 4096]);
  const seg = (await readdir(dir)).find((n) => n.endsWith('.seg'));
  assert.ok(seg !== undefined);
  const last = entries[3] as JournalEntry;
  await truncate(join(dir, seg), last.payloadPosition + 100);
  const pieces = entries.map((entry, i) => ({ entry, from: 0, length: entry.length, into: i * 4096 }));
  await assert.rejects(readPayloads(pieces, Buffer.alloc(4 * 4096)), JournalCorruptError);
  await journal.close();
});
