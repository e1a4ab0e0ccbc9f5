/**
 * Every place that names a Node.js release line names the one of shared/node-runtime.ts. The Lambda
 * runtime is checked on the synthesized template (infra-stack.test.ts).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ESBUILD_NODE_TARGET, NODE_MAJOR } from '../../shared/node-runtime.js';

const root = new URL('../../', import.meta.url);
const read = (file: string): string => readFileSync(new URL(file, root), 'utf8');
const major = (version: string): number => Number(/^v?(\d+)\./.exec(version)?.[1]);

interface PackageJson {
  engines: { node: string };
  devDependencies: Record<string, string>;
}

test('npm test runs on the Node line of the project (the registry node package, not the system Node)', () => {
  assert.equal(
    major(process.version),
    NODE_MAJOR,
    `tests run on Node ${process.version}; run them through npm (npm test), which puts node_modules/.bin first`,
  );
});

test('package.json: engines, the node package and @types/node name the same line', () => {
  const pkg = JSON.parse(read('package.json')) as PackageJson;
  assert.equal(pkg.engines.node, `>=${NODE_MAJOR}`);
  assert.match(pkg.devDependencies.node!, new RegExp(`^\\^${NODE_MAJOR}\\.`));
  assert.match(pkg.devDependencies['@types/node']!, new RegExp(`^\\^${NODE_MAJOR}\\.`));
  const installed = JSON.parse(read('node_modules/node/package.json')) as { version: string };
  assert.equal(major(installed.version), NODE_MAJOR, 'the installed node package (npm ci)');
});

test('the container image builds and runs on the same line', () => {
  const froms = [...read('Dockerfile').matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
  assert.ok(froms.length >= 2, 'a build stage and a run stage');
  for (const image of froms) assert.equal(image, `node:${NODE_MAJOR}-slim`);
});

test('the build targets the same line for the gateway and every function bundle', () => {
  const build = read('scripts/build.mjs');
  assert.match(build, /import \{ ESBUILD_NODE_TARGET \} from '\.\.\/shared\/node-runtime\.ts'/);
  const targets = [...build.matchAll(/\btarget: ([^,\n]+)/g)].map((m) => m[1]);
  assert.deepEqual(targets, ['ESBUILD_NODE_TARGET', 'ESBUILD_NODE_TARGET'], 'the gateway and the functions loop');
  assert.equal(ESBUILD_NODE_TARGET, `node${NODE_MAJOR}`);
});

test('the README names no other Node line', () => {
  const readme = read('README.md');
  const mentions = [...readme.matchAll(/\b[Nn]ode(?:\.js)?[ :@](\d+)\b|\bnodejs(\d+)\.x\b/g)].map((m) => Number(m[1] ?? m[2]));
  assert.ok(mentions.length >= 2, 'the README says which Node it needs');
  assert.deepEqual([...new Set(mentions)], [NODE_MAJOR]);
});
