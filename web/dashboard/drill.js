// Drill-downs of the dashboard page: the tasks behind a counter (failed, done, released,
// running: their records, read on demand from /api/tasks; takeovers: the kept timeline),
// by worker and by task id prefix. Read-only: nothing here writes anything.
import { $, clock, h, num } from './util.js';

const tabs = [
  ['', 'any state'],
  ['failed', 'failed'],
  ['done', 'done'],
  ['released', 'released'],
  ['running', 'running'],
  ['takeovers', 'takeovers'],
];

/** The counters that open a list (data-counter of the card → state). */
export const drillable = {
  failed: 'failed',
  done: 'done',
  released: 'released',
  running: 'running',
  takeovers: 'takeovers',
};

const drill = { state: null, seq: 0, onTask: null };

function short(v, n = 80) {
  if (v === undefined) return '';
  const text = typeof v === 'string' ? v : JSON.stringify(v);
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function outcome(t) {
  if (t.state === 'failed' && t.error)
    return `${t.error.name || 'Error'}: ${t.error.message || ''}`;
  if (t.state === 'done') return t.result === undefined ? '' : `result ${short(t.result)}`;
  return t.detail || '';
}

function taskLink(task, hash) {
  return h(
    'a',
    { href: '#', class: 'task mono', onclick: (e) => drill.onTask(e, task, hash) },
    task,
  );
}

function renderTabs() {
  $('drill-tabs').replaceChildren(
    ...tabs.map(([k, label]) =>
      h(
        'button',
        {
          type: 'button',
          role: 'tab',
          class: `tab ${drill.state === k ? 'on' : ''}`,
          'aria-selected': drill.state === k ? 'true' : 'false',
          dataset: { tab: k || 'any' },
          onclick: () => openDrill(k),
        },
        label,
      ),
    ),
  );
}

function renderRows(state, body) {
  const heads =
    state === 'takeovers'
      ? ['time', 'task', 'taken by', 'from', 'kind']
      : ['task', 'state', 'worker', 'attempt', 'updated', 'error / result'];
  $('drill-head').replaceChildren(h('tr', {}, ...heads.map((t) => h('th', {}, t))));
  const rows = body.items.map((t) =>
    state === 'takeovers'
      ? h(
          'tr',
          { dataset: { task: t.task } },
          h('td', {}, clock(t.at)),
          h('td', {}, taskLink(t.task, t.hash)),
          h('td', { class: 'wname' }, t.worker),
          h('td', {}, t.from || '?'),
          h('td', {}, t.kind || ''),
        )
      : h(
          'tr',
          { dataset: { task: t.taskId, state: t.state } },
          h('td', {}, taskLink(t.taskId, t.hash)),
          h('td', {}, h('span', { class: `st st-${t.state}` }, t.state)),
          h('td', {}, t.worker),
          h('td', { class: 'num' }, t.attempt),
          h('td', {}, clock(t.updatedAt)),
          h(
            'td',
            { class: `outcome ${t.state === 'failed' ? 'bad' : ''}`, title: outcome(t) },
            outcome(t),
          ),
        ),
  );
  const what = state === 'takeovers' ? 'takeovers' : `${state || ''} tasks`.trim();
  $('drill-rows').replaceChildren(
    ...(rows.length
      ? rows
      : [h('tr', {}, h('td', { colspan: heads.length, class: 'empty' }, `no ${what} match`))]),
  );
  const notes = [`${num(body.items.length)}${body.more ? '+' : ''} ${what}, newest first`];
  if (state === 'takeovers') notes.push(`among the last ${num(body.kept)} events`);
  else notes.push(`${num(body.scanned)} records read in ${body.tookMs} ms`);
  if (body.partial) notes.push('stopped early: refine the prefix for the rest');
  $('drill-sub').textContent = notes.join(' · ');
}

/** Show the list of `state` ('' any state) with the current worker and prefix. */
export async function openDrill(state) {
  drill.state = state;
  renderTabs();
  const q = new URLSearchParams({ limit: '100' });
  if (state) q.set('state', state);
  const worker = $('drill-worker').value;
  const prefix = $('drill-prefix').value.trim();
  if (worker) q.set('worker', worker);
  if (prefix) q.set('prefix', prefix);
  const seq = ++drill.seq;
  $('drill-sub').textContent = 'reading…';
  $('drill').dataset.loading = '';
  try {
    const res = await fetch(`/api/tasks?${q}`);
    const body = await res.json();
    if (seq !== drill.seq) return;
    if (!res.ok) {
      $('drill-sub').textContent = body.error;
      return;
    }
    renderRows(state, body);
  } catch (err) {
    if (seq === drill.seq) $('drill-sub').textContent = `cannot read the list: ${err}`;
  } finally {
    if (seq === drill.seq) delete $('drill').dataset.loading;
  }
}

/** The workers of the worker filter (kept while the page lives: gone ones stay selectable). */
export function drillWorkers(workers) {
  const select = $('drill-worker');
  const have = new Set([...select.options].map((o) => o.value));
  for (const w of workers)
    if (!have.has(w.worker)) {
      have.add(w.worker);
      select.append(h('option', { value: w.worker }, w.worker));
    }
}

export function initDrill(onTask) {
  drill.onTask = onTask;
  renderTabs();
  $('drill-form').addEventListener('submit', (e) => {
    e.preventDefault();
    openDrill(drill.state ?? '');
  });
  $('drill-worker').addEventListener('change', () => {
    if (drill.state !== null) openDrill(drill.state);
  });
}
