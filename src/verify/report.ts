/** The checker's report, and its table (as `npm run chaos` and `pairlock verify` print it). */
import { printable } from '../cli/format.js';
import { grantKinds } from '../shared/codes.js';
import { faultKinds } from './common.js';
import { short } from './evidence.js';

export interface Duplicate {
  task: string;
  olderToken: number;
  newerToken: number;
  olderInstance: string;
  newerInstance: string;
  overlapMs: number;
  cause: string;
  /** Explained by a fault under which the older holder could not know (see overlapFaults). */
  allowed: boolean;
}

/** An execution of a task after its first, and what made it necessary (see check.ts). */
export interface Reexecution {
  task: string;
  token: number;
  instance: string;
  /** The execution before it (the next lower token). */
  previousToken: number;
  previousInstance: string;
  previousStatus: string;
  cause: string;
  /** Explained by a failure, a handover, a deadline, or a fault that could make it necessary. */
  allowed: boolean;
}

export interface Report {
  ok: boolean;
  seed: number;
  topology: string;
  command: string;
  planned: number;
  released: number;
  durationSec: number;
  endReason: string;
  faults: Record<string, number>;
  faultsSkipped: Record<string, number>;
  outcomes: { done: number; failed: number };
  grants: Record<string, number>;
  executions: number;
  sinkWrites: { accepted: number; rejected: number };
  staleSettlesRejected: number;
  leaseLost: Record<string, number>;
  /**
   * Leases lost for reason `connection`, by the fault that closed or cut the holder's
   * connection; those no such fault explains (an invariant: none).
   */
  connectionLosses: { attributed: Record<string, number>; unattributed: string[] };
  /** Times a holder's proofs fell late on a connection that stood (lease-doubt). */
  doubts: number;
  runErrors: { retried: number; final: number };
  lost: string[];
  fencedDoubleCommits: string[];
  finalEffectMismatch: string[];
  keptResults: number;
  staleSettlesAccepted: string[];
  disagreements: string[];
  duplicates: Duplicate[];
  sameTokenReexecutions: string[];
  reexecutions: Reexecution[];
  /** run() calls made (and aborted by their caller), the longest one (ms), and the bounds. */
  runCalls: {
    count: number;
    longestMs: number;
    boundMs: number;
    noticeMs: number;
    /** The bounds of each pair, where the pairs' session timings differ. */
    perPair?: { runMs: number; noticeMs: number }[];
    aborted: number;
  };
  hungRunCalls: string[];
  recommits: number;
  unexpectedExits: number;
  takeover: Record<string, { n: number; p50?: number; p99?: number; max?: number }>;
  problems: string[];
}

/** The cause check.ts gives an overlap whose older holder was told in time and ran on. */
const IGNORED_SIGNAL = 'handler ignored its abort signal';

type Latency = Report['takeover'][string];

const latency = (v: Latency) =>
  `p50 ${v.p50?.toFixed(0)}, p99 ${v.p99?.toFixed(0)}, max ${v.max?.toFixed(0)} (n=${v.n})`;

/** What a takeover-latency key of check.ts means, in a row's words. */
function takeoverLabel(k: string): string {
  if (k === 'all') return 'takeover by a healthy peer, any cause (ms)';
  if (k === 'connection-lost')
    return 'takeover by a healthy peer on evidence of a closed connection (ms)';
  if (k === 'deadline overrun')
    return 'takeover by a healthy peer after a planned deadline overrun, no injected fault (ms)';
  if (k === 'no fault' || k === 'no injected fault')
    return 'takeover by a healthy peer after no injected fault (a stall of the holder) (ms)';
  return `takeover by a healthy peer after ${k} (ms)`;
}

/**
 * One row per fault kind: the latency over both pairs, then each pair's own (the pairs keep
 * different session TTLs, keys `<kind>, session TTL <n> s`), in the same row.
 */
function takeoverRows(takeover: Report['takeover']): [string, string, string][] {
  const perPair = new Map<string, string[]>();
  const base: [string, Latency][] = [];
  for (const [k, v] of Object.entries(takeover).sort()) {
    const m = /^(.*), (session TTL .*)$/.exec(k);
    if (!m) {
      base.push([k, v]);
      continue;
    }
    const [, kind = '', ttl = ''] = m;
    const list = perPair.get(kind) ?? [];
    list.push(`${ttl}: ${latency(v)}`);
    perPair.set(kind, list);
  }
  return base.map(([k, v]) => {
    const pairs = perPair.get(k) ?? [];
    return [
      takeoverLabel(k),
      `${latency(v)}${pairs.length > 0 ? `; ${pairs.join('; ')}` : ''}`,
      '',
    ];
  });
}

