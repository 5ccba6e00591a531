// The timeline of the dashboard page: recent events, newest first, with filters by kind.
import { $, clock, h } from './util.js';

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

/** The newest 200 entries of `state.timeline` not hidden by the filters; a task id calls `onTask`. */
export function renderTimeline(state, onTask) {
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
              { href: '#', class: 'task mono', onclick: (e) => onTask(e, ev.task, ev.hash) },
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
