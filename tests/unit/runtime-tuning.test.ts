import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { GATEWAY_NODE_FLAGS } from '../../shared/runtime-tuning.js';

const root = new URL('../../', import.meta.url);

test('the container image starts the gateway with the tuned Node flags', () => {
  const dockerfile = readFileSync(new URL('Dockerfile', root), 'utf8');
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile);
  assert.ok(entrypoint !== null, 'the Dockerfile has an exec-form ENTRYPOINT');
  const argv = JSON.parse(entrypoint[1]!) as string[];
  for (const flag of GATEWAY_NODE_FLAGS) assert.ok(argv.includes(flag), `ENTRYPOINT ${entrypoint[1]} lacks ${flag}`);
});

test('npm start runs the gateway with the same flags', () => {
  const start = (JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { scripts: Record<string, string> }).scripts.start!;
  const words = start.split(/\s+/);
  for (const flag of GATEWAY_NODE_FLAGS) assert.ok(words.includes(flag), `npm start (${start}) lacks ${flag}`);
});
