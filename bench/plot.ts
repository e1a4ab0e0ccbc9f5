import { GLYPH_HEIGHT, Raster, type Rgb } from './png.js';
import type { RecoveryResult } from './recovery.js';

/** The recovery workload over time: read throughput, held requests, and the outage shaded. */

const W = 960;
const H = 480;
const MARGIN = { left: 80, right: 80, top: 56, bottom: 64 };
const SCALE = 2;
const WHITE: Rgb = [255, 255, 255];
const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [225, 225, 225];
const OUTAGE: Rgb = [255, 228, 200];
const BLUE: Rgb = [31, 100, 200];
const RED: Rgb = [200, 40, 40];

/** A round axis maximum and step: 1, 2 or 5 times a power of ten, about five ticks. */
function niceAxis(max: number): { top: number; step: number } {
  const raw = Math.max(max, 1) / 5;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  return { top: Math.ceil(Math.max(max, 1) / step) * step, step };
}

function label(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

export function plotRecovery(r: RecoveryResult, outageSeconds: number): Buffer {
  const img = new Raster(W, H, WHITE);
  const plotW = W - MARGIN.left - MARGIN.right;
  const plotH = H - MARGIN.top - MARGIN.bottom;
  const tMax = Math.max(r.samples.at(-1)?.t ?? 1, 1);
  const tAxis = niceAxis(tMax);
  const yAxis = niceAxis(Math.max(...r.samples.map((s) => s.mibPerSecond), 0));
  const hAxis = niceAxis(Math.max(...r.samples.map((s) => s.held), 0));
  const x = (t: number): number => MARGIN.left + (t / tAxis.top) * plotW;
  const yLeft = (v: number): number => MARGIN.top + plotH - (v / yAxis.top) * plotH;
  const yRight = (v: number): number => MARGIN.top + plotH - (v / hAxis.top) * plotH;
  const textH = GLYPH_HEIGHT * SCALE;

  img.fillRect(x(r.downAt), MARGIN.top, x(r.upAt) - x(r.downAt), plotH, OUTAGE);
  for (let v = 0; v <= yAxis.top; v += yAxis.step) {
    img.line(MARGIN.left, yLeft(v), MARGIN.left + plotW, yLeft(v), GRID);
    const text = label(v);
    img.text(MARGIN.left - 8 - img.textWidth(text, SCALE), yLeft(v) - textH / 2, text, BLUE, SCALE);
  }
  for (let v = 0; v <= hAxis.top; v += hAxis.step) img.text(MARGIN.left + plotW + 8, yRight(v) - textH / 2, label(v), RED, SCALE);
  for (let t = 0; t <= tAxis.top; t += tAxis.step) {
    img.line(x(t), MARGIN.top + plotH, x(t), MARGIN.top + plotH + 5, INK);
    const text = label(t);
    img.text(x(t) - img.textWidth(text, SCALE) / 2, MARGIN.top + plotH + 10, text, INK, SCALE);
  }
  img.line(MARGIN.left, MARGIN.top, MARGIN.left, MARGIN.top + plotH, INK);
  img.line(MARGIN.left, MARGIN.top + plotH, MARGIN.left + plotW, MARGIN.top + plotH, INK);
  img.line(MARGIN.left + plotW, MARGIN.top, MARGIN.left + plotW, MARGIN.top + plotH, INK);

  const series = (value: (s: RecoveryResult['samples'][number]) => number, y: (v: number) => number, color: Rgb): void => {
    r.samples.forEach((s, i) => {
      const prev = r.samples[i - 1];
      if (prev !== undefined) img.line(x(prev.t), y(value(prev)), x(s.t), y(value(s)), color, 2);
    });
  };
  series((s) => s.mibPerSecond, yLeft, BLUE);
  series((s) => s.held, yRight, RED);

  const last = r.lastMs === null ? 'never' : `${(r.lastMs / 1000).toFixed(2)} s`;
  img.text(MARGIN.left, 14, `Holdfast recovery: S3 down ${label(outageSeconds)} s, last held read done ${last} after`, INK, SCALE);
  const legendY = MARGIN.top - textH - 8;
  img.text(MARGIN.left, legendY, 'read MiB/s', BLUE, SCALE);
  img.text(MARGIN.left + plotW - img.textWidth('held requests', SCALE), legendY, 'held requests', RED, SCALE);
  img.text(x(r.downAt) + 4, MARGIN.top + 4, 'S3 down', [150, 90, 30], SCALE);
  const axisTitle = 'time (s)';
  img.text(MARGIN.left + plotW / 2 - img.textWidth(axisTitle, SCALE) / 2, H - textH - 12, axisTitle, INK, SCALE);
  return img.toPng();
}
