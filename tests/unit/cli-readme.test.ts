/** The README documents the CLI that exists: every command and option it shows is one the CLI takes. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { Command } from 'commander';
import { buildProgram } from '../../gateway/cli/main.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const program = buildProgram();

function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has a "${title}" section`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

/** The command `words` reach, or undefined. */
function find(words: readonly string[]): Command | undefined {
  let cmd: Command | undefined = program;
  for (const w of words) cmd = cmd?.commands.find((c) => c.name() === w);
  return cmd;
}

const takes = (cmd: Command, option: string): boolean =>
  [cmd, program].some((c) => c.options.some((o) => o.long === option || o.short === option));

/** `holdfast volume create NAME --size 10G [--read-only]` → ['volume', 'create'] and ['--size', '--read-only']. */
function parseUsage(line: string): { words: string[]; options: string[] } {
  const tokens = line.replace(/#.*$/, '').trim().split(/\s+/).slice(1);
  const words: string[] = [];
  for (const t of tokens) {
    if (!/^[a-z]+$/.test(t)) break;
    words.push(t);
  }
  return { words, options: [...line.replace(/#.*$/, '').matchAll(/(?<![\w-])(--?[a-zA-Z][\w-]*)/g)].map((m) => m[1]!) };
}

test('every usage line of "Using it" names a command and options that exist', () => {
  const block = /```sh\n(holdfast serve[\s\S]*?)```/.exec(section('Using it'))?.[1];
  assert.ok(block !== undefined, 'the usage block');
  const lines = block.split('\n').filter((l) => l.startsWith('holdfast '));
  assert.ok(lines.length >= 8);
  for (const line of lines) {
    const { words, options } = parseUsage(line);
    const cmd = find(words);
    assert.ok(cmd !== undefined, `README: ${line}\n  no command "holdfast ${words.join(' ')}"`);
    for (const o of options) assert.ok(takes(cmd, o), `README: ${line}\n  "holdfast ${words.join(' ')}" has no option ${o}`);
  }
});

test('every flag of the configuration table is a serve option', () => {
  const serve = find(['serve'])!;
  const flags = [...section('Using it').matchAll(/^\| `(--[a-z-]+)` \|/gm)].map((m) => m[1]!);
  assert.ok(flags.length >= 20, `${flags.length} flags in the table`);
  for (const flag of flags) assert.ok(takes(serve, flag), `README documents ${flag}, which serve does not take`);
});

test('every option holdfast is shown with in a README command line exists on its command', () => {
  // Console transcripts show mistakes on purpose (the usage error example).
  const shown = readme.replace(/```console\n[\s\S]*?```/g, '');
  const commandLines = [...shown.matchAll(/(?:^|\$ |`)(?:npx )?(holdfast (?:serve|volume|import|export|status)\b[^`\n]*)/gm)].map(
    (m) => m[1]!,
  );
  assert.ok(commandLines.length >= 15, `${commandLines.length} command lines`);
  for (const line of commandLines) {
    const { words, options } = parseUsage(line.replace(/\$\w+/g, ''));
    const cmd = find(words);
    assert.ok(cmd !== undefined, `README: ${line}`);
    for (const o of options) assert.ok(takes(cmd, o), `README: ${line}\n  "holdfast ${words.join(' ')}" has no option ${o}`);
  }
});
