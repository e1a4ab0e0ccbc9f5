/**
 * `npm run bench:sustained`: the sustained-writes workload of `npm run bench` (sustained.ts) alone,
 * with its size, length and journal limit open to change. It reports; it asserts nothing.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parseDuration } from '../shared/units.js';
import { parseSize } from './options.js';
import { sleep } from './proc.js';
import { targetsTable } from './report.js';
import { plotSustained, runSustainedWrites, sustainedSection, sustainedTargets } from './sustained.js';
import { SUSTAINED_TOOLS, ensureAllocator, ensureTools } from './tools.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const USAGE =
  'npm run bench:sustained -- [--size 16G] [--runtime 300s] [--journal-limit 256MiB] [--cache-size 256MiB] [--index-memory SIZE] [--delta-budget SIZE] [--cpu-prof DIR] [--out DIR] [--name NAME]\n';

const log = (line: string): void => void process.stderr.write(`[sustained-writes] ${line}\n`);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '16G' },
      runtime: { type: 'string', default: '300s' },
      'journal-limit': { type: 'string', default: '256MiB' },
      'cache-size': { type: 'string', default: '256MiB' },
      // The gateway's default unless given: smaller starts compaction sooner, to measure it in a short run.
      'index-memory': { type: 'string' },
      'delta-budget': { type: 'string' },
      // A CPU profile of the gateway (node --cpu-prof), written into DIR when it stops.
      'cpu-prof': { type: 'string' },
      out: { type: 'string', default: path.join(REPO, 'bench', 'results') },
      name: { type: 'string', default: 'sustained-writes' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const runtime = parseDuration(values.runtime);
  if (runtime === undefined) throw new Error(`--runtime: "${values.runtime}" is not a duration (300s)`);
  ensureTools(log, 'rgw', SUSTAINED_TOOLS);
  ensureAllocator(log);
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'holdfast-sustained-'));
  try {
    const r = await runSustainedWrites({
      s3Server: 'rgw',
      size: parseSize(values.size),
      runtime: runtime / 1000,
      journalLimit: parseSize(values['journal-limit']),
      cacheSize: parseSize(values['cache-size']),
      ...(values['index-memory'] === undefined ? {} : { indexMemory: parseSize(values['index-memory']) }),
      ...(values['delta-budget'] === undefined ? {} : { deltaBudget: parseSize(values['delta-budget']) }),
      ...(values['cpu-prof'] === undefined ? {} : { cpuProfileDir: path.resolve(values['cpu-prof']) }),
      workDir,
      onDisk: true,
      log,
    });
    const md = [...sustainedSection(r), targetsTable(sustainedTargets(r)), ''].join('\n');
    await mkdir(values.out, { recursive: true });
    await writeFile(path.join(values.out, `${values.name}.json`), `${JSON.stringify(r, null, 2)}\n`);
    await writeFile(path.join(values.out, `${values.name}.md`), md);
    await writeFile(path.join(values.out, `${values.name}.png`), plotSustained(r));
    process.stdout.write(md);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

await main();
await sleep(0);
