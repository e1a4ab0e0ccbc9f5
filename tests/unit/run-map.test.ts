import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { NO_SOURCE, RunMap, ZERO_DATA } from '../../gateway/image/run-map.js';

const SPAN = 200;

/** The naive model: per byte, which source and which data offset. */
function resolveAll(map: RunMap, extent: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  map.resolve(extent, 0, SPAN, (s, t, src, off) => {
    for (let i = s; i < t; i++) out.push([src, src === NO_SOURCE ? 0 : off === ZERO_DATA ? ZERO_DATA : off + (i - s)]);
  });
  return out;
}

test('run map: newest run wins byte for byte, dropped bytes are accounted, removal folds runs away', () => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant('apply' as const), start: fc.nat(SPAN - 1), len: fc.integer({ min: 1, max: 80 }), zero: fc.boolean() }),
    fc.record({ kind: fc.constant('remove' as const), below: fc.nat(30) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const live = new Map<number, number>();
      const map = new RunMap((src, bytes) => live.set(src, (live.get(src) ?? 0) - bytes));
      const model: Array<[number, number]> = Array.from({ length: SPAN }, () => [NO_SOURCE, 0]);
      let next = 0;
      for (const o of ops) {
        if (o.kind === 'apply') {
          const end = Math.min(SPAN, o.start + o.len);
          const src = next++;
          const base = o.zero ? ZERO_DATA : 1000 * src;
          map.apply(7, o.start, end, src, base);
          live.set(src, (live.get(src) ?? 0) + (end - o.start));
          for (let i = o.start; i < end; i++) model[i] = [src, o.zero ? ZERO_DATA : base + (i - o.start)];
        } else {
          map.removeWhere(7, (src) => src < o.below);
          for (let i = 0; i < SPAN; i++) if (model[i]![0] !== NO_SOURCE && model[i]![0] < o.below) model[i] = [NO_SOURCE, 0];
        }
        assert.deepEqual(resolveAll(map, 7), model);
      }
      // Live bytes per source equal what the model still shows of it.
      const shown = new Map<number, number>();
      for (const [src] of model) if (src !== NO_SOURCE) shown.set(src, (shown.get(src) ?? 0) + 1);
      for (const [src, bytes] of live) assert.equal(bytes, shown.get(src) ?? 0, `live bytes of source ${src}`);
      assert.equal(map.runsOf(8), 0);
    }),
    { numRuns: 400 },
  );
});

test('run map: the busiest extents are those with the most runs, ties filled up to the limit, in extent order', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 80 }),
      fc.integer({ min: 1, max: 90 }),
      fc.nat(),
      (runsPerExtent, limit, rotation) => {
        const map = new RunMap(() => undefined);
        // Written in another order than the extents', as random writes arrive.
        for (let i = 0; i < runsPerExtent.length; i++) {
          const extent = (i + rotation) % runsPerExtent.length;
          // Runs of one byte each with gaps between them: `runs` separate runs in the extent.
          for (let r = 0; r < runsPerExtent[extent]!; r++) map.apply(extent, r * 2, r * 2 + 1, r, 0);
        }
        const chosen = map.busiestExtents(limit);
        // Compaction folds them in this order, sixteen at a time: neighbours' runs lie together in each delta.
        assert.deepEqual(
          chosen,
          [...chosen].sort((x, y) => x - y),
          'in extent order',
        );
        assert.equal(chosen.length, Math.min(limit, runsPerExtent.length));
        assert.equal(new Set(chosen).size, chosen.length, 'no extent twice');
        const sorted = [...runsPerExtent].sort((a, b) => b - a);
        const chosenRuns = chosen.map((e) => runsPerExtent[e]!).sort((a, b) => b - a);
        assert.deepEqual(chosenRuns, sorted.slice(0, chosen.length), 'as many runs as the busiest extents hold');
      },
    ),
  );
});
