/**
 * The chaos checker's attribution of causes (check.ts calls it): every execution of a task
 * after its first must follow something that could make it necessary, and every lease lost
 * for reason `connection` must follow a fault that closed or cut a connection. A stall
 * nobody acted on (of the holder, of its links, of Redis) is doubt, not loss, and explains
 * neither. docs/reliability.md states both rules.
 */
import { defaults } from '../shared/options.js';
import {
  connectionFaults,
  freezeFaults,
  LAG_SAMPLE_MS,
  nodeFaults,
  reexecutionFaults,
  SIDES,
  stallCanLapseMs,
  timingOf,
} from './common.js';
import { type FaultInterval, type loadEvidence, short } from './evidence.js';
import type { Reexecution, Report } from './report.js';

type Evidence = ReturnType<typeof loadEvidence>;

/** What the attribution reads: the evidence, and check.ts's view of the faults. */
export interface CauseContext
  extends Pick<Evidence, 'execs' | 'grants' | 'losses' | 'lossOf' | 'lags' | 'parentLags'> {
  /** The faults on a worker's slot (or on every slot) that overlap [from, to]. */
  faultsOn(slot: number, from: number, to: number): FaultInterval[];
  /** Node faults that, at some moment of [from, to], kept a majority of nodes away. */
  majorityAway(hits: FaultInterval[], from: number, to: number): FaultInterval[];
  kindsOf(list: FaultInterval[]): string;
  /** Coordination nodes (1: one Redis), and how many make a majority. */
  nodes: number;
  majority: number;
}

/** The faults as the checks look at them: by slot and window, by node, by kind. */
export function faultView(faults: readonly FaultInterval[], nodes: number) {
  const majority = Math.floor(nodes / 2) + 1;
  /** The faults on a worker's slot (or on every slot) that overlap [from, to]. */
  const faultsOn = (slot: number, from: number, to: number) =>
    faults.filter(
      (f) => (f.slot === undefined || f.slot === slot) && f.start <= to && f.end >= from - 1,
    );
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
  return { faultsOn, majorityAway, coverage, kindsOf, majority };
}

export function attributeCauses(c: CauseContext): {
  reexecutions: Reexecution[];
  connectionLosses: Report['connectionLosses'];
} {
  const { execs, grants, losses, lossOf, lags, parentLags, faultsOn, majorityAway, kindsOf } = c;
  const { nodes, majority } = c;
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

  return { reexecutions, connectionLosses };
}