const fmtMap = (m: Record<string, number>, order: readonly string[] = []) => {
  const keys = [
    ...order.filter((k) => k in m),
    ...Object.keys(m)
      .filter((k) => !order.includes(k))
      .sort(),
  ];
  return keys.length === 0 ? '—' : keys.map((k) => `${k} ${m[k]}`).join(', ');
};

/** The report as a Markdown table, then the invariants line (PASS or FAIL) and any details. */
export function formatReport(r: Report): string {
  const rows: [string, string, string][] = [];
  const inv = (name: string, n: number, detail = '') =>
    rows.push([name, `${n}${detail}`, n === 0 ? 'ok' : 'FAIL']);
  const total = Object.values(r.faults).reduce((a, b) => a + b, 0);
  rows.push(['seed', String(r.seed), '']);
  rows.push(['topology', r.topology, '']);
  rows.push(['tasks released / planned', `${r.released} / ${r.planned}`, '']);
  rows.push(['outcomes', `done ${r.outcomes.done}, failed ${r.outcomes.failed}`, '']);
  rows.push(['faults injected', `${total}: ${fmtMap(r.faults, faultKinds)}`, '']);
  // drawn but not injected (another node fault under way, no live worker, …)
  if (Object.keys(r.faultsSkipped ?? {}).length > 0)
    rows.push(['faults skipped', fmtMap(r.faultsSkipped, faultKinds), '']);
  rows.push(['grants by kind', fmtMap(r.grants, grantKinds), '']);
  rows.push(['handler executions', String(r.executions), '']);
  rows.push([
    'sink writes accepted / rejected (fenced out)',
    `${r.sinkWrites.accepted} / ${r.sinkWrites.rejected}`,
    '',
  ]);
  rows.push(['stale settles rejected by Redis', String(r.staleSettlesRejected), '']);
  rows.push(['lease losses seen by holders', fmtMap(r.leaseLost), '']);
  const connAttributed = Object.values(r.connectionLosses.attributed).reduce((a, b) => a + b, 0);
  rows.push([
    'connection losses, by the fault that closed or cut the connection',
    `${connAttributed}${connAttributed > 0 ? ` (${fmtMap(r.connectionLosses.attributed)})` : ''}`,
    'allowed',
  ]);
  inv('connection losses with no such fault', r.connectionLosses.unattributed.length);
  rows.push(['lease doubts (proofs late, connection standing)', String(r.doubts), '']);
  rows.push(['run() redelivered after unavailability', String(r.runErrors.retried), '']);
  inv('lost tasks', r.lost.length);
  inv('fenced double commits', r.fencedDoubleCommits.length);
  inv('final effect ≠ outcome', r.finalEffectMismatch.length);
  rows.push(['results settled under a later grant (kept results)', String(r.keptResults), '']);
  inv('stale settles accepted', r.staleSettlesAccepted.length);
  inv('pair disagreements', r.disagreements.length);
  const allowedBy: Record<string, number> = {};
  const unexplainedBy: Record<string, number> = {};
  for (const d of r.duplicates) {
    const m = d.allowed ? allowedBy : unexplainedBy;
    m[d.cause] = (m[d.cause] ?? 0) + 1;
  }
  const allowedCount = r.duplicates.filter((d) => d.allowed).length;
  const unexplained = r.duplicates.length - allowedCount;
  rows.push([
    'overlapping executions (holder frozen, cut off, or told)',
    `${allowedCount}${allowedCount > 0 ? ` (${fmtMap(allowedBy)})` : ''}`,
    'allowed',
  ]);
  inv(
    'overlapping executions not caused by pause, cut or partition',
    unexplained,
    unexplained > 0 ? ` (${fmtMap(unexplainedBy)})` : '',
  );
  inv('grants executed twice (same token)', r.sameTokenReexecutions.length);
  const causedBy: Record<string, number> = {};
  for (const x of r.reexecutions) if (x.allowed) causedBy[x.cause] = (causedBy[x.cause] ?? 0) + 1;
  const reexecCaused = r.reexecutions.filter((x) => x.allowed).length;
  const reexecUnexplained = r.reexecutions.length - reexecCaused;
  rows.push([
    're-executions, by cause',
    `${reexecCaused}${reexecCaused > 0 ? ` (${fmtMap(causedBy)})` : ''}`,
    'allowed',
  ]);
  inv('re-executions without a cause (a stall nobody acted on)', reexecUnexplained);
  rows.push([
    'run() calls (aborted by the caller)',
    `${r.runCalls.count} (${r.runCalls.aborted}), longest ${(r.runCalls.longestMs / 1_000).toFixed(1)} s`,
    '',
  ]);
  const s = (ms: number) => `${ms / 1_000} s`;
  const perPair = r.runCalls.perPair;
  inv(
    perPair && perPair.length > 1
      ? `run() calls unanswered within ${perPair.map((b) => s(b.runMs)).join(' / ')} (${perPair.map((b) => s(b.noticeMs)).join(' / ')} after the outcome; by pair)`
      : `run() calls unanswered within ${s(r.runCalls.boundMs)} (${s(r.runCalls.noticeMs)} after the outcome)`,
    r.hungRunCalls.length,
  );
  rows.push(['effects committed more than once (at-least-once)', String(r.recommits), '']);
  inv('unexpected worker exits', r.unexpectedExits);
  rows.push(...takeoverRows(r.takeover));
  rows.push(['run time', `${r.durationSec} s (${r.endReason})`, '']);
  // names and messages may hold a task id's control characters: escaped before measuring
  for (const row of rows) for (let i = 0; i < 3; i++) row[i] = printable(row[i] ?? '');

  const w0 = Math.max(5, ...rows.map((x) => x[0].length));
  const w1 = Math.max(5, ...rows.map((x) => x[1].length));
  const w2 = Math.max(9, ...rows.map((x) => x[2].length));
  const line = (a: string, b: string, c: string) =>
    `| ${a.padEnd(w0)} | ${b.padEnd(w1)} | ${c.padEnd(w2)} |`;
  const out = [
    line('check', 'value', 'invariant'),
    `|${'-'.repeat(w0 + 2)}|${'-'.repeat(w1 + 2)}|${'-'.repeat(w2 + 2)}|`,
  ];
  for (const [a, b, c] of rows) out.push(line(a, b, c));
  const failures = [
    ['lost', r.lost.length],
    ['fenced-double-commits', r.fencedDoubleCommits.length],
    ['final-effect-mismatch', r.finalEffectMismatch.length],
    ['stale-settles-accepted', r.staleSettlesAccepted.length],
    ['disagreements', r.disagreements.length],
    ['unexplained-overlaps', unexplained],
    ['same-token-reexecutions', r.sameTokenReexecutions.length],
    ['unexplained-reexecutions', reexecUnexplained],
    ['unattributed-connection-losses', r.connectionLosses.unattributed.length],
    ['hung-run-calls', r.hungRunCalls.length],
    ['unexpected-exits', r.unexpectedExits],
  ] as const;
  out.push('');
  out.push(
    `invariants: ${r.ok ? 'PASS' : 'FAIL'} (${failures.map(([k, v]) => `${k}=${v}`).join(', ')})`,
  );
  out.push(`reproduce: ${r.command}`);
  const detail = (title: string, list: string[]) => {
    if (list.length === 0) return;
    out.push(`${title} (${list.length}):`);
    for (const x of list.slice(0, 20)) out.push(`  - ${printable(x)}`);
    if (list.length > 20) out.push(`  … ${list.length - 20} more`);
  };
  detail('lost', r.lost);
  detail('fenced double commits', r.fencedDoubleCommits);
  detail('final effect mismatch', r.finalEffectMismatch);
  detail('stale settles accepted', r.staleSettlesAccepted);
  detail('disagreements', r.disagreements);
  detail('grants executed twice', r.sameTokenReexecutions);
  detail(
    're-executions without a cause',
    r.reexecutions
      .filter((x) => !x.allowed)
      .map(
        (x) =>
          `${short(x.task)}: token ${x.token} (${x.instance}) ran again after token ${x.previousToken} (${x.previousInstance}, ${x.previousStatus}); ${x.cause}`,
      ),
  );
  detail(
    'connection losses with no fault that closed or cut the connection',
    r.connectionLosses.unattributed,
  );
  detail('hung run() calls', r.hungRunCalls);
  detail(
    'overlapping executions not caused by pause, cut or partition',
    r.duplicates
      .filter((d) => !d.allowed)
      .map(
        (d) =>
          `${short(d.task)}: token ${d.olderToken} (${d.olderInstance}) still ran ${d.overlapMs} ms into token ${d.newerToken} (${d.newerInstance}); cause: ${d.cause}`,
      ),
  );
  detail(
    'overlapping executions (allowed)',
    r.duplicates
      .filter((d) => d.allowed)
      .map(
        (d) =>
          `${short(d.task)}: token ${d.olderToken} (${d.olderInstance}) still ran ${d.overlapMs} ms into token ${d.newerToken} (${d.newerInstance}); cause: ${d.cause}`,
      ),
  );
  detail('notes', r.problems);
  if (r.duplicates.some((d) => d.cause === IGNORED_SIGNAL)) {
    out.push(
      `"${IGNORED_SIGNAL}": the run's own test handlers; about half of the tasks get one that ignores its abort signal on purpose, so that the fence is seen refusing its late writes (no handler of yours runs in a verify run)`,
    );
  }
  return out.map(printable).join('\n');
}
