import type { RequestedBy } from '../../shared/events.js';
import { DEFAULT_HANG_POLICY, type HangPolicy } from '../../shared/hang-policy.js';
import { deadlineOf, initialMachine, type HangMachine } from '../../gateway/hang/machine.js';
import { transition, type HangInput, type HangInputType } from '../../gateway/hang/transition.js';

/**
 * The state diagram of the hang engine, found by running `transition` from the initial machine over
 * every input until no new state appears — so the diagram in docs/io-hang.md shows what the code
 * does, not what someone remembered. Four regions, each a projection of the whole state.
 */

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const BY: RequestedBy = { address: '127.0.0.1:1', token: null };

interface Region {
  readonly id: string;
  readonly title: string;
  readonly initial: string;
  /** Node id → label. */
  readonly nodes: Readonly<Record<string, string>>;
  readonly project: (m: HangMachine) => string;
}

const REGIONS: readonly Region[] = [
  {
    id: 'requests',
    title: 'guest requests',
    initial: 'normal',
    nodes: { normal: 'normal', hang: 'hang', timed_out: 'timed-out' },
    project: (m) => (m.state.kind === 'timed-out' ? 'timed_out' : m.state.kind),
  },
  {
    id: 'store',
    title: 'object store',
    initial: 'store_ok',
    nodes: { store_ok: 'answers', store_down: 'storage-unavailable' },
    project: (m) => (m.health.store === null ? 'store_ok' : 'store_down'),
  },
  {
    id: 'journal',
    title: 'journal disk',
    initial: 'journal_ok',
    nodes: { journal_ok: 'writes and syncs', journal_failing: 'journal-failing' },
    project: (m) => (m.health.journal === null ? 'journal_ok' : 'journal_failing'),
  },
  {
    id: 'operator',
    title: 'operator',
    initial: 'running',
    nodes: { running: 'holding allowed', paused: 'paused' },
    project: (m) => (m.paused ? 'paused' : 'running'),
  },
];

const POLICIES: readonly HangPolicy[] = [
  DEFAULT_HANG_POLICY,
  { ...DEFAULT_HANG_POLICY, timeout: 3_600_000 },
  { ...DEFAULT_HANG_POLICY, timeout: 10_000 },
  { ...DEFAULT_HANG_POLICY, timeout: 'forever' },
  { ...DEFAULT_HANG_POLICY, timeout: 'off' },
  { ...DEFAULT_HANG_POLICY, classes: { ...DEFAULT_HANG_POLICY.classes, transient: 'fail' } },
];

/** Every input worth trying on `m` (a deadline only for its own episode). */
function inputs(m: HangMachine): HangInput[] {
  const list: HangInput[] = [
    { type: 'held', held: { requests: 1, bytes: 4096, reads: 1 } },
    { type: 'held', held: { requests: 1, bytes: 4096, reads: 0 } },
    { type: 'drained' },
    { type: 'store-failed', path: 'read', errorClass: 'transient', message: 'ECONNREFUSED' },
    { type: 'store-failed', path: 'write', errorClass: 'transient', message: 'SlowDown' },
    { type: 'store-failed', path: 'write', errorClass: 'denied', message: 'AccessDenied' },
    { type: 'store-failed', path: 'probe', errorClass: 'transient', message: 'ECONNREFUSED' },
    { type: 'store-failed', path: 'read', errorClass: 'corrupt', message: 'CRC32C mismatch' },
    { type: 'store-answered', path: 'read' },
    { type: 'store-answered', path: 'write' },
    { type: 'probe-answered' },
    { type: 'journal-failed', errorClass: 'io', message: 'EIO' },
    { type: 'journal-recovered' },
    { type: 'pause', by: BY },
    { type: 'resume', by: BY },
    { type: 'release', by: BY },
    ...POLICIES.map((policy): HangInput => ({ type: 'policy', policy, by: BY })),
  ];
  if (m.state.kind === 'hang') {
    const at = deadlineOf(m, m.state.episode);
    if (at !== null) list.push({ type: 'deadline', episode: m.state.episode.id, at });
  }
  return list;
}

/** What tells two machines apart for the diagram's purposes (times and ids left out). */
function key(m: HangMachine): string {
  const s = m.health.store;
  return JSON.stringify([
    m.state.kind,
    s && [s.reads, s.writes, s.errorClass],
    m.health.journal?.errorClass,
    m.paused,
    m.policy,
    m.held.requests > 0,
    m.held.reads > 0,
  ]);
}

export function exploreEdges(): Map<string, Map<string, Set<HangInputType>>> {
  const edges = new Map<string, Map<string, Set<HangInputType>>>(REGIONS.map((r) => [r.id, new Map()]));
  const start = initialMachine({ volume: 'v', gateway: 'g', policy: DEFAULT_HANG_POLICY, idPrefix: 'x' });
  const seen = new Set([key(start)]);
  const queue: HangMachine[] = [start];
  for (let step = 1; queue.length > 0; step++) {
    const m = queue.shift()!;
    for (const input of inputs(m)) {
      // Each step a minute later, so that a 10 s timeout set during an episode has passed.
      const next = transition(m, input, T0 + step * 60_000).machine;
      for (const region of REGIONS) {
        const from = region.project(m);
        const to = region.project(next);
        if (from === to) continue;
        const byEdge = edges.get(region.id)!;
        const label = `${from} --> ${to}`;
        if (!byEdge.has(label)) byEdge.set(label, new Set());
        byEdge.get(label)!.add(input.type);
      }
      const k = key(next);
      if (!seen.has(k)) {
        seen.add(k);
        queue.push(next);
      }
    }
  }
  return edges;
}

/** The Mermaid state diagram, as it appears between the fences in docs/io-hang.md. */
export function renderDiagram(): string {
  const edges = exploreEdges();
  const lines = ['stateDiagram-v2'];
  for (const region of REGIONS) {
    lines.push(`  state "${region.title}" as ${region.id} {`);
    for (const [id, label] of Object.entries(region.nodes)) lines.push(`    state "${label}" as ${id}`);
    lines.push(`    [*] --> ${region.initial}`);
    const regionEdges = [...edges.get(region.id)!].sort(([a], [b]) => a.localeCompare(b));
    for (const [edge, types] of regionEdges) lines.push(`    ${edge} : ${[...types].sort().join(', ')}`);
    lines.push('  }');
  }
  return lines.join('\n');
}
