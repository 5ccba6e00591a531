// pairlock dashboard: one page, fed by /api/stream (server-sent events). No framework,
// no build step, no network access but its own server. Every text from Redis (task ids,
// notes, worker names) is set with textContent, never parsed as HTML.

const TIMELINE_KEEP = 500;
const PAGE = 25;

const state = {
  summary: null,
  series: null,
  /** server's Date.now() minus ours, from the last summary */
  skew: 0,
  timeline: [],
  running: null,
  runningVersion: -1,
  offsets: new Map(),
  hidden: new Set(),
  fetchTimer: null,
  fetching: false,
};

const $ = (id) => document.getElementById(id);
const now = () => Date.now() + state.skew;

/** Element builder: h('td', { class: 'num' }, 'text', child…) */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function duration(ms) {
  if (ms === undefined || ms === null || !Number.isFinite(ms)) return '–';
  const a = Math.abs(ms);
  const sign = ms < 0 ? '−' : '';
  if (a < 1000) return `${sign}${Math.round(a)} ms`;
  if (a < 60_000) return `${sign}${(a / 1000).toFixed(1)} s`;
  if (a < 3_600_000) return `${sign}${(a / 60_000).toFixed(1)} min`;
  return `${sign}${(a / 3_600_000).toFixed(1)} h`;
}

