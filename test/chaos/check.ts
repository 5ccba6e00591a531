/**
 * The chaos checker. Reads a run directory (the JSON-line logs of the orchestrator and of
 * every worker process, the sink's journal and values, the final task records) and verifies:
 *
 *   lost tasks = 0             every released task reached an outcome (done, or failed with a
 *                              reason) on both sides of its pair, and Redis holds it settled
 *   fenced double commits = 0  the sink never accepted a token that was not higher than every
 *                              token it had accepted for the task, no token was held by two
 *                              sessions, and the effect that stands is the final grant's
 *   stale settles accepted = 0 no settle was accepted for a token older than the newest grant
 *   disagreements = 0          every participant of a pair got the same outcome, and it is the
 *                              one Redis holds
 *   unattributed duplicates = 0  two executions of a task overlapping in time happen only where
 *                              the older holder was paused, cut off, delayed or Redis restarted
 *   unexpected worker exits = 0
 *
 * and reports takeover latencies (fault start → took-over). Exit code 1 when an invariant fails.
 *
 *   tsx test/chaos/check.ts <run directory>
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type FaultKind,
  faultKinds,
  type ParentLine,
  percentile,
  SIDES,
  type SinkEntry,
  type TaskSpec,
  type WorkerLine,
} from './common.js';

interface Exec {
  task: string;
  token: number;
  instance: string;
  slot: number;
  start: number;
  end: number;
  endKnown: boolean;
  status: string;
}

interface FaultInterval {
  kind: FaultKind;
  /** undefined: every slot (Redis restart). */
  slot: number | undefined;
  start: number;
  end: number;
}

export interface Duplicate {
  task: string;
  olderToken: number;
  newerToken: number;
  olderInstance: string;
  newerInstance: string;
  overlapMs: number;
  cause: string;
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
  runErrors: { retried: number; final: number };
  lost: string[];
  fencedDoubleCommits: string[];
  finalEffectMismatch: string[];
  keptResults: number;
  staleSettlesAccepted: string[];
  disagreements: string[];
  duplicates: Duplicate[];
  sameTokenReexecutions: string[];
  recommits: number;
  unexpectedExits: number;
  takeover: Record<string, { n: number; p50?: number; p99?: number; max?: number }>;
  problems: string[];
}

function readLines<T>(file: string): T[] {
  const out: T[] = [];
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch {
      // a torn last line of a killed process: nothing after it was acknowledged
    }
  }
  return out;
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

const short = (s: string) => JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);

