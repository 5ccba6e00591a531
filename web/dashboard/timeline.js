// The timeline of the dashboard page: recent events, newest first, with filters by kind.
import { $, clock, h, num, sessionTail } from './util.js';

const kinds = [
  ['claimed', 'claims'],
  ['standby', 'standbys'],
  ['took-over', 'takeovers'],
  ['reclaimed', 'reclaimed'],
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
    case 'reclaimed':
      return 'its own task taken back after a lost lease';
    case 'failed':
      return ev.error || '';
    case 'released':
      return ev.kind === 'given-back' ? 'given back unused after a lost lease' : '';
    case 'standby':
      return `held by ${ev.worker}, covered by ${ev.by || '?'}`;
    case 'rejected':
      return `late settle refused: ${ev.reason}`;
    case 'session-gone':
      return `session ${sessionTail(ev.session || '', ev.worker || '')} ${ev.reason}`;
    case 'session-new':
      return `session ${sessionTail(ev.session || '', ev.worker || '')} opened`;
    default:
      return '';
  }
}

/** Whether `ev` concerns `worker` (its owner, the one it was taken from, or its standby). */
function concerns(ev, worker) {
  return !worker || ev.worker === worker || ev.from === worker || ev.by === worker;
}

/** The entries of `state.timeline` (as many as the server keeps) not hidden by the filters, newest first; a task id calls `onTask`. */
export function renderTimeline(state, onTask) {
  const items = [];
  for (let i = state.timeline.length - 1; i >= 0; i--) {
    const ev = state.timeline[i];
    if (state.hidden.has(kindOf(ev)) || !concerns(ev, state.timelineWorker)) continue;
    items.push(
      h(
        'li',
        {
          class: `ev ev-${ev.event} ${ev.history ? 'past' : ''}`,
          dataset: { event: ev.event, task: ev.task || '', worker: ev.worker || '' },
          title: ev.history ? 'from the task history (before this dashboard started)' : null,
        },
        h('time', {}, clock(ev.at)),
        h('span', { class: 'badge' }, ev.event === 'took-over' ? `took over` : ev.event),
        ev.task
          ? h(
              'a',
              { href: '#', class: 'task mono', onclick: (e) => onTask(e, ev.task, ev.hash) },
              ev.task,
            )
          : null,
        // every row names its worker (a session's too); a standby names its owner below
        ev.event === 'standby' ? null : h('span', { class: 'who' }, ev.worker || '?'),
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
            'no events yet (the task history had none; events are shown as they come)',
          ),
        ]),
  );
  const size = state.summary ? state.summary.timelineSize : state.timeline.length;
  $('timeline-sub').textContent =
    `${num(items.length)} shown of the last ${num(state.timeline.length)} (keeps the last ${num(size)} events)`;
}

/** One checkbox per kind of event; `state.hidden` holds the kinds left out. */
export function renderFilters(state, onTask) {
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
            renderTimeline(state, onTask);
          },
        }),
        label,
      ),
    ),
  );
}

/** The worker filter of the timeline: every worker seen while the page lives. */
export function timelineWorkers(state, workers, onTask) {
  let select = $('timeline-worker');
  if (!select) {
    select = h(
      'select',
      {
        id: 'timeline-worker',
        'aria-label': 'worker',
        onchange: (e) => {
          state.timelineWorker = e.target.value;
          renderTimeline(state, onTask);
        },
      },
      h('option', { value: '' }, 'any worker'),
    );
    $('filters').append(select);
  }
  const have = new Set([...select.options].map((o) => o.value));
  for (const w of workers)
    if (!have.has(w.worker)) {
      have.add(w.worker);
      select.append(h('option', { value: w.worker }, w.worker));
    }
}
