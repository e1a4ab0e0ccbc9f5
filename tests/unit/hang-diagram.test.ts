import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { renderDiagram } from '../helpers/hang-diagram.js';

const DOC = new URL('../../docs/io-hang.md', import.meta.url);
const FENCE = /(## States[\s\S]*?```mermaid\n)([\s\S]*?)(\n```)/;

test('docs/io-hang.md shows the state diagram of the transition function (UPDATE_DOCS=1 rewrites it)', () => {
  const doc = readFileSync(DOC, 'utf8');
  const m = FENCE.exec(doc);
  assert.ok(m !== null, 'no mermaid block under "## States"');
  const expected = renderDiagram();
  if (process.env.UPDATE_DOCS === '1') writeFileSync(DOC, doc.replace(FENCE, `$1${expected}$3`));
  else assert.equal(m[2], expected, 'the diagram differs from what the transition function does');
  for (const state of ['normal', 'hang', 'timed-out', 'storage-unavailable', 'journal-failing', 'paused'])
    assert.match(expected, new RegExp(`"${state}"`));
});
