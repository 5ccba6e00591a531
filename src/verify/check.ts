/**
 * The checker of `npm run chaos` and `pairlock verify`. Reads a run directory (see
 * evidence.ts) and verifies:
 *
 *   lost tasks = 0             every released task reached an outcome (done, or failed with a
 *                              reason) on both sides of its pair, and Redis holds it settled
 *   fenced double commits = 0  the sink never accepted a token that was not higher than every
 *                              token it had accepted for the task, no token was held by two
 *                              sessions, and the effect that stands is the final grant's
 *   stale settles accepted = 0 no settle was accepted for a token older than the newest grant
 *   disagreements = 0          every participant of a pair got the same outcome, and it is the
 *                              one Redis holds
 *   unexplained overlaps = 0   two executions of a task overlap in time only where the older
 *                              holder was paused, cut off or partitioned (from every node, or
 *                              from a majority of them), had already been told it lost the
 *                              task, or its event loop stalled for as long as it went on
 *                              without being told; never under a handover, a
 *                              client-side timeout, a caller's abort or a delay alone
 *   re-executions without a cause = 0
 *                              every execution of a task after its first follows something
 *                              that could make it necessary: the earlier execution failed
 *                              (retry), was handed over, overran its deadline, or a fault
 *                              that kills, cuts, partitions, closes connections (sub-reset,
 *                              cmd-reset, stall-close), takes Redis away, aborts a run() or
 *                              loses a reply hit its holder; a freeze (pause, stall, a Redis
 *                              stall or pause, event-loop lag) only when it was long enough
 *                              for the holder's session to lapse (stallCanLapseMs)
 *   connection losses unattributed = 0
 *                              a lease lost for reason `connection` follows a fault that
 *                              closed or cut the holder's connection (or a freeze past the
 *                              session TTL margin, or every link frozen for doubtMs)
 *   hung run() calls = 0       every run() call resolved or rejected within a bound
 *   unexpected worker exits = 0
 *
 * and reports takeover latencies (fault start → took-over). report.ts prints the table.
 */
