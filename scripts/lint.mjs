#!/usr/bin/env node
// `npm run lint [PATH...]`: ESLint (eslint.config.js) and `prettier --check` on the paths given, or
// on the whole repository. Exits non-zero when either finds something.
import { spawnSync } from 'node:child_process';

const paths = process.argv.slice(2);
const targets = paths.length > 0 ? paths : ['.'];
let failed = false;
for (const [tool, args] of [
  ['eslint', ['--max-warnings', '0', ...targets]],
  ['prettier', ['--check', '--log-level', 'warn', ...targets]],
]) {
  const r = spawnSync('npx', ['--no-install', tool, ...args], { stdio: 'inherit' });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    console.error(`lint: ${tool} found problems`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
