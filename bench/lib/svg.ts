/**
 * The latency chart: one panel per measured distribution group, each a cumulative
 * distribution (share of samples at or below a latency) on a logarithmic time axis.
 * Hand-written SVG, no dependency.
 */
import type { Machine } from './machine.js';
import type { Series } from './report.js';
import { ms } from './stats.js';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
const PANEL_W = 520;
const PANEL_H = 300;
const PAD = { left: 56, right: 16, top: 34, bottom: 92 };
const COLS = 2;

const esc = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function ticks(lo: number, hi: number): number[] {
  const out: number[] = [];
  // 1-2-5 steps on short ranges; decades only when the range is wide
  const steps = Math.log10(hi / lo) > 3 ? [1] : [1, 2, 5];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of steps) {
      const v = m * 10 ** e;
      if (v >= lo && v <= hi) out.push(v);
    }
  }
  return out;
}

function label(v: number): string {
  if (v >= 1_000) return `${v / 1_000} s`;
  if (v >= 1) return `${v} ms`;
  return `${Math.round(v * 1_000)} µs`;
}

function panel(title: string, series: Series[], x0: number, y0: number): string {
  const w = PANEL_W - PAD.left - PAD.right;
  const h = PANEL_H - PAD.top - PAD.bottom;
  const all = series.flatMap((s) => s.samples).filter((v) => v > 0 && Number.isFinite(v));
  const markers = series.flatMap((s) => (s.marker ? [s.marker] : []));
  let lo = Math.min(...all, ...markers.map((m) => m.at));
  let hi = Math.max(...all, ...markers.map((m) => m.at));
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    lo = 0.01;
    hi = 1;
  }
  lo = 10 ** Math.floor(Math.log10(lo));
  hi = 10 ** Math.ceil(Math.log10(hi));
  if (hi <= lo) hi = lo * 10;
  const sx = (v: number) =>
    x0 +
    PAD.left +
    ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * w;
  const sy = (p: number) => y0 + PAD.top + (1 - p) * h;
  const out: string[] = [];
  out.push(`<g>`);
  out.push(`<text x="${x0 + PAD.left}" y="${y0 + 20}" class="title">${esc(title)}</text>`);
  out.push(
    `<rect x="${x0 + PAD.left}" y="${y0 + PAD.top}" width="${w}" height="${h}" class="frame"/>`,
  );
  for (const t of ticks(lo, hi)) {
    const x = sx(t).toFixed(1);
    out.push(
      `<line x1="${x}" x2="${x}" y1="${y0 + PAD.top}" y2="${y0 + PAD.top + h}" class="grid"/>`,
    );
    out.push(
      `<text x="${x}" y="${y0 + PAD.top + h + 14}" class="tick" text-anchor="middle">${label(t)}</text>`,
    );
  }
  for (const p of [0, 0.25, 0.5, 0.75, 0.9, 1]) {
    const y = sy(p).toFixed(1);
    out.push(
      `<line x1="${x0 + PAD.left}" x2="${x0 + PAD.left + w}" y1="${y}" y2="${y}" class="grid"/>`,
    );
    out.push(
      `<text x="${x0 + PAD.left - 6}" y="${y}" class="tick" text-anchor="end" dominant-baseline="middle">${p * 100}%</text>`,
    );
  }
  for (const m of markers) {
    const x = sx(m.at).toFixed(1);
    out.push(
      `<line x1="${x}" x2="${x}" y1="${y0 + PAD.top}" y2="${y0 + PAD.top + h}" class="marker"/>`,
    );
    out.push(
      `<text x="${Number(x) - 4}" y="${y0 + PAD.top + 12}" class="tick" text-anchor="end">${esc(m.label)}</text>`,
    );
  }
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const n = s.samples.length;
    if (n > 0) {
      const pts: string[] = [`${sx(s.samples[0] as number).toFixed(1)},${sy(0).toFixed(1)}`];
      s.samples.forEach((v, j) => {
        const x = sx(v).toFixed(1);
        pts.push(`${x},${sy(j / n).toFixed(1)}`, `${x},${sy((j + 1) / n).toFixed(1)}`);
      });
      out.push(
        `<polyline points="${pts.join(' ')}" fill="none" stroke="${color}" stroke-width="1.6"/>`,
      );
    }
    const ly = y0 + PAD.top + h + 32 + i * 14;
    out.push(
      `<line x1="${x0 + PAD.left}" x2="${x0 + PAD.left + 18}" y1="${ly - 4}" y2="${ly - 4}" stroke="${color}" stroke-width="3"/>`,
    );
    out.push(
      `<text x="${x0 + PAD.left + 24}" y="${ly}" class="legend">${esc(s.label)}: p50 ${esc(ms(s.summary.p50))}, p99 ${esc(ms(s.summary.p99))} (n=${s.summary.n})</text>`,
    );
  });
  out.push(
    `<text x="${x0 + PAD.left + w / 2}" y="${y0 + PAD.top + h + 26}" class="axis" text-anchor="middle"></text>`,
  );
  out.push(`</g>`);
  return out.join('\n');
}

export function renderSvg(series: readonly Series[], machine: Machine): string {
  const panels = new Map<string, Series[]>();
  for (const s of series) {
    const list = panels.get(s.panel) ?? [];
    list.push(s);
    panels.set(s.panel, list);
  }
  const count = Math.max(1, panels.size);
  const rows = Math.ceil(count / COLS);
  const width = PANEL_W * COLS;
  const height = 56 + rows * PANEL_H;
  const body: string[] = [];
  [...panels.entries()].forEach(([title, list], i) => {
    body.push(panel(title, list, (i % COLS) * PANEL_W, 56 + Math.floor(i / COLS) * PANEL_H));
  });
  if (panels.size === 0)
    body.push(`<text x="20" y="90" class="legend">no latency series in this run</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" role="img">
<title>pairlock latency distributions</title>
<style>
.title { font-size: 14px; font-weight: bold; fill: #222; }
.tick { font-size: 10px; fill: #555; }
.legend { font-size: 11px; fill: #222; }
.axis { font-size: 11px; fill: #555; }
.frame { fill: #fff; stroke: #999; }
.grid { stroke: #e4e4e4; }
.marker { stroke: #444; stroke-dasharray: 4 3; }
</style>
<rect width="100%" height="100%" fill="#fafafa"/>
<text x="16" y="22" class="title">pairlock latency distributions (share of samples at or below each latency; log time axis)</text>
<text x="16" y="40" class="tick">${esc(`${machine.cpu}, ${machine.cores} cores; Node ${machine.node}; Redis ${machine.redis}`)}</text>
${body.join('\n')}
</svg>
`;
}