import { defaults } from '../options.js';
import {
  connectionFaults,
  DEFAULT_SESSION_PAIR,
  freezeFaults,
  LAG_LOG_MS,
  LAG_SAMPLE_MS,
  nodeFaults,
  overlapFaults,
  percentile,
  reexecutionFaults,
  SIDES,
  type SinkEntry,
  stallCanLapseMs,
  timingOf,
} from './common.js';
import { type Exec, type FaultInterval, loadEvidence, push, short } from './evidence.js';
import type { Duplicate, Reexecution, Report } from './report.js';

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
  const faultsOn = (slot: number, from: number, to: number) =>
    faults.filter(
      (f) => (f.slot === undefined || f.slot === slot) && f.start <= to && f.end >= from - 1,
    );
  const nodes = summary.nodes ?? 1;
  const majority = Math.floor(nodes / 2) + 1;
  /** Node faults that, at some moment of [from, to], kept a majority of nodes from `slot`. */
  const majorityAway = (hits: FaultInterval[], from: number, to: number): FaultInterval[] => {
    const away = hits.filter((f) => nodeFaults.includes(f.kind));
    const moments = away.map((f) => Math.max(f.start, from)).filter((t) => t <= to);
    for (const t of moments) {
      const at = away.filter((f) => f.start <= t && f.end >= t);
      const gone = new Set(at.map((f) => f.node ?? -1));
      if (gone.has(-1) || gone.size >= majority) return at;
    }
    return [];
  };
  /** How much of [from, to] the intervals cover (they may overlap each other). */
  const coverage = (list: { start: number; end: number }[], from: number, to: number) => {
    const cut = list
      .map((l) => [Math.max(l.start, from), Math.min(l.end, to)] as const)
      .filter(([s, e]) => e > s)
      .sort((x, y) => x[0] - y[0]);
    let covered = 0;
    let reach = from;
    for (const [s, e] of cut) {
      if (e <= reach) continue;
      covered += e - Math.max(s, reach);
      reach = e;
    }
    return covered;
  };
  const kindsOf = (list: FaultInterval[]) => [...new Set(list.map((f) => f.kind))].join('+');
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

  // ---- a re-execution needs a cause ------------------------------------------------
  // A stall nobody acted on (of the holder, of its links, of Redis) is doubt, not loss: it
  // may make nothing run again. What may: see reexecutionFaults, and a freeze long enough
  // for the holder's session to lapse on the server.
  const pairOfSlot = (slot: number) => Math.floor(slot / SIDES);
  /** Whether a fault closed what it was meant to (a close that found nothing is no close). */
  const closedSomething = (f: FaultInterval) => f.closed !== 0;
  /** The longest span of [from, to] the intervals cover without a gap (one sample's slack). */
  const longestSpan = (list: { start: number; end: number }[], from: number, to: number) => {
    const cut = list
      .map((l) => [Math.max(l.start, from), Math.min(l.end, to)] as const)
      .filter(([s, e]) => e > s)
      .sort((x, y) => x[0] - y[0]);
    let best = 0;
    let runStart = Number.NaN;
    let reach = Number.NEGATIVE_INFINITY;
    for (const [s, e] of cut) {
      if (s > reach + 2 * LAG_SAMPLE_MS) runStart = s;
      reach = Math.max(reach, e);
      best = Math.max(best, reach - runStart);
    }
    return best;
  };
  /**
   * The longest freeze of a holder in [from, to]: its own event loop (lags, SIGSTOP, the
   * stall fault), the proxies' (the orchestrator carries every link), and on one Redis the
   * server's own stalls (DEBUG SLEEP, CLIENT PAUSE). Kinds that froze it, for the message.
   */
  const freezeOf = (instance: string, slot: number, from: number, to: number) => {
    const frozen = faultsOn(slot, from, to).filter(
      (f) =>
        (freezeFaults.includes(f.kind) && (f.slot !== undefined || nodes === 1)) ||
        (f.kind === 'stall-close' && !closedSomething(f)),
    );
    const spans = [...(lags.get(instance) ?? []), ...parentLags, ...frozen];
    return { ms: longestSpan(spans, from, to), kinds: kindsOf(frozen) };
  };
  /** Every link frozen (the orchestrator stalled) for this long: a partition of every worker. */
  const linksFrozen = (from: number, to: number) => longestSpan(parentLags, from, to);
  /** Faults of a slot in [from, to] that close or cut its connections, or take Redis away. */
  const causesIn = (slot: number, from: number, to: number, kinds: readonly string[]) => {
    const hits = faultsOn(slot, from, to);
    const direct = hits.filter(
      (f) => kinds.includes(f.kind) && !nodeFaults.includes(f.kind) && closedSomething(f),
    );
    const away = majorityAway(hits, from, to).filter((f) => kinds.includes(f.kind));
    return { hits, direct, away };
  };
  const reexecutions: Reexecution[] = [];
  for (const [task, list] of execs) {
    const sorted = [...list].sort((a, b) => a.token - b.token || a.start - b.start);
    const taskGrants = [...(grants.get(task) ?? [])].sort((a, b) => a.token - b.token);
    for (let i = 1; i < sorted.length; i++) {
      const p = sorted[i - 1];
      const e = sorted[i];
      // one token executed twice is an invariant of its own
      if (!p || !e || p.token === e.token) continue;
      const pair = pairOfSlot(p.slot);
      const timing = timingOf(pair);
      const loss = lossOf.get(`${p.instance}#${task}#${p.token}`);
      const between = taskGrants.filter((g) => g.token > p.token && g.token <= e.token);
      const grantKinds = new Set(between.map((g) => g.kind));
      // the cause came before the task was granted again (a little slack for the logs)
      const to = Math.min(between[0]?.t ?? e.start, e.start) + 50;
      // Redis may have applied the grant well before the holder logged it: a freeze or a
      // fault that delayed the report (a SIGSTOP between the claim and its reply) reaches
      // back past it, and a fault under way a session TTL before the grant may still end it
      const granted = taskGrants.find((g) => g.token === p.token && g.instance === p.instance);
      let since = Math.min(p.start, granted?.t ?? p.start);
      const delays = [
        ...(lags.get(p.instance) ?? []),
        ...parentLags,
        ...faultsOn(p.slot, since - 30_000, since),
      ];
      for (let moved = true; moved; ) {
        moved = false;
        for (const d of delays) {
          if (d.start < since && d.end >= since - 50) {
            since = d.start;
            moved = true;
          }
        }
      }
      const from = since - timing.sessionTtlMs;
      let cause: string | undefined;
      if (grantKinds.has('retry')) cause = 'failure (retry)';
      else if (grantKinds.has('handover') || loss?.reason === 'handover') cause = 'handover';
      else if (
        grantKinds.has('deadline-passed') ||
        loss?.reason === 'deadline' ||
        loss?.rejected === 'deadline-passed' ||
        Math.min(p.end, e.start) - p.start >= timing.taskTimeoutMs - 50
      )
        cause = 'deadline';
      if (cause === undefined) {
        const { direct, away, hits } = causesIn(p.slot, from, to, reexecutionFaults);
        // quorum: a session lives on a majority of the nodes; node faults that reached a
        // majority of them one after another (a node lost with its copy, then another cut
        // off) end it as surely as at once
        const inTurn = hits.filter((f) => nodeFaults.includes(f.kind));
        const nodesHit = new Set(inTurn.map((f) => f.node ?? -1));
        if (direct.length > 0) cause = kindsOf(direct);
        else if (away.length > 0)
          cause = `${kindsOf(away)} (${nodes > 1 ? 'a majority of the nodes' : 'Redis'} away)`;
        else if (
          nodes > 1 &&
          loss?.reason === 'session' &&
          (nodesHit.has(-1) || nodesHit.size >= majority)
        )
          cause = `${kindsOf(inTurn)} (a majority of the nodes, in turn)`;
      }
      if (cause === undefined) {
        const freeze = freezeOf(p.instance, p.slot, from, to);
        if (freeze.ms >= stallCanLapseMs(pair))
          cause = `${freeze.kinds || 'event-loop stall'} past the session TTL margin`;
        else if (linksFrozen(from, to) >= defaults.doubtMs - 100)
          cause = 'every link frozen (orchestrator stall)';
      }
      if (cause === undefined && loss?.reason === 'closed') cause = 'worker closed';
      const allowed = cause !== undefined;
      if (cause === undefined) {
        const { hits } = causesIn(p.slot, from, to, reexecutionFaults);
        const freeze = freezeOf(p.instance, p.slot, from, to);
        const parts = [
          `lease-lost ${loss ? `${loss.reason}${loss.rejected ? `/${loss.rejected}` : ''}` : 'not reported'}`,
          `granted again as ${[...grantKinds].join('+') || 'nothing logged'}`,
          `faults ${hits.length > 0 ? kindsOf(hits) : 'none'}`,
          `longest freeze ${Math.round(freeze.ms)} ms`,
        ];
        cause = `no cause (${parts.join('; ')})`;
      }
      reexecutions.push({
        task,
        token: e.token,
        instance: e.instance,
        previousToken: p.token,
        previousInstance: p.instance,
        previousStatus: p.status,
        cause,
        allowed,
      });
    }
  }

  // ---- lease losses for reason `connection`: which fault closed or cut the connection -----
  const connectionLosses: Report['connectionLosses'] = { attributed: {}, unattributed: [] };
  for (const loss of losses) {
    if (loss.reason !== 'connection') continue;
    const pair = pairOfSlot(loss.slot);
    const timing = timingOf(pair);
    // the loss comes at most a grace (≤ sessionTtlMs / 2) after the last proof answered
    // before the fault, plus doubtMs when the connection stood
    const from = loss.t - (defaults.doubtMs + timing.sessionTtlMs / 2 + 500);
    const to = loss.t + 50;
    const { direct, away } = causesIn(loss.slot, from, to, connectionFaults);
    let by: string | undefined;
    if (direct.length > 0) by = kindsOf(direct);
    else if (away.length > 0) by = `${kindsOf(away)} (Redis away)`;
    else {
      const freeze = freezeOf(loss.instance, loss.slot, from, to);
      if (freeze.ms >= stallCanLapseMs(pair))
        by = `${freeze.kinds || 'event-loop stall'} past the session TTL margin`;
      else if (linksFrozen(from, to) >= defaults.doubtMs - 100)
        by = 'every link frozen (orchestrator stall)';
    }
    if (by !== undefined) {
      connectionLosses.attributed[by] = (connectionLosses.attributed[by] ?? 0) + 1;
    } else {
      const hits = faultsOn(loss.slot, from, to);
      const freeze = freezeOf(loss.instance, loss.slot, from, to);
      connectionLosses.unattributed.push(
        `${short(loss.task)}: token ${loss.token} lost by ${loss.instance} (connection) with ${hits.length > 0 ? `only ${kindsOf(hits)}` : 'no fault'} on its slot, longest freeze ${Math.round(freeze.ms)} ms`,
      );
    }
  }

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
      const kind = f?.kind ?? 'no fault';
      const from = Math.max(f?.start ?? prev?.t ?? g.t, prev?.t ?? 0);
      const ms = g.t - from;
      // only a healthy peer's reaction time: skip takeovers by a peer that was faulted itself
      const takerSlot = instanceSlot(g.instance);
      if (faults.some((x) => x.slot === takerSlot && x.start <= g.t && x.end >= from)) continue;
      // connection-lost takeovers (a holder's connection seen gone) are also shown apart
      const keys = g.kind === 'connection-lost' ? [kind, 'all', 'connection-lost'] : [kind, 'all'];
      // and those of the pair with the library's default session TTL
      if (Math.floor(prevSlot / SIDES) === DEFAULT_SESSION_PAIR) {
        keys.push(`${kind}, session TTL ${timingOf(DEFAULT_SESSION_PAIR).sessionTtlMs / 1_000} s`);
      }
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
