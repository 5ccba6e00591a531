import { attributeCauses, faultView } from './causes.js';
import {
  LAG_LOG_MS,
  LAG_SAMPLE_MS,
  overlapFaults,
  percentile,
  SIDES,
  type SinkEntry,
  timingOf,
} from './common.js';
import { type Exec, loadEvidence, push, short } from './evidence.js';
import type { Duplicate, Report } from './report.js';

export { formatReport, type Report } from './report.js';

/**
 * A stall is logged once a sample comes LAG_LOG_MS after the previous one (sampled every
 * LAG_SAMPLE_MS): shorter ones go unseen, so that much lateness needs no logged stall.
 */
const STALL_SLACK_MS = LAG_LOG_MS - LAG_SAMPLE_MS;

export function check(dir: string): Report {
  const {
    plan,
    summary,
    sink,
    records,
    released,
    problems,
    exitAt,
    slotOf,
    endOfRun,
    parentLags,
    faults,
    grants,
    execs,
    settles,
    outcomes,
    finalErrors,
    sinkReplies,
    leaseLost,
    losses,
    lossOf,
    doubts,
    lostAt,
    lags,
    signalAt,
    runCalls,
    callerAborts,
    staleSettlesRejected,
    retried,
    finalRunErrors,
    executions,
  } = loadEvidence(dir);
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
          // a settle answered before the grant: either it was stale, or the grant calls a
          // retry of a failed record a takeover (both are wrong; the message says which order)
          const order =
            s.t < next.t
              ? `, yet token ${next.token} was then granted as ${next.kind} (${Math.round(next.t - s.t)} ms later): a stale settle, or a retry reported as a takeover`
              : `, after token ${next.token} was granted by ${next.kind}`;
          staleSettlesAccepted.push(
            `${short(task)}: failed settled with token ${s.token} by ${s.instance}${order}`,
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
  const nodes = summary.nodes ?? 1;
  const { faultsOn, majorityAway, coverage, kindsOf, majority } = faultView(faults, nodes);
  for (const [task, list] of execs) {
    const sorted = [...list].sort((a, b) => a.token - b.token);
    for (let i = 0; i < sorted.length; i++) {
      for (let j = i + 1; j < sorted.length; j++) {
        const a = sorted[i];
        const b = sorted[j];
        if (!a || !b || a.token === b.token) continue;
        if (b.start >= a.end) continue;
        const hits = faultsOn(a.slot, a.start, b.start);
        const frozen = hits.filter((f) => overlapFaults.includes(f.kind));
        const away = majorityAway(hits, a.start, b.start);
        const told = Math.min(
          lostAt.get(`${a.instance}#${task}#${a.token}`) ?? Infinity,
          signalAt.get(`${a.instance}#${task}#${a.token}`) ?? Infinity,
        );
        // frozen for as long as it was late: the stalls of the older holder (and of the
        // proxies) around the newer start cover the time until it was told (or, never told,
        // until its handler ended): a handler that ended by itself soon after the newer
        // start but was told only much later was not merely late on its timers
        const until = Number.isFinite(told) ? told : a.end;
        const stalled =
          coverage([...(lags.get(a.instance) ?? []), ...parentLags], b.start - 100, until) >=
          until - b.start - STALL_SLACK_MS;
        let cause: string;
        let allowed = true;
        if (frozen.length > 0) cause = kindsOf(frozen);
        else if (away.length > 0)
          cause = `${kindsOf(away)} (${nodes > 1 ? 'a majority of the nodes' : 'Redis'} away)`;
        else if (told <= b.start) cause = 'handler ignored its abort signal';
        else if (stalled) cause = 'event-loop stall';
        else {
          cause = hits.length > 0 ? kindsOf(hits) : 'none';
          allowed = false;
        }
        duplicates.push({
          task,
          olderToken: a.token,
          newerToken: b.token,
          olderInstance: a.instance,
          newerInstance: b.instance,
          overlapMs: Math.round(Math.min(a.end, b.end) - b.start),
          cause,
          allowed,
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

  // ---- a re-execution needs a cause; connection losses by the fault behind them ------
  const { reexecutions, connectionLosses } = attributeCauses({
    execs,
    grants,
    losses,
    lossOf,
    lags,
    parentLags,
    faultsOn,
    majorityAway,
    kindsOf,
    nodes,
    majority,
  });

  // ---- every run() call answers ----------------------------------------------------
  // Two bounds: on the whole call, and on how long it goes on once its task has an outcome
  // (a call that waits for an outcome Redis already holds is hung, whatever ends it later).
  const anyBoundMs = summary.runBoundMs ?? 60_000;
  const anyNoticeMs = summary.noticeBoundMs ?? anyBoundMs;
  const outcomeAt = new Map<string, number>();
  for (const [task, outs] of outcomes) outcomeAt.set(task, Math.min(...outs.map((o) => o.line.t)));
  const hungRunCalls: string[] = [];
  let longestMs = 0;
  const slotOfInstance = (instance: string) =>
    slotOf.get(instance) ?? Number(/^w(\d+)/.exec(instance)?.[1]);
  for (const c of runCalls) {
    const bounds = summary.pairBounds?.[Math.floor(slotOfInstance(c.instance) / SIDES)];
    const boundMs = bounds?.runMs ?? anyBoundMs;
    const noticeMs = bounds?.noticeMs ?? anyNoticeMs;
    const until = c.end ?? exitAt.get(c.instance) ?? endOfRun;
    const ms = until - c.start;
    longestMs = Math.max(longestMs, ms);
    const after = until - Math.max(c.start, outcomeAt.get(c.task) ?? Infinity);
    const how =
      c.end === undefined
        ? `had no answer${exitAt.has(c.instance) ? ' when its process ended' : ''}`
        : `was answered (${c.how})`;
    if (ms > boundMs) {
      hungRunCalls.push(
        `${short(c.task)}: run() call ${c.call} of ${c.instance} ${how} after ${Math.round(ms)} ms`,
      );
    } else if (after > noticeMs) {
      hungRunCalls.push(
        `${short(c.task)}: run() call ${c.call} of ${c.instance} ${how} ${Math.round(after)} ms after the task's outcome was settled`,
      );
    }
  }

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
      // no injected fault on the holder: a handler of the plan that overran its deadline,
      // or (rarely) a holder stalled on its own
      const kind =
        f?.kind ?? (g.kind === 'deadline-passed' ? 'deadline overrun' : 'no injected fault');
      const from = Math.max(f?.start ?? prev?.t ?? g.t, prev?.t ?? 0);
      const ms = g.t - from;
      // only a healthy peer's reaction time: skip takeovers by a peer that was faulted itself
      const takerSlot = instanceSlot(g.instance);
      if (faults.some((x) => x.slot === takerSlot && x.start <= g.t && x.end >= from)) continue;
      // connection-lost takeovers (a holder's connection seen gone) are also shown apart
      const keys = g.kind === 'connection-lost' ? [kind, 'all', 'connection-lost'] : [kind, 'all'];
      // and by pair: one keeps the library's default session TTL, the other a short one
      keys.push(
        `${kind}, session TTL ${timingOf(Math.floor(prevSlot / SIDES)).sessionTtlMs / 1_000} s`,
      );
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

  const unattributed = duplicates.filter((d) => !d.allowed);
  const unexplainedReexecutions = reexecutions.filter((x) => !x.allowed);
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
    unexplainedReexecutions.length === 0 &&
    connectionLosses.unattributed.length === 0 &&
    hungRunCalls.length === 0 &&
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
    connectionLosses,
    doubts,
    runErrors: { retried, final: finalRunErrors },
    lost,
    fencedDoubleCommits,
    finalEffectMismatch,
    keptResults,
    staleSettlesAccepted,
    disagreements,
    duplicates,
    sameTokenReexecutions,
    reexecutions,
    runCalls: {
      count: runCalls.length,
      longestMs: Math.round(longestMs),
      boundMs: anyBoundMs,
      noticeMs: anyNoticeMs,
      ...(summary.pairBounds ? { perPair: summary.pairBounds } : {}),
      aborted: callerAborts,
    },
    hungRunCalls,
    recommits,
    unexpectedExits: summary.unexpectedExits,
    takeover,
    problems,
  };
}
