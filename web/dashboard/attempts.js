// The attempts of a task looked up, from the task history (/api/task's `history`, as
// `pairlock history <taskId>`): one row per attempt (a grant and its outcome, by token).
import { clock, duration, h } from './util.js';

const grants = new Set([
  'fresh',
  'session-expired',
  'deadline-passed',
  'retry',
  'handover',
  'connection-lost',
  'reclaimed',
]);

/** The previous owner's worker id, from a session id (`<worker>#<epoch>`). */
const workerOf = (session) => {
  const i = session.lastIndexOf('#');
  return i < 0 ? session : session.slice(0, i);
};

/** Transitions (oldest first) into attempts: a grant, then the outcome of the same token. */
export function attempts(history) {
  const rows = [];
  const open = new Map();
  for (const t of history) {
    if (grants.has(t.kind)) {
      const row = { token: t.token, attempt: t.attempt, worker: t.worker, at: t.at, how: t.kind };
      if (t.kind !== 'fresh' && t.detail) row.from = workerOf(t.detail);
      rows.push(row);
      open.set(t.token, row);
      continue;
    }
    let row = open.get(t.token);
    // an outcome whose grant the history no longer keeps
    if (!row || row.outcome) {
      row = { token: t.token, attempt: t.attempt, worker: t.worker };
      rows.push(row);
    }
    row.outcome = t.kind;
    row.durationMs = t.durationMs;
    if (t.kind === 'failed') row.error = t.detail;
  }
  // an attempt without an outcome that a later grant followed was taken from its worker
  const last = rows.findLastIndex((r) => r.how);
  rows.forEach((r, i) => {
    if (!r.outcome && i < last) r.outcome = 'superseded';
  });
  return rows;
}

/** The attempts as a table (or a line saying there are none, or why they are unknown). */
export function renderAttempts(body) {
  const history = body.history || [];
  if (body.historyError) return h('p', { class: 'dim' }, body.historyError);
  if (!history.length)
    return h(
      'p',
      { class: 'dim' },
      'no attempts in the task history (older than it keeps, or written with historyLength 0)',
    );
  const rows = attempts(history).map((a) =>
    h(
      'tr',
      { dataset: { token: a.token, outcome: a.outcome || 'running' } },
      h('td', {}, a.at ? clock(a.at) : '–'),
      h('td', { class: 'num', title: `attempt ${a.attempt}` }, a.token),
      h('td', {}, a.worker),
      h('td', { class: 'how' }, a.how ? `${a.how}${a.from ? ` from ${a.from}` : ''}` : '?'),
      h('td', {}, h('span', { class: `st st-${a.outcome || 'running'}` }, a.outcome || 'running')),
      h('td', { class: 'num' }, a.durationMs === undefined ? '' : duration(a.durationMs)),
      h('td', { class: 'outcome bad', title: a.error || '' }, a.error || ''),
    ),
  );
  const heads = ['started', 'token', 'worker', 'granted', 'outcome', 'took', 'error'];
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      { class: 'attempts' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          heads.map((t, i) => h('th', { class: i === 1 || i === 5 ? 'num' : '' }, t)),
        ),
      ),
      h('tbody', {}, rows),
    ),
  );
}
