import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';
// Node 24 loads this TypeScript module itself (type stripping): one definition for the build and the CDK app.
import { ESBUILD_NODE_TARGET } from '../shared/node-runtime.ts';

/** Packages the gateway bundle loads at run time instead of containing them. */
const GATEWAY_EXTERNALS = ['@node-rs/crc32', 'pino', 'pino-pretty'];

/** The Lambda functions: each is bundled alone from functions/NAME/index.ts. */
const FUNCTIONS = ['hang-alert', 'hang-metrics'];

/** Bundled CommonJS dependencies (the AWS SDK, commander) still call require(). */
const requireShim =
  "import { createRequire as __holdfastCreateRequire } from 'node:module'; const require = __holdfastCreateRequire(import.meta.url);";

/**
 * Bundles the gateway into one ESM file. Native and dynamically-loaded packages stay external:
 * @node-rs/crc32 picks its prebuilt binary at run time, and pino-pretty/pino load helpers by path.
 */
await build({
  entryPoints: ['gateway/main.ts'],
  outfile: 'dist/holdfast.js',
  bundle: true,
  platform: 'node',
  target: ESBUILD_NODE_TARGET,
  format: 'esm',
  sourcemap: true,
  external: GATEWAY_EXTERNALS,
  banner: { js: requireShim },
  logLevel: 'warning',
});

/**
 * The externals pinned to the versions in the lockfile: the container image installs exactly
 * these beside the bundle (see the Dockerfile) and nothing else.
 */
const lock = JSON.parse(readFileSync('package-lock.json', 'utf8'));
const runtimeDependencies = Object.fromEntries(
  GATEWAY_EXTERNALS.map((name) => {
    const version = lock.packages?.[`node_modules/${name}`]?.version;
    if (version === undefined) throw new Error(`build: ${name} is not in package-lock.json; run npm install`);
    return [name, version];
  }),
);
writeFileSync(
  'dist/runtime-package.json',
  `${JSON.stringify({ name: 'holdfast-gateway', private: true, type: 'module', dependencies: runtimeDependencies }, null, 2)}\n`,
);

/**
 * Each function in its own minified bundle with everything inside, the AWS SDK too, so that what
 * runs in Lambda is exactly what the tests ran against, not the runtime's SDK of the day. The CDK
 * stack bundles the same entry points the same way (NodejsFunction).
 */
for (const name of FUNCTIONS) {
  mkdirSync(`dist/functions/${name}`, { recursive: true });
  await build({
    entryPoints: [`functions/${name}/index.ts`],
    outfile: `dist/functions/${name}/index.mjs`,
    bundle: true,
    platform: 'node',
    target: ESBUILD_NODE_TARGET,
    format: 'esm',
    minify: true,
    sourcemap: true,
    sourcesContent: false,
    mainFields: ['module', 'main'],
    banner: { js: requireShim },
    logLevel: 'warning',
  });
}
