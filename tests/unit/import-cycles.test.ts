import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/**
 * The folders of the code depend on each other without cycles: the layout can be read as layers,
 * and a folder can be understood (and tested) with only those below it. Imports are read with
 * TypeScript's own pre-processor; type-only imports count too, since they couple the folders as much.
 */

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const ROOTS = ['gateway', 'shared', 'functions', 'infra'];

function sourceFiles(dir: string): string[] {
  return readdirSync(join(REPO, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
    .map((e) => relative(REPO, join(e.parentPath, e.name)));
}

/**
 * gateway/hang/machine.ts → gateway/hang. A file directly under a root (gateway/main.ts,
 * gateway/gateway.ts) is a node of its own: the entry point and the composition of everything.
 */
function folderOf(file: string): string {
  const dir = dirname(file);
  return ROOTS.includes(dir) ? file : dir;
}

function importsOf(file: string): string[] {
  const info = ts.preProcessFile(readFileSync(join(REPO, file), 'utf8'), true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((name) => name.startsWith('.'))
    .map((name) => relative(REPO, resolve(REPO, dirname(file), name)).replace(/\.js$/, '.ts'));
}

/** Strongly connected components of more than one node (Tarjan): each is a cycle. */
function cycles(graph: Map<string, Set<string>>): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    indices.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!indices.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, indices.get(w)!));
      }
    }
    if (low.get(v) === indices.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!indices.has(v)) visit(v);
  return found;
}

test('no import cycles between folders', () => {
  const graph = new Map<string, Set<string>>();
  const why = new Map<string, string>();
  for (const file of ROOTS.flatMap(sourceFiles)) {
    const from = folderOf(file);
    if (!graph.has(from)) graph.set(from, new Set());
    for (const target of importsOf(file)) {
      const to = folderOf(target);
      if (to === from) continue;
      graph.get(from)!.add(to);
      why.set(`${from}→${to}`, `${file} imports ${target}`);
    }
  }
  const found = cycles(graph);
  const explain = (component: string[]): string =>
    component.flatMap((a) => component.filter((b) => graph.get(a)?.has(b)).map((b) => why.get(`${a}→${b}`)!)).join('; ');
  assert.deepEqual(found.map(explain), [], 'folders that import each other');
  assert.ok(graph.size >= 10, `read ${graph.size} folders`);
});

test('no import cycles between the modules of a folder', () => {
  const graph = new Map<string, Set<string>>();
  for (const file of ROOTS.flatMap(sourceFiles)) graph.set(file, new Set(importsOf(file).filter((t) => folderOf(t) === folderOf(file))));
  assert.deepEqual(cycles(graph), []);
});
