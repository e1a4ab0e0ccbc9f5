import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { GATEWAY_NODE_FLAGS, JEMALLOC_CONF, JEMALLOC_LIBRARY, gatewayAllocatorEnv } from '../../shared/runtime-tuning.js';

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

test("the container image preloads Debian's jemalloc", () => {
  const dockerfile = readFileSync(new URL('Dockerfile', root), 'utf8');
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  assert.match(runtime, /apt-get install -y --no-install-recommends libjemalloc2/);
  const link = /ln -s "\/usr\/lib\/\$\(uname -m\)-linux-gnu\/libjemalloc\.so\.2" (\S+)/.exec(runtime);
  assert.ok(link !== null, 'the runtime stage links the library to a fixed path');
  assert.match(runtime, new RegExp(`LD_PRELOAD=${link[1]!.replace(/\./g, '\\.')}\\b`));
  assert.equal(gatewayAllocatorEnv().LD_PRELOAD, JEMALLOC_LIBRARY);
  assert.match(runtime, new RegExp(`MALLOC_CONF=${JEMALLOC_CONF}( |$)`, 'm'), 'the image sets the same jemalloc settings as the benchmark');
  assert.equal(gatewayAllocatorEnv().MALLOC_CONF, JEMALLOC_CONF);
});
