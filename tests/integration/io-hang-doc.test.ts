import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { startGateway } from '../helpers/gateway-process.js';
import { runTool } from '../helpers/run-tool.js';

/**
 * The example session of docs/io-hang.md, run: its `holdfast serve` line starts a real gateway (on a
 * store and journal of the test's own, with the line's flags), each curl line runs through a shell
 * against that gateway's admin API, and what it prints must be what the page shows, byte for byte.
 */

const DOC = new URL('../../docs/io-hang.md', import.meta.url);
const DOC_ADMIN = 'http://127.0.0.1:10810';

interface Step {
  readonly command: string;
  readonly output: string;
}

function session(doc: string): Step[] {
  const block = /## Example session[\s\S]*?```console\n([\s\S]*?)\n```/.exec(doc)?.[1];
  assert.ok(block !== undefined, 'no console block under "## Example session"');
  const steps: { command: string; lines: string[] }[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('$ ')) steps.push({ command: line.slice(2), lines: [] });
    else steps.at(-1)?.lines.push(line);
  }
  return steps.map((s) => ({ command: s.command, output: s.lines.length === 0 ? '' : `${s.lines.join('\n')}\n` }));
}

test("docs/io-hang.md's example session prints what the page shows", { timeout: 60_000 }, async (t) => {
  const steps = session(await readFile(DOC, 'utf8'));
  const serve = steps[0];
  assert.ok(
    serve !== undefined && /^holdfast serve( .*)? &$/.test(serve.command) && serve.output === '',
    'the session starts a gateway in the background',
  );
  const flags = serve.command
    .replace(/^holdfast serve ?/, '')
    .replace(/ ?&$/, '')
    .split(' ')
    .filter((f) => f !== '');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-doc-'));
  const gw = await startGateway({
    store: { kind: 'local', args: ['--store', path.join(dir, 'store')], env: {} },
    journalDir: path.join(dir, 'journal'),
    createVolume: 'demo=64MiB',
    args: flags,
  });
  try {
    assert.ok(steps.length > 3, 'the session shows the API at work');
    for (const step of steps.slice(1)) {
      assert.ok(
        step.command.startsWith('curl -s ') && step.command.includes(DOC_ADMIN),
        `${step.command}: the session talks to the admin API with curl`,
      );
      const run = await runTool('sh', ['-c', step.command.replaceAll(DOC_ADMIN, gw.adminUrl)]);
      assert.equal(run.code, 0, `${step.command}: ${run.stderr}`);
      t.diagnostic(`$ ${step.command}\n${run.stdout}`);
      assert.equal(run.stdout, step.output, `what \`${step.command}\` prints`);
    }
  } finally {
    await gw.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});
