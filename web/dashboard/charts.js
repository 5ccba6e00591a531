// The page's three charts, drawn as SVG: outcomes per second, takeovers per minute, and
// the claim-to-outcome latency. Each spans the last `secs` seconds.
import { $, duration, h, svg } from './util.js';

function polyline(values, max, w, hgt, cls) {
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const parts = [];
  let seg = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) {
      if (seg.length) parts.push(seg);
      seg = [];
      return;
    }
    seg.push(`${(i * step).toFixed(1)},${(hgt - (v / max) * (hgt - 4)).toFixed(1)}`);
  });
  if (seg.length) parts.push(seg);
  return parts.map((p) =>
    p.length === 1
      ? svg('circle', { cx: p[0].split(',')[0], cy: p[0].split(',')[1], r: 2.5, class: cls })
      : svg('polyline', { points: p.join(' '), class: cls, 'vector-effect': 'non-scaling-stroke' }),
  );
}

function gridAndMax(el, max, unit) {
  const W = 600;
  const H = 140;
  const nodes = [];
  for (const f of [0.5, 1]) {
    const y = H - f * (H - 4);
    nodes.push(
      svg('line', {
        x1: 0,
        x2: W,
        y1: y,
        y2: y,
        class: 'grid',
        'vector-effect': 'non-scaling-stroke',
      }),
    );
  }
  el.replaceChildren(...nodes);
  const label = el.parentElement.querySelector('.ymax') || h('span', { class: 'ymax' });
  label.textContent = `${unit(max)}`;
  el.parentElement.append(label);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 3, 4, 5, 6, 8, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

export function drawOutcomes(se, secs) {
  const el = $('chart-outcomes');
  // the last `secs` seconds, without the current one (still filling up)
  const cut = (a) => a.slice(a.length - 1 - secs, a.length - 1);
  const done = cut(se.done);
  const failed = cut(se.failed);
  const released = cut(se.released);
  const max = niceMax(Math.max(1, ...done, ...failed, ...released) * 1.1);
  gridAndMax(el, max, (m) => `${m}/s`);
  el.append(
    ...polyline(released, max, 600, 140, 'l-released'),
    ...polyline(failed, max, 600, 140, 'l-failed'),
    ...polyline(done, max, 600, 140, 'l-done'),
  );
}

export function drawTakeovers(se, secs) {
  const el = $('chart-takeovers');
  // at each second, the takeovers of the minute up to it (a rolling count)
  const t = se.takeovers;
  const rolling = [];
  let acc = 0;
  for (let i = 0; i < t.length - 1; i++) {
    acc += t[i] - (i >= 60 ? t[i - 60] : 0);
    rolling.push(acc);
  }
  const values = rolling.slice(-secs);
  const max = niceMax(Math.max(1, ...values) * 1.1);
  gridAndMax(el, max, (m) => `${m}/min`);
  const step = values.length > 1 ? 600 / (values.length - 1) : 600;
  const pts = values.map(
    (v, i) => `${(i * step).toFixed(1)},${(140 - (v / max) * 136).toFixed(1)}`,
  );
  el.append(
    svg('polygon', { points: `0,140 ${pts.join(' ')} 600,140`, class: 'area-takeover' }),
    ...polyline(values, max, 600, 140, 'l-takeover'),
  );
  const kinds = Object.entries(se.takeoverKinds);
  $('takeover-kinds').textContent = kinds.length
    ? kinds.map(([k, v]) => `${k} ${v}`).join(' · ')
    : 'none yet';
}

export function drawLatency(se, secs) {
  const el = $('chart-latency');
  const windows = se.latency.windows.slice(-Math.ceil(secs / 10));
  const p50 = windows.map((w) => w.p50);
  const p99 = windows.map((w) => w.p99);
  const max = niceMax(Math.max(1, ...p99.filter((v) => v !== null)) * 1.1);
  gridAndMax(el, max, (m) => duration(m));
  el.append(...polyline(p99, max, 600, 140, 'l-p99'), ...polyline(p50, max, 600, 140, 'l-p50'));
}
