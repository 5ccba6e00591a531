// pairlock dashboard: one page, fed by /api/stream (server-sent events). No framework,
// no build step, no network access but its own server. Every text from Redis (task ids,
// notes, worker names) is set with textContent, never parsed as HTML.

import { renderAttempts } from './attempts.js';
import { drawLatency, drawOutcomes, drawTakeovers } from './charts.js';
import { drillable, drillWorkers, initDrill, openDrill } from './drill.js';
import { renderFilters, renderTimeline, timelineWorkers } from './timeline.js';
import { $, clock, duration, h, num, sessionTail, sum } from './util.js';

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

const now = () => Date.now() + state.skew;
/** Time since `ms` (server clock): never negative, whatever the clocks' estimates. */
const since = (ms) => duration(Math.max(0, now() - ms));
/** Numbers on the page are not current: Redis or the event feed is away. */
const stale = () => !!state.summary && (!state.summary.redis.ok || !state.summary.feed.ok);

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
    // as many as the server keeps (its summary says how many)
    const keep = state.summary ? state.summary.timelineSize : Number.POSITIVE_INFINITY;
    if (state.timeline.length > keep) state.timeline.splice(0, state.timeline.length - keep);
    renderTimeline(state, lookup);
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
    text = `Redis unreachable since ${clock(s.redis.since)} (${duration(s.now - s.redis.since)}): ${s.redis.error || 'no connection'} · numbers as of then`;
  } else if (!s.feed.ok) {
    st = 'warn';
    text = `event feed reconnecting since ${clock(s.feed.since)} (events meanwhile are missed)`;
  }
  el.dataset.state = st;
  el.title = text;
  $('status-text').textContent = text;
  // grey out what can no longer be current rather than show it as if it were
  document.body.classList.toggle('stale', st === 'down' || (!!s && !s.feed.ok));
}

// ---------------------------------------------------------------------------------
// Summary: header, counters, charts, workers
// ---------------------------------------------------------------------------------

function renderSummary(s) {
  $('ns').textContent = s.namespace;
  $('hash').textContent = s.hash ? `(hash ${s.hash})` : '';
  $('redis').textContent = s.where.replace(/^Redis at /, '');
  document.title = `pairlock · ${s.namespace}`;
  renderCounters();
  renderWorkers(s);
  drillWorkers(s.workers);
  timelineWorkers(state, s.workers, lookup);

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
      drillable[label]
        ? {
            class: `card drillable ${cls || ''}`,
            dataset: { counter: label },
            role: 'button',
            tabindex: 0,
            title: `list the ${label} tasks`,
          }
        : { class: `card ${cls || ''}`, dataset: { counter: label } },
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
  if (se && stale()) {
    // events are missed while the feed is away: no rate rather than a false zero
    cards.push(
      card('outcomes/s', '–', 'no events: feed away'),
      card('takeovers', '–', 'no events: feed away'),
      card('latency p50 / p99', '–', 'no events: feed away', 'wide'),
    );
  } else if (se) {
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
  // from the dashboard's start, or from the oldest transition the history gave it
  const from = s ? Math.min(s.startedAt, s.historyFrom ?? s.startedAt) : 0;
  const watched = s ? Math.round((s.now - from) / 1000) : 300;
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
  // holds from the same snapshot as the running lists beside them (they must agree)
  const holdsOf = (w) => (state.running?.holds ? (state.running.holds[w.session] ?? 0) : w.holds);
  const rows = s.workers.map((w) =>
    h(
      'tr',
      {
        class: `${w.gone ? 'gone' : ''} ${w.paused ? 'paused' : ''}`,
        dataset: { worker: w.worker, session: w.session },
      },
      h(
        'td',
        {},
        h('span', { class: 'wname' }, w.worker),
        w.gone
          ? h('span', { class: `tag ${w.gone.reason}` }, `${w.gone.reason} ${since(w.gone.at)} ago`)
          : null,
        w.paused && !w.gone
          ? h(
              'span',
              { class: 'tag paused', title: 'claims nothing new; still covers its peers' },
              'paused',
            )
          : null,
      ),
      h('td', { class: 'mono' }, sessionTail(w.session, w.worker)),
      h('td', {}, [w.host, w.pid].filter((x) => x !== undefined).join(' · ') || '–'),
      h('td', { class: 'ttl-col' }, ttlBar(w)),
      h('td', { class: 'num' }, num(holdsOf(w))),
      h('td', {}, w.gone ? '–' : w.renewedAt ? `≈ ${since(w.renewedAt)} ago` : 'watching…'),
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
      // the holds column and the groups' counts: one snapshot, shown in one frame
      if (state.summary) renderWorkers(state.summary);
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
        h('td', { class: 'num' }, it.claimedAt ? since(it.claimedAt) : '–'),
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
  const past = $('lookup-history');
  out.hidden = false;
  past.hidden = true;
  out.classList.remove('error', 'missing');
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
    // its attempts, from the task history: also of a record whose retention ran out
    past.replaceChildren(h('h3', {}, 'attempts'), renderAttempts(body));
    past.hidden = false;
    if (!body.found) {
      out.classList.add('missing');
      out.textContent = `no such task: ${body.message}`;
      return;
    }
    out.classList.remove('missing');
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
  renderFilters(state, lookup);
  renderTimeline(state, lookup);
  initDrill(lookup);
  const drillFrom = (e) => {
    const c = e.target.closest('.card.drillable');
    if (!c) return;
    openDrill(drillable[c.dataset.counter]);
    $('drill').scrollIntoView({ block: 'nearest' });
  };
  $('counters').addEventListener('click', drillFrom);
  $('counters').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') drillFrom(e);
  });
  connect();
  setInterval(tick, 250);
});
