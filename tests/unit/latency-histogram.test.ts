import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { LatencyHistogram } from '../../gateway/admin/latency-histogram.js';

const BUCKETS = [0.0001, 0.00025, 0.001, 0.01, 0.1, 1, 10];

describe('LatencyHistogram', () => {
  it("reports exactly what prom-client's own histogram reports for the same observations", async () => {
    const series = fc.record({ volume: fc.constantFrom('a', 'b"c', 'vol-1'), command: fc.constantFrom('read', 'write', 'write_zeroes') });
    // Values on the bounds themselves, between them and beyond the last.
    const value = fc.oneof(fc.constantFrom(...BUCKETS, 0, 20), fc.double({ min: 0, max: 30, noNaN: true }));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(series, value), { maxLength: 200 }), async (observations) => {
        const ours = new Registry();
        const theirs = new Registry();
        const config = { name: 'x_seconds', help: 'latency', labelNames: ['volume', 'command'] as const, buckets: BUCKETS };
        const histogram = new LatencyHistogram({ ...config, registers: [ours] });
        const reference = new Histogram({ ...config, labelNames: [...config.labelNames], buckets: [...BUCKETS], registers: [theirs] });
        for (const [labels, seconds] of observations) {
          histogram.seriesFor(labels.volume, labels.command).observe(seconds);
          reference.observe(labels, seconds);
        }
        assert.equal(await ours.metrics(), await theirs.metrics());
      }),
      { numRuns: 200 },
    );
  });
});