function clock(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

const fmt = new Intl.NumberFormat('en');
const num = (n) => (n === null || n === undefined ? '–' : fmt.format(n));

/** The part of a session id after the worker id: `#epoch`. */
function sessionTail(session, worker) {
  return session.startsWith(worker) ? session.slice(worker.length) : session;
}

// ---------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------

function connect() {
  const es = new EventSource('/api/stream');
  es.addEventListener('summary', (e) => {
    const s = JSON.parse(e.data);
    state.skew = s.now - Date.now();
    state.summary = s;
    setStatus(s);
    renderSummary(s);
    if (s.version !== state.runningVersion) scheduleRunning(0);
  });
  es.addEventListener('series', (e) => {
    state.series = JSON.parse(e.data);
    renderCounters();
    renderCharts();
  });
  es.addEventListener('events', (e) => {
    const items = JSON.parse(e.data);
    for (const it of items) state.timeline.push(it);
    if (state.timeline.length > TIMELINE_KEEP)
      state.timeline.splice(0, state.timeline.length - TIMELINE_KEEP);
    renderTimeline();
    if (items.some((it) => it.token !== undefined && it.event !== 'standby')) scheduleRunning(150);
  });
  es.onerror = () => setStatus(null);
}

function setStatus(s) {
  const el = $('status');
  let st = 'live';
  let text = 'live';
  if (!s) {
    st = 'down';
    text = 'page disconnected: retrying…';
  } else if (!s.redis.ok) {
    st = 'down';
    text = `Redis unreachable for ${duration(s.now - s.redis.since)}: ${s.redis.error || ''}`;
  } else if (!s.feed.ok) {
    st = 'warn';
    text = 'event feed reconnecting (events meanwhile are missed)';
  }
  el.dataset.state = st;
  $('status-text').textContent = text;
}

// ---------------------------------------------------------------------------------
// Summary: header, counters, charts, workers
// ---------------------------------------------------------------------------------

function sum(arr, from, to) {
  let t = 0;
  for (let i = Math.max(0, from); i < Math.min(arr.length, to); i++) t += arr[i];
  return t;
}

function renderSummary(s) {
  $('ns').textContent = s.namespace;
  $('hash').textContent = s.hash ? `(hash ${s.hash})` : '';
  $('redis').textContent = s.where.replace(/^Redis at /, '');
  document.title = `pairlock · ${s.namespace}`;
  renderCounters();
  renderWorkers(s);

  const census = s.census.at
    ? `counted ${duration(s.now - s.census.at)} ago in ${duration(s.census.durationMs)}`
    : 'counting…';
  $('footer').textContent =
    `${census}${s.census.error ? ` · last count failed: ${s.census.error}` : ''}` +
    `${s.capped ? ` · more than ${num(s.maxTasks)} running: lists show ${num(s.maxTasks)} of them, counts cover all` : ''}` +
    `${s.warnings.length ? ` · ${s.warnings[s.warnings.length - 1]}` : ''}`;
}

function renderCounters() {
  const s = state.summary;
  const se = state.series;
  if (!s) return;
  const c = s.counts;
  const live = s.workers.filter((w) => !w.gone).length;
  const card = (label, value, extra, cls) =>
    h(
      'div',
      { class: `card ${cls || ''}`, dataset: { counter: label } },
      h('div', { class: 'value' }, value),
      h('div', { class: 'label' }, label),
      extra ? h('div', { class: 'extra' }, extra) : null,
    );
  const cards = [
    card(
      'running',
      num(c.running),
      c.orphaned ? `${num(c.orphaned)} orphaned` : null,
      c.orphaned ? 'alert' : '',
    ),
    card('done', num(c.done)),
    card('failed', num(c.failed), null, c.failed ? 'bad' : ''),
    card('released', num(c.released)),
    card('records', num(c.total)),
    card(
      'live workers',
      num(live),
      s.workers.length > live ? `${s.workers.length - live} gone` : null,
    ),
  ];
  if (se) {
    // the current second is still filling up: rates use the 10 s before it
    const n = se.done.length - 1;
    const outcomes10 =
      (sum(se.done, n - 10, n) + sum(se.failed, n - 10, n) + sum(se.released, n - 10, n)) / 10;
    const takeovers = sum(se.takeovers, n - 59, n + 1);
    cards.push(
      card('outcomes/s', outcomes10.toFixed(1), 'last 10 s'),
      card('takeovers', num(takeovers), 'last minute', takeovers ? 'alert' : ''),
      card(
        'latency p50 / p99',
        `${duration(se.latency.p50)} / ${duration(se.latency.p99)}`,
        `claim → outcome, ${num(se.latency.samples)} in the last minute`,
        'wide',
      ),
    );
  }
  $('counters').replaceChildren(...cards);
}

/** Seconds the charts span: the time this dashboard has watched, from 1 to 5 minutes. */
function span() {
  const s = state.summary;
  const watched = s ? Math.round((s.now - s.startedAt) / 1000) : 300;
  return Math.min(300, Math.max(60, watched));
}

function renderCharts() {
  const se = state.series;
  if (!se) return;
  const secs = span();
  const label = secs < 120 ? `−${secs} s` : `−${Math.round(secs / 60)} min`;
  for (const el of document.querySelectorAll('.axis span:first-child')) el.textContent = label;
  drawOutcomes(se, secs);
  drawTakeovers(se, secs);
  drawLatency(se, secs);
}

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

function drawOutcomes(se, secs) {
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

function drawTakeovers(se, secs) {
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

function drawLatency(se, secs) {
  const el = $('chart-latency');
  const windows = se.latency.windows.slice(-Math.ceil(secs / 10));
  const p50 = windows.map((w) => w.p50);
  const p99 = windows.map((w) => w.p99);
  const max = niceMax(Math.max(1, ...p99.filter((v) => v !== null)) * 1.1);
  gridAndMax(el, max, (m) => duration(m));
  el.append(...polyline(p99, max, 600, 140, 'l-p99'), ...polyline(p50, max, 600, 140, 'l-p50'));
}

function ttlBar(w) {
  const left = w.gone ? 0 : Math.max(0, w.ttlMs - (now() - w.at));
  const frac = w.ttlMaxMs > 0 ? Math.min(1, left / w.ttlMaxMs) : 0;
  const fill = h('div', { class: 'fill' });
  // CSSOM, not a style attribute: the page's CSP allows no inline styles
  fill.style.width = `${(frac * 100).toFixed(1)}%`;
  return h(
    'div',
    { class: `ttlbar ${frac < 0.34 ? 'low' : ''}`, title: `session TTL ≈ ${duration(w.ttlMaxMs)}` },
    fill,
    h('span', {}, w.gone ? '–' : duration(left)),
  );
}

function renderWorkers(s) {
  const rows = s.workers.map((w) =>
    h(
      'tr',
      { class: w.gone ? 'gone' : '', dataset: { worker: w.worker, session: w.session } },
      h(
        'td',
        {},
        h('span', { class: 'wname' }, w.worker),
        w.gone
          ? h(
              'span',
              { class: `tag ${w.gone.reason}` },
              `${w.gone.reason} ${duration(now() - w.gone.at)} ago`,
            )
          : null,
      ),
      h('td', { class: 'mono' }, sessionTail(w.session, w.worker)),
      h('td', {}, [w.host, w.pid].filter((x) => x !== undefined).join(' · ') || '–'),
      h('td', { class: 'ttl-col' }, ttlBar(w)),
      h('td', { class: 'num' }, num(w.holds)),
      h(
        'td',
        {},
        w.gone ? '–' : w.renewedAt ? `≈ ${duration(now() - w.renewedAt)} ago` : 'watching…',
      ),
      h('td', {}, w.startedAt ? clock(w.startedAt) : '–'),
    ),
  );
  $('workers').replaceChildren(
    ...(rows.length
      ? rows
      : [h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'no live worker sessions'))]),
  );
  const live = s.workers.filter((w) => !w.gone).length;
  $('workers-sub').textContent =
    `${live} live${s.workers.length > live ? `, ${s.workers.length - live} gone (kept 2 min)` : ''}`;
}

// ---------------------------------------------------------------------------------
// Running tasks by holder (paged)
// ---------------------------------------------------------------------------------

function scheduleRunning(delay) {
  if (state.fetchTimer) return;
  state.fetchTimer = setTimeout(fetchRunning, delay);
}

async function fetchRunning() {
  state.fetchTimer = null;
  if (state.fetching) return scheduleRunning(300);
  state.fetching = true;
  try {
    const q = new URLSearchParams({ limit: String(PAGE) });
    for (const [session, off] of state.offsets) if (off > 0) q.append('at', `${session}:${off}`);
    const version = state.summary ? state.summary.version : -1;
    const res = await fetch(`/api/running?${q}`);
    if (res.ok) {
      state.running = await res.json();
      state.runningVersion = version;
      renderRunning();
    }
  } catch {
    // the stream reports the connection; the next summary asks again
  } finally {
    state.fetching = false;
  }
}

function leaseLeft(item, worker) {
  const ends = [];
  if (worker && !worker.gone) ends.push(worker.at + worker.ttlMs);
  if (item.deadlineAt) ends.push(item.deadlineAt);
  if (!ends.length) return null;
  // extrapolated from the last TTL reading: the next reading shows the renewal
  return Math.max(0, Math.min(...ends) - now());
}

function renderRunning() {
  const r = state.running;
  const s = state.summary;
  if (!r || !s) return;
  const workers = new Map(s.workers.map((w) => [w.session, w]));
  const groups = r.groups.map((g) => {
    const w = workers.get(g.session);
    const rows = g.items.map((it) =>
      h(
        'tr',
        { dataset: { task: it.task } },
        h(
          'td',
          {},
          h(
            'a',
            { href: '#', class: 'task mono', onclick: (e) => lookup(e, it.task, it.hash) },
            it.task,
          ),
          it.hash ? h('span', { class: 'hashk' }, ` (${it.hash})`) : null,
        ),
        h('td', { class: 'num' }, it.token),
        h('td', { class: 'num' }, it.attempt),
        h(
          'td',
          { class: 'num', dataset: { lease: '' } },
          g.alive ? duration(leaseLeft(it, w)) : 'orphaned',
        ),
        h('td', { class: 'num' }, it.deadlineAt ? duration(it.deadlineAt - now()) : '…'),
        h('td', { class: 'num' }, it.claimedAt ? duration(now() - it.claimedAt) : '–'),
        h('td', { class: 'num' }, it.progress === undefined ? '' : it.progress),
        h('td', { class: 'note', title: it.note || '' }, it.note || ''),
      ),
    );
    const from = g.offset + 1;
    const to = g.offset + g.items.length;
    const pager =
      g.held > PAGE
        ? h(
            'span',
            { class: 'pager' },
            h(
              'button',
              { disabled: g.offset === 0, onclick: () => page(g.session, g.offset - PAGE) },
              '‹',
            ),
            ` ${num(from)}–${num(to)} of ${num(g.held)} `,
            h(
              'button',
              { disabled: to >= g.held, onclick: () => page(g.session, g.offset + PAGE) },
              '›',
            ),
          )
        : null;
    return h(
      'div',
      {
        class: `group ${g.alive ? '' : 'orphaned'}`,
        dataset: { holder: g.worker, session: g.session },
      },
      h(
        'div',
        { class: 'ghead' },
        h('span', { class: 'wname' }, g.worker),
        h('span', { class: 'mono dim' }, sessionTail(g.session, g.worker)),
        g.alive ? null : h('span', { class: 'tag expired' }, 'owner gone: a peer takes these over'),
        h('span', { class: 'gcount' }, `${num(g.count)} task${g.count === 1 ? '' : 's'}`),
        pager,
      ),
      h(
        'table',
        { class: 'tasks' },
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ...[
              'task',
              'token',
              'attempt',
              'lease left',
              'deadline in',
              'running for',
              'progress',
              'note',
            ].map((t, i) => h('th', { class: i >= 1 && i <= 6 ? 'num' : '' }, t)),
          ),
        ),
        h('tbody', {}, rows),
      ),
    );
  });
  $('running').replaceChildren(
    ...(groups.length ? groups : [h('p', { class: 'empty' }, 'no task is running')]),
    ...(r.moreGroups ? [h('p', { class: 'dim' }, `and ${num(r.moreGroups)} more holders`)] : []),
  );
  $('running-sub').textContent = r.capped
    ? `details of the first ${num(r.maxTasks)} (--max-tasks); counts cover all`
    : '';
}