export function check(dir: string): Report {
  const plan = JSON.parse(readFileSync(path.join(dir, 'plan.json'), 'utf8')) as {
    seed: number;
    tasks: TaskSpec[];
  };
  const summary = JSON.parse(readFileSync(path.join(dir, 'summary.json'), 'utf8')) as {
    seed: number;
    topology?: string;
    released: number;
    faults: Record<string, number>;
    faultsSkipped: Record<string, number>;
    unexpectedExits: number;
    endReason: string;
    durationSec: number;
    command: string;
  };
  const sink = JSON.parse(readFileSync(path.join(dir, 'sink.json'), 'utf8')) as {
    journal: SinkEntry[];
    values: Record<string, { token: number; value: string } | null>;
  };
  const records = JSON.parse(readFileSync(path.join(dir, 'records.json'), 'utf8')) as Record<
    string,
    { state?: string; token?: number; worker?: string; result?: unknown; error?: unknown } | null
  >;
  const parent = readLines<ParentLine>(path.join(dir, 'parent.log'));
  const released = plan.tasks.slice(0, summary.released);
  const problems: string[] = [];

  // ---- processes and faults --------------------------------------------------------
  const exitAt = new Map<string, number>();
  const slotOf = new Map<string, number>();
  for (const l of parent) {
    if (l.ev === 'exit') exitAt.set(l.p, l.t);
    if (l.ev === 'spawn') slotOf.set(l.p, l.w);
  }
  const endOfRun = parent.reduce((m, l) => Math.max(m, l.t), 0);
  /** Stalls of the orchestrator, which carries every worker's link to Redis. */
  const parentLags = parent.flatMap((l) =>
    l.ev === 'lag' ? [{ start: l.t - l.ms, end: l.t }] : [],
  );
  const faults: FaultInterval[] = [];
  const open = new Map<string, FaultInterval>();
  for (const l of parent) {
    if (l.ev !== 'fault' || l.detail?.startsWith('skipped')) continue;
    const key = `${l.kind}:${l.kind === 'redis-restart' ? '' : l.w}`;
    if (l.phase === 'start') {
      const f: FaultInterval = {
        kind: l.kind,
        slot: l.kind === 'redis-restart' ? undefined : l.w,
        start: l.t,
        end: endOfRun,
      };
      faults.push(f);
      open.set(key, f);
    } else {
      const f = open.get(key);
      if (f) f.end = l.t;
      open.delete(key);
    }
  }

  // ---- worker logs -----------------------------------------------------------------
  const grants = new Map<
    string,
    { token: number; kind: string; instance: string; worker: string; t: number }[]
  >();
  const execs = new Map<string, Exec[]>();
  const settles = new Map<
    string,
    { token: number; state: string; instance: string; t: number }[]
  >();
  const outcomes = new Map<
    string,
    { line: Extract<WorkerLine, { ev: 'outcome' }>; instance: string; slot: number }[]
  >();
  const finalErrors = new Map<string, { slot: number; code: string; message: string }[]>();
  const sinkReplies = new Map<string, { token: number; ok: boolean; instance: string }[]>();
  const leaseLost: Record<string, number> = {};
  /** First lease-lost of (instance, task, token), and each instance's event-loop stalls. */
  const lostAt = new Map<string, number>();
  const lags = new Map<string, { start: number; end: number }[]>();
  let staleSettlesRejected = 0;
  let retried = 0;
  let finalRunErrors = 0;
  let executions = 0;

  for (const file of readdirSync(dir).filter((f) => /^w\d+\.\d+\.log$/.test(f))) {
    const instance = file.replace(/\.log$/, '');
    const slot = slotOf.get(instance) ?? Number(/^w(\d+)/.exec(instance)?.[1]);
    const lines = readLines<WorkerLine>(path.join(dir, file));
    const workerId =
      (lines.find((l) => l.ev === 'start') as { worker?: string } | undefined)?.worker ?? instance;
    const openExec = new Map<string, Exec>();
    for (const l of lines) {
      switch (l.ev) {
        case 'claimed':
        case 'took-over':
          push(grants, l.task, {
            token: l.token,
            kind: l.kind,
            instance,
            worker: workerId,
            t: l.t,
          });
          break;
        case 'exec-start': {
          executions++;
          const e: Exec = {
            task: l.task,
            token: l.token,
            instance,
            slot,
            start: l.t,
            end: exitAt.get(instance) ?? endOfRun,
            endKnown: false,
            status: 'killed',
          };
          openExec.set(`${l.task}#${l.token}`, e);
          push(execs, l.task, e);
          break;
        }
        case 'exec-end': {
          const e = openExec.get(`${l.task}#${l.token}`);
          if (e) {
            e.end = l.t;
            e.endKnown = true;
            e.status = l.status;
          }
          break;
        }
        case 'sink':
          push(sinkReplies, l.task, { token: l.token, ok: l.ok, instance });
          break;
        case 'settled':
          push(settles, l.task, { token: l.token, state: l.state, instance, t: l.t });
          break;
        case 'lease-lost':
          leaseLost[l.reason] = (leaseLost[l.reason] ?? 0) + 1;
          if (!lostAt.has(`${instance}#${l.task}#${l.token}`))
            lostAt.set(`${instance}#${l.task}#${l.token}`, l.t);
          if (l.reason === 'rejected') staleSettlesRejected++;
          break;
        case 'outcome':
          push(outcomes, l.task, { line: l, instance, slot });
          break;
        case 'lag':
          push(lags, instance, { start: l.t - l.ms, end: l.t });
          break;
        case 'run-error':
          if (l.final) {
            finalRunErrors++;
            push(finalErrors, l.task, { slot, code: l.code, message: l.message });
          } else retried++;
          break;
        default:
          break;
      }
    }
  }

  // ---- lost tasks -------------------------------------------------------------------
  const lost: string[] = [];
  let done = 0;
  let failed = 0;
  for (const spec of released) {
    const outs = outcomes.get(spec.id) ?? [];
    const errs = finalErrors.get(spec.id) ?? [];
    const first = outs[0]?.line;
    if (first?.state === 'done') done++;
    else if (first?.state === 'failed') failed++;
    const why: string[] = [];
    for (let side = 0; side < SIDES; side++) {
      const slot = spec.pair * SIDES + side;
      const has =
        outs.some((o) => o.slot === slot) || errs.some((e) => e.slot === slot && e.message !== '');
      if (!has) why.push(`side w${slot} has no outcome`);
    }
    for (const o of outs) {
      if (o.line.state === 'failed' && !o.line.error?.message)
        why.push(`failed without a reason on ${o.instance}`);
    }
    const rec = records[spec.id];
    if (!rec || (rec.state !== 'done' && rec.state !== 'failed')) {
      why.push(`Redis holds ${rec ? `state ${rec.state ?? JSON.stringify(rec)}` : 'no record'}`);
    }
    if (why.length > 0) lost.push(`${short(spec.id)}: ${why.join('; ')}`);
  }

  // ---- fencing ---------------------------------------------------------------------
  const fencedDoubleCommits: string[] = [];
  const finalEffectMismatch: string[] = [];
  /** Done under a later grant than the execution that produced the result (a kept result). */
  let keptResults = 0;
  const accepted = new Map<string, SinkEntry[]>();
  let rejectedWrites = 0;
  const maxByTask = new Map<string, number>();
  const holderOfToken = new Map<string, string>();
  for (const entry of sink.journal) {
    const max = maxByTask.get(entry.task) ?? 0;
    const ok = entry.token > max;
    if (ok) {
      maxByTask.set(entry.task, entry.token);
      push(accepted, entry.task, entry);
    } else rejectedWrites++;
    const key = `${entry.task}#${entry.token}`;
    const holder = holderOfToken.get(key);
    if (holder !== undefined && holder !== entry.session) {
      fencedDoubleCommits.push(
        `${short(entry.task)}: token ${entry.token} held by ${holder} and ${entry.session}`,
      );
    }
    holderOfToken.set(key, entry.session);
  }
  // the sink's own answers, as the writers logged them, against the journal's replay (in order)
  const replayed = new Map<string, boolean[]>();
  {
    const max = new Map<string, number>();
    for (const e of sink.journal) {
      const ok = e.token > (max.get(e.task) ?? 0);
      if (ok) max.set(e.task, e.token);
      push(replayed, `${e.task}#${e.token}#${e.p}`, ok);
    }
  }
  for (const [task, replies] of sinkReplies) {
    const seenPerKey = new Map<string, number>();
    for (const r of replies) {
      const key = `${task}#${r.token}#${r.instance}`;
      const n = seenPerKey.get(key) ?? 0;
      seenPerKey.set(key, n + 1);
      const acc = replayed.get(key)?.[n];
      if (acc !== r.ok) {
        fencedDoubleCommits.push(
          `${short(task)}: the sink answered ${r.ok ? 'accepted' : 'rejected'} for token ${r.token} (${r.instance}) but its journal replays to ${acc === undefined ? 'no write' : acc ? 'accepted' : 'rejected'}`,
        );
      }
    }
  }
  // grants: one session per (task, token)
  for (const [task, list] of grants) {
    const seen = new Map<number, string>();
    for (const g of list) {
      const other = seen.get(g.token);
      if (other !== undefined && other !== g.instance) {
        fencedDoubleCommits.push(
          `${short(task)}: token ${g.token} granted to ${other} and ${g.instance}`,
        );
      }
      seen.set(g.token, g.instance);
    }
  }
  for (const spec of released) {
    const value = sink.values[spec.id];
    const max = maxByTask.get(spec.id);
    if ((value?.token ?? undefined) !== max) {
      fencedDoubleCommits.push(
        `${short(spec.id)}: the sink holds token ${value?.token} but accepted up to ${max}`,
      );
    }
    const rec = records[spec.id];
    if (rec?.state === 'done') {
      // the effect that stands must be the one made by the execution whose result everyone
      // got (the result names its grant: { token, by })
      const result = (rec.result ?? {}) as { token?: number; by?: string };
      let standing: { token?: number; by?: string } = {};
      try {
        standing = JSON.parse(value?.value ?? '{}') as typeof standing;
      } catch {
        standing = {};
      }
      if (standing.token !== result.token || standing.by !== result.by) {
        finalEffectMismatch.push(
          `${short(spec.id)}: done@${rec.token} reports the result of token ${result.token} (${result.by}), but the effect that stands is token ${standing.token} (${standing.by})`,
        );
      }
      if (result.token !== undefined && result.token !== rec.token) keptResults++;
    }
    if (rec?.state === 'failed' && value && rec.token !== undefined && value.token > rec.token) {
      finalEffectMismatch.push(
        `${short(spec.id)}: failed at token ${rec.token}, but an effect with token ${value.token} stands`,
      );
    }
  }

  // ---- stale settles ---------------------------------------------------------------
  const staleSettlesAccepted: string[] = [];
  for (const [task, list] of settles) {
    const gs = grants.get(task) ?? [];
    const rec = records[task];
    for (const s of list) {
      if (s.state === 'done') {
        const newer = gs.find((g) => g.token > s.token);
        if (newer) {
          staleSettlesAccepted.push(
            `${short(task)}: done settled with token ${s.token} by ${s.instance}, but token ${newer.token} was granted (${newer.kind})`,
          );
        }
        if (rec?.token !== undefined && rec.token !== s.token) {
          staleSettlesAccepted.push(
            `${short(task)}: done settled with token ${s.token} by ${s.instance}, but Redis ends at token ${rec.token}`,
          );
        }
      } else {
        const next = gs.find((g) => g.token === s.token + 1);
        if (next && next.kind !== 'retry') {
          staleSettlesAccepted.push(
            `${short(task)}: failed settled with token ${s.token} by ${s.instance}, after token ${next.token} was granted by ${next.kind}`,
          );
        }
      }
    }
  }

  // ---- agreement -------------------------------------------------------------------
  const disagreements: string[] = [];
  for (const spec of released) {
    const outs = outcomes.get(spec.id) ?? [];
    const rec = records[spec.id];
    const views = new Set<string>();
    for (const o of outs) {
      const l = o.line;
      views.add(
        JSON.stringify([l.state, l.token, l.worker, l.result ?? null, l.error?.message ?? null]),
      );
      if (rec?.state !== undefined && (rec.state !== l.state || rec.token !== l.token)) {
        disagreements.push(
          `${short(spec.id)}: ${o.instance} got ${l.state}@${l.token}, Redis holds ${rec.state}@${rec.token}`,
        );
      }
    }
    if (views.size > 1)
      disagreements.push(
        `${short(spec.id)}: ${views.size} different outcomes: ${[...views].join(' | ')}`,
      );
  }

  // ---- duplicate executions ------------------------------------------------------
  const duplicates: Duplicate[] = [];
  const faultsOn = (slot: number, from: number, to: number) =>
    faults.filter(
      (f) => (f.slot === undefined || f.slot === slot) && f.start <= to && f.end >= from - 1,
    );
  for (const [task, list] of execs) {
    const sorted = [...list].sort((a, b) => a.token - b.token);
    for (let i = 0; i < sorted.length; i++) {
      for (let j = i + 1; j < sorted.length; j++) {
        const a = sorted[i];
        const b = sorted[j];
        if (!a || !b || a.token === b.token) continue;
        if (b.start >= a.end) continue;
        const hits = faultsOn(a.slot, a.start, b.start);
        let cause = hits.length > 0 ? [...new Set(hits.map((f) => f.kind))].join('+') : 'none';
        if (cause === 'none') {
          const knew = (lostAt.get(`${a.instance}#${task}#${a.token}`) ?? Infinity) <= b.start;
          const stalled = [...(lags.get(a.instance) ?? []), ...parentLags].some(
            (l) => l.end >= a.start && l.start <= b.start,
          );
          if (knew) cause = 'handler ignored its abort signal';
          else if (stalled) cause = 'event-loop stall';
        }
        duplicates.push({
          task,
          olderToken: a.token,
          newerToken: b.token,
          olderInstance: a.instance,
          newerInstance: b.instance,
          overlapMs: Math.round(Math.min(a.end, b.end) - b.start),
          cause,
        });
      }
    }
  }
  // one grant, one execution: the fence cannot tell two executions of one token apart
  const sameTokenReexecutions: string[] = [];
  for (const [task, list] of execs) {
    const byToken = new Map<number, Exec[]>();
    for (const e of list) push(byToken, e.token, e);
    for (const [token, es] of byToken) {
      if (es.length > 1) {
        sameTokenReexecutions.push(
          `${short(task)}: token ${token} executed ${es.length} times (${es.map((e) => `${e.instance} ${e.status}`).join(', ')})`,
        );
      }
    }
  }
  let recommits = 0;
  for (const list of accepted.values()) if (list.length > 1) recommits += list.length - 1;

  // ---- takeover latency ------------------------------------------------------------
  const lat: Record<string, number[]> = {};
  const instanceSlot = (instance: string) =>
    slotOf.get(instance) ?? Number(/^w(\d+)/.exec(instance)?.[1]);
  for (const list of grants.values()) {
    for (const g of list) {
      if (
        g.kind !== 'session-expired' &&
        g.kind !== 'deadline-passed' &&
        g.kind !== 'connection-lost'
      )
        continue;
      // the previous holder: the grant of token - 1
      const prev = list.find((x) => x.token === g.token - 1);
      const prevSlot = prev ? instanceSlot(prev.instance) : undefined;
      // the peer's takeover (a restarted process taking back its own task is not one)
      if (prevSlot === undefined || prevSlot === instanceSlot(g.instance)) continue;
      // the fault that hit the previous holder during its lease (the latest to begin)
      const candidates = faults.filter(
        (f) =>
          (f.slot === undefined || f.slot === prevSlot) &&
          f.start <= g.t &&
          f.end >= (prev?.t ?? 0) - 1,
      );
      const f = candidates.sort((x, y) => y.start - x.start)[0];
      const kind = f?.kind ?? 'no fault';
      const from = Math.max(f?.start ?? prev?.t ?? g.t, prev?.t ?? 0);
      const ms = g.t - from;
      // only a healthy peer's reaction time: skip takeovers by a peer that was faulted itself
      const takerSlot = instanceSlot(g.instance);
      if (faults.some((x) => x.slot === takerSlot && x.start <= g.t && x.end >= from)) continue;
      // connection-lost takeovers (a holder's connection seen gone) are also shown apart
      const keys = g.kind === 'connection-lost' ? [kind, 'all', 'connection-lost'] : [kind, 'all'];
      for (const k of keys) {
        const list = lat[k] ?? [];
        list.push(ms);
        lat[k] = list;
      }
    }
  }
  const takeover: Report['takeover'] = {};
  for (const [k, v] of Object.entries(lat)) {
    const s = v.sort((a, b) => a - b);
    takeover[k] = {
      n: s.length,
      p50: percentile(s, 50),
      p99: percentile(s, 99),
      max: s[s.length - 1],
    };
  }

  const grantKinds: Record<string, number> = {};
  for (const list of grants.values())
    for (const g of list) grantKinds[g.kind] = (grantKinds[g.kind] ?? 0) + 1;

  const unattributed = duplicates.filter((d) => d.cause === 'none');
  if (summary.released < plan.tasks.length)
    problems.push(`only ${summary.released} of ${plan.tasks.length} tasks were released in time`);
  const ok =
    lost.length === 0 &&
    fencedDoubleCommits.length === 0 &&
    finalEffectMismatch.length === 0 &&
    staleSettlesAccepted.length === 0 &&
    disagreements.length === 0 &&
    unattributed.length === 0 &&
    sameTokenReexecutions.length === 0 &&
    summary.unexpectedExits === 0;

  return {
    ok,
    seed: summary.seed,
    topology: summary.topology ?? 'single Redis',
    command: summary.command,
    planned: plan.tasks.length,
    released: summary.released,
    durationSec: summary.durationSec,
    endReason: summary.endReason,
    faults: summary.faults,
    faultsSkipped: summary.faultsSkipped,
    outcomes: { done, failed },
    grants: grantKinds,
    executions,
    sinkWrites: {
      accepted: [...accepted.values()].reduce((n, l) => n + l.length, 0),
      rejected: rejectedWrites,
    },
    staleSettlesRejected,
    leaseLost,
    runErrors: { retried, final: finalRunErrors },
    lost,
    fencedDoubleCommits,
    finalEffectMismatch,
    keptResults,
    staleSettlesAccepted,
    disagreements,
    duplicates,
    sameTokenReexecutions,
    recommits,
    unexpectedExits: summary.unexpectedExits,
    takeover,
    problems,
  };
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
  rows.push([
    'grants by kind',
    fmtMap(r.grants, ['fresh', 'session-expired', 'deadline-passed', 'retry', 'handover']),
    '',
  ]);
  rows.push(['handler executions', String(r.executions), '']);
  rows.push([
    'sink writes accepted / rejected (fenced out)',
    `${r.sinkWrites.accepted} / ${r.sinkWrites.rejected}`,
    '',
  ]);
  rows.push(['stale settles rejected by Redis', String(r.staleSettlesRejected), '']);
  rows.push(['lease losses seen by holders', fmtMap(r.leaseLost), '']);
  rows.push(['run() redelivered after unavailability', String(r.runErrors.retried), '']);
  inv('lost tasks', r.lost.length);
  inv('fenced double commits', r.fencedDoubleCommits.length);
  inv('final effect ≠ outcome', r.finalEffectMismatch.length);
  rows.push(['results settled under a later grant (kept results)', String(r.keptResults), '']);
  inv('stale settles accepted', r.staleSettlesAccepted.length);
  inv('pair disagreements', r.disagreements.length);
  const byCause: Record<string, number> = {};
  for (const d of r.duplicates) byCause[d.cause] = (byCause[d.cause] ?? 0) + 1;
  const unattributed = byCause.none ?? 0;
  delete byCause.none;
  rows.push([
    'unfenced duplicate executions (overlapping)',
    `${r.duplicates.length - unattributed}${r.duplicates.length - unattributed > 0 ? ` (${fmtMap(byCause)})` : ''}`,
    'allowed',
  ]);
  inv('duplicate executions without a fault', unattributed);
  inv('grants executed twice (same token)', r.sameTokenReexecutions.length);
  rows.push(['effects committed more than once (at-least-once)', String(r.recommits), '']);
  inv('unexpected worker exits', r.unexpectedExits);
  for (const [k, v] of Object.entries(r.takeover).sort()) {
    rows.push([
      `takeover by a healthy peer after ${k} (ms, n=${v.n})`,
      `p50 ${v.p50?.toFixed(0)}, p99 ${v.p99?.toFixed(0)}, max ${v.max?.toFixed(0)}`,
      '',
    ]);
  }
  rows.push(['run time', `${r.durationSec} s (${r.endReason})`, '']);

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
    ['unattributed-duplicates', unattributed],
    ['same-token-reexecutions', r.sameTokenReexecutions.length],
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
    for (const x of list.slice(0, 20)) out.push(`  - ${x}`);
    if (list.length > 20) out.push(`  … ${list.length - 20} more`);
  };
  detail('lost', r.lost);
  detail('fenced double commits', r.fencedDoubleCommits);
  detail('final effect mismatch', r.finalEffectMismatch);
  detail('stale settles accepted', r.staleSettlesAccepted);
  detail('disagreements', r.disagreements);
  detail('grants executed twice', r.sameTokenReexecutions);
  detail(
    'duplicate executions',
    r.duplicates.map(
      (d) =>
        `${short(d.task)}: token ${d.olderToken} (${d.olderInstance}) still ran ${d.overlapMs} ms into token ${d.newerToken} (${d.newerInstance}); cause: ${d.cause}`,
    ),
  );
  detail('notes', r.problems);
  return out.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: tsx test/chaos/check.ts <run directory>');
    process.exit(2);
  }
  const report = check(dir);
  console.log(formatReport(report));
  process.exit(report.ok ? 0 : 1);
}
