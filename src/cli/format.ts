import type { TaskInfo } from '../worker/worker.js';

/* How records, durations and tables are shown by the commands. */

/**
 * Characters a terminal acts on instead of showing: C0 controls (ESC starts colour and
 * cursor sequences, a newline breaks a table), DEL, C1 controls (U+009B is a one-character
 * CSI), and the Unicode line separators and bidirectional overrides that reorder what is shown.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * Text from Redis (task ids, worker names, results, error messages) made safe to print on a
 * terminal: every control character shown as an escape (`\x1b`, `\n`, `\u202e`). Every
 * human-readable output of the CLI goes through this; JSON output keeps the exact text.
 */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => {
    const named = NAMED[c];
    if (named !== undefined) return named;
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** A value in a message, quoted: `"…"` with its control characters escaped. */
export function quoted(text: string): string {
  return `"${printable(text)}"`;
}

/** Each line of a message escaped, its line breaks kept (for messages built of many lines). */
export function printableLines(text: string): string {
  return text.split('\n').map(printable).join('\n');
}

export function iso(ms: number): string {
  return Number.isFinite(ms) && ms > 0 ? new Date(ms).toISOString() : '-';
}

export function duration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms < 0) return `${ms} ms`;
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

function short(value: unknown, max = 80): string {
  const text = value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A TaskInfo as JSON-friendly data (undefined fields dropped). */
export function taskJson(info: TaskInfo, hash?: string): Record<string, unknown> {
  const out: Record<string, unknown> = { ...info };
  if (hash !== undefined) out.hash = hash;
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out;
}

/** One short line of detail for a record (list, stats). */
export function detail(info: TaskInfo): string {
  switch (info.state) {
    case 'running':
      return info.ownerAlive
        ? `lease ${duration(info.leaseRemainingMs)}${info.progress === undefined ? '' : `, progress ${info.progress}`}`
        : 'orphaned (owner session gone)';
    case 'done':
      return info.result === undefined ? '' : `result ${short(info.result, 60)}`;
    case 'failed':
      return `${info.error ? `${info.error.name}: ${short(info.error.message, 50)}` : ''}${
        info.deadlineInMs !== undefined && info.deadlineInMs > 0
          ? ` (retry in ${duration(info.deadlineInMs)})`
          : ''
      }`;
    default:
      return 'handed over, claimable';
  }
}

/** The human-readable form of one record (`pairlock inspect`). */
export function describeTask(info: TaskInfo, hash?: string): string[] {
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`${`${k}:`.padEnd(12)} ${printable(v)}`);
  row('task', hash === undefined ? info.taskId : `${info.taskId} (field of hash ${hash})`);
  row('state', info.state);
  row('token', String(info.token));
  row('attempt', String(info.attempt));
  row('worker', info.worker);
  row('session', `${info.session} (${info.ownerAlive ? 'alive' : 'gone'})`);
  row('claimed', iso(info.claimedAt));
  row('updated', iso(info.updatedAt));
  if (info.state === 'running') {
    row(
      'lease',
      info.ownerAlive
        ? `${duration(info.leaseRemainingMs)} left`
        : 'orphaned: a peer may take it over',
    );
    row('deadline', `in ${duration(info.deadlineInMs)}`);
  }
  if (info.state === 'failed' && info.deadlineInMs !== undefined) {
    row(
      'retry',
      info.deadlineInMs > 0
        ? `not before ${duration(info.deadlineInMs)}`
        : 'allowed now (if attempts remain)',
    );
  }
  if (info.progress !== undefined) row('progress', String(info.progress));
  if (info.note !== undefined) row('note', JSON.stringify(info.note));
  if (info.result !== undefined) row('result', JSON.stringify(info.result));
  if (info.error !== undefined) {
    row(
      'error',
      `${info.error.name}: ${info.error.message}${info.error.code ? ` [${info.error.code}]` : ''}`,
    );
  }
  row('kept', info.keepMs < 0 ? 'no expiry' : `${duration(info.keepMs)} more`);
  return lines;
}

/** Left-aligned columns, every cell passed through printable(). */
export function table(header: string[], cells: string[][]): string[] {
  // escaped before the widths are measured: a cell with control characters keeps its column
  const rows = cells.map((r) => r.map(printable));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [fmt(header), ...rows.map(fmt)];
}