function page(session, offset) {
  state.offsets.set(session, Math.max(0, offset));
  scheduleRunning(0);
}

// ---------------------------------------------------------------------------------
// Timeline
// ---------------------------------------------------------------------------------

const kinds = [
  ['claimed', 'claims'],
  ['standby', 'standbys'],
  ['took-over', 'takeovers'],
  ['done', 'done'],
  ['failed', 'failed'],
  ['released', 'released'],
  ['rejected', 'refused settles'],
  ['session', 'sessions'],
];

function kindOf(ev) {
  return ev.event.startsWith('session-') ? 'session' : ev.event;
}

function describe(ev) {
  switch (ev.event) {
    case 'took-over':
      return `from ${ev.from || '?'} (${ev.kind})`;
    case 'standby':
      return `held by ${ev.worker}, covered by ${ev.by || '?'}`;
    case 'rejected':
      return `late settle refused: ${ev.reason}`;
    case 'session-gone':
      return `session ${ev.reason}`;
    case 'session-new':
      return 'session opened';
    default:
      return '';
  }
}

function renderTimeline() {
  const items = [];
  for (let i = state.timeline.length - 1; i >= 0 && items.length < 200; i--) {
    const ev = state.timeline[i];
    if (state.hidden.has(kindOf(ev))) continue;
    items.push(
      h(
        'li',
        {
          class: `ev ev-${ev.event}`,
          dataset: { event: ev.event, task: ev.task || '', worker: ev.worker || '' },
        },
        h('time', {}, clock(ev.at)),
        h('span', { class: 'badge' }, ev.event === 'took-over' ? `took over` : ev.event),
        ev.task
          ? h(
              'a',
              { href: '#', class: 'task mono', onclick: (e) => lookup(e, ev.task, ev.hash) },
              ev.task,
            )
          : null,
        ev.event === 'standby' || ev.event.startsWith('session-')
          ? null
          : h('span', { class: 'who' }, ev.worker),
        ev.token !== undefined ? h('span', { class: 'dim' }, `token ${ev.token}`) : null,
        h('span', { class: 'detail' }, describe(ev)),
      ),
    );
  }
  $('timeline').replaceChildren(
    ...(items.length
      ? items
      : [
          h(
            'li',
            { class: 'empty' },
            'no events yet (events are shown from the moment the page is served)',
          ),
        ]),
  );
  $('timeline-sub').textContent = `last ${state.timeline.length}`;
}

