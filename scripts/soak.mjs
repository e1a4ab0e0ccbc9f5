#!/usr/bin/env node
// The whole suite, again and again, on a machine kept busy by another CPU-heavy job: what a flaky
// test needs to show itself. Usage: node scripts/soak.mjs [--runs 5] [--load N] [--logs DIR] [PHASE...]
// (phases as for scripts/test.mjs; all by default).
//
// The load is N processes hashing an endless stream (`sha256sum /dev/zero`: pure CPU, no disk, no
// memory to speak of), one per core by default, at normal priority, for the whole soak. Each run is
// `npm test` (with PHASEs: `npm test -- PHASE...`); its output goes to DIR/run-K.log and its result
// line and duration are printed. Exits 0 only if every run passed. Leave the tree alone while it
// runs: the integration tests refuse a bundle older than the sources.
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values, positionals: phases } = parseArgs({
  allowPositionals: true,
  options: {
    runs: { type: 'string', default: '5' },
    load: { type: 'string', default: String(availableParallelism()) },
    logs: { type: 'string', default: join('.cache', 'soak', new Date().toISOString().replace(/[:.]/g, '-')) },
  },
});
const runs = Number(values.runs);
const load = Number(values.load);
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(load) || load < 0) {
  console.error('usage: node scripts/soak.mjs [--runs 5] [--load N] [--logs DIR] [PHASE...]');
  process.exit(2);
}
mkdirSync(values.logs, { recursive: true });

const burners = Array.from({ length: load }, () => spawn('sha256sum', ['/dev/zero'], { stdio: 'ignore' }));
const stopLoad = () => {
  for (const b of burners) if (b.exitCode === null && b.signalCode === null) b.kill('SIGKILL');
};
process.on('exit', stopLoad);
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => process.exit(130));
console.log(
  `soak: ${runs} runs of ${phases.length === 0 ? 'the whole suite' : `the ${phases.join(', ')} phase(s)`} under ${load} CPU-bound sha256sum process(es); logs in ${values.logs}`,
);

function runSuite(k) {
  return new Promise((resolve) => {
    const log = createWriteStream(join(values.logs, `run-${k}.log`));
    const started = Date.now();
    // Through npm, as `npm test` runs it: with node_modules/.bin (the project's Node) first on PATH.
    const child = spawn('npm', ['test', '--', ...phases], { stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const keep = (chunk) => {
      log.write(chunk);
      tail = (tail + chunk.toString()).slice(-4096);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('close', (code) => {
      log.end();
      const result = /^tests: .*$/m.exec(tail.split('\n').reverse().join('\n'))?.[0] ?? '(no result line)';
      resolve({ code, seconds: (Date.now() - started) / 1000, result });
    });
  });
}

let passed = 0;
for (let k = 1; k <= runs; k++) {
  const r = await runSuite(k);
  if (r.code === 0) passed++;
  console.log(`soak: run ${k}: ${r.code === 0 ? 'passed' : `FAILED (exit ${r.code})`} in ${(r.seconds / 60).toFixed(1)} min — ${r.result}`);
}
console.log(`soak: ${passed} of ${runs} runs passed`);
process.exitCode = passed === runs ? 0 : 1;
