import { build } from 'esbuild';

/**
 * Bundles the gateway into one ESM file. Native and dynamically-loaded packages stay external:
 * @node-rs/crc32 picks its prebuilt binary at run time, and pino-pretty/pino load helpers by path.
 */
await build({
  entryPoints: ['gateway/main.ts'],
  outfile: 'dist/holdfast.js',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: true,
  external: ['@node-rs/crc32', 'pino', 'pino-pretty'],
  banner: {
    // Bundled CommonJS dependencies (the AWS SDK, commander) still call require().
    js: "import { createRequire as __holdfastCreateRequire } from 'node:module'; const require = __holdfastCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