function renderFilters() {
  $('filters').replaceChildren(
    ...kinds.map(([k, label]) =>
      h(
        'label',
        { class: `filter f-${k}` },
        h('input', {
          type: 'checkbox',
          checked: !state.hidden.has(k),
          onchange: (e) => {
            if (e.target.checked) state.hidden.delete(k);
            else state.hidden.add(k);
            renderTimeline();
          },
        }),
        label,
      ),
    ),
  );
}

// ---------------------------------------------------------------------------------
// Lookup
// ---------------------------------------------------------------------------------

function lookup(e, task, hash) {
  e.preventDefault();
  $('lookup-id').value = task;
  $('lookup-hash').value = hash || '';
  runLookup();
}

async function runLookup() {
  const id = $('lookup-id').value;
  const hash = $('lookup-hash').value;
  const out = $('lookup-out');
  out.hidden = false;
  out.classList.remove('error');
  if (!id) return;
  const q = new URLSearchParams({ id });
  if (hash) q.set('hash', hash);
  try {
    const res = await fetch(`/api/task?${q}`);
    const body = await res.json();
    if (!res.ok) {
      out.classList.add('error');
      out.textContent = body.error;
      return;
    }
    out.textContent = body.lines.join('\n');
  } catch (err) {
    out.classList.add('error');
    out.textContent = String(err);
  }
}

// ---------------------------------------------------------------------------------

function tick() {
  // TTL bars and lease times move between summaries
  if (state.summary) renderWorkers(state.summary);
  if (state.running) {
    const workers = new Map(state.summary.workers.map((w) => [w.session, w]));
    for (const g of document.querySelectorAll('#running .group')) {
      const w = workers.get(g.dataset.session);
      const items = state.running.groups.find((x) => x.session === g.dataset.session)?.items || [];
      g.querySelectorAll('td[data-lease]').forEach((td, i) => {
        if (!g.classList.contains('orphaned') && items[i])
          td.textContent = duration(leaseLeft(items[i], w));
      });
    }
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('lookup').addEventListener('submit', (e) => {
    e.preventDefault();
    runLookup();
  });
  renderFilters();
  renderTimeline();
  connect();
  setInterval(tick, 250);
});
