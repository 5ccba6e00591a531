/**
 * The evidence of one run, as the checker reads it from the run directory: the plan and the
 * summary the orchestrator wrote, the sink's journal and values, the final task records, and
 * every process's JSON-line log (parent.log, w<slot>.<n>.log), folded into per-task lists.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  type FaultKind,
  nodeFaults,
  type ParentLine,
  type SinkEntry,
  type TaskSpec,
  type WorkerLine,
} from './common.js';

export interface Exec {
  task: string;
  token: number;
  instance: string;
  slot: number;
  start: number;
  end: number;
  endKnown: boolean;
  status: string;
}

export interface FaultInterval {
  kind: FaultKind;
  /** undefined: every slot (a node fault: Redis restart, node loss, slow minority). */
  slot: number | undefined;
  /** The node it hit (node faults); undefined: every node of the slot. */
  node: number | undefined;
  start: number;
  end: number;
  /**
   * sub-reset, cmd-reset, stall-close: how many connections Redis closed (from the end's
   * detail); 0 closes nothing, and a stall-close that closed nothing was a stall only.
   */
  closed?: number;
}

/** A lease loss a holder reported. */
export interface LeaseLoss {
  instance: string;
  slot: number;
  task: string;
  token: number;
  reason: string;
  rejected?: string;
  t: number;
}

export function readLines<T>(file: string): T[] {
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

export function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

export const short = (s: string) => JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);

/** Everything the invariants are computed from. */
export type Evidence = ReturnType<typeof loadEvidence>;

export function loadEvidence(dir: string) {
  const plan = JSON.parse(readFileSync(path.join(dir, 'plan.json'), 'utf8')) as {
    seed: number;
    tasks: TaskSpec[];
  };
  const summary = JSON.parse(readFileSync(path.join(dir, 'summary.json'), 'utf8')) as {
    seed: number;
    topology?: string;
    nodes?: number;
    runBoundMs?: number;
    noticeBoundMs?: number;
    /** The two bounds per pair (the pairs' session timing differs), by pair index. */
    pairBounds?: { runMs: number; noticeMs: number }[];
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
    const wide = l.w === undefined || (nodeFaults.includes(l.kind) && l.kind !== 'cut-node');
    const key = `${l.kind}:${wide ? '' : l.w}:${l.node ?? ''}`;
    if (l.phase === 'start') {
      const f: FaultInterval = {
        kind: l.kind,
        slot: wide ? undefined : l.w,
        node: l.node ?? (l.kind === 'redis-restart' ? 0 : undefined),
        start: l.t,
        end: endOfRun,
      };
      faults.push(f);
      open.set(key, f);
    } else {
      const f = open.get(key);
      if (f) {
        f.end = l.t;
        const closed = /^(\d+) closed/.exec(l.detail ?? '')?.[1];
        if (closed !== undefined) f.closed = Number(closed);
      }
      open.delete(key);
    }
  }
  const endLine = parent.find((l) => l.ev === 'end');

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
  /** Every lease loss reported, and the first one of each (instance, task, token). */
  const losses: LeaseLoss[] = [];
  const lossOf = new Map<string, LeaseLoss>();
  /** Times a holder's proofs fell late on a connection that stood (lease-doubt, inDoubt). */
  let doubts = 0;
  /** First lease-lost of (instance, task, token), and each instance's event-loop stalls. */
  const lostAt = new Map<string, number>();
  const lags = new Map<string, { start: number; end: number }[]>();
  /** First time the handler of (instance, task, token) was told it lost the task. */
  const signalAt = new Map<string, number>();
  const runCalls: {
    instance: string;
    task: string;
    call: number;
    start: number;
    end?: number;
    how?: string;
  }[] = [];
  let callerAborts = 0;
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
    const callsOf = new Map<number, (typeof runCalls)[number]>();
    const answer = (call: number | undefined, t: number, how: string) => {
      const c = call === undefined ? undefined : callsOf.get(call);
      if (c && c.end === undefined) {
        c.end = t;
        c.how = how;
      }
    };
    for (const l of lines) {
      switch (l.ev) {
        case 'run-call': {
          const c = { instance, task: l.task, call: l.call, start: l.t };
          runCalls.push(c);
          callsOf.set(l.call, c);
          break;
        }
        case 'exec-signal': {
          const key = `${instance}#${l.task}#${l.token}`;
          if (!signalAt.has(key)) signalAt.set(key, l.t);
          break;
        }
        case 'caller-abort':
          callerAborts++;
          break;
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
        case 'lease-lost': {
          leaseLost[l.reason] = (leaseLost[l.reason] ?? 0) + 1;
          const key = `${instance}#${l.task}#${l.token}`;
          if (!lostAt.has(key)) lostAt.set(key, l.t);
          if (l.reason === 'rejected') staleSettlesRejected++;
          const loss: LeaseLoss = {
            instance,
            slot,
            task: l.task,
            token: l.token,
            reason: l.reason,
            t: l.t,
            ...(l.rejected === undefined ? {} : { rejected: l.rejected }),
          };
          losses.push(loss);
          if (!lossOf.has(key)) lossOf.set(key, loss);
          break;
        }
        case 'lease-doubt':
          if (l.inDoubt) doubts++;
          break;
        case 'outcome':
          push(outcomes, l.task, { line: l, instance, slot });
          answer(l.call, l.t, l.state);
          break;
        case 'lag':
          push(lags, instance, { start: l.t - l.ms, end: l.t });
          break;
        case 'run-error':
          // closed at the end of the run: the call was still waiting then
          if (!(l.code === 'ERR_CLOSED' && endLine && l.t >= endLine.t))
            answer(l.call, l.t, l.code);
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

  return {
    plan,
    summary,
    sink,
    records,
    parent,
    released,
    problems,
    exitAt,
    slotOf,
    endOfRun,
    parentLags,
    faults,
    endLine,
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
  };
}
