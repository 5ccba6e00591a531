/**
 * The dashboard's reads of the task history (src/redis/history.ts: a capped Stream per namespace
 * that the workers' own batches append to; in quorum mode one per node, merged):
 *
 * - at start, the latest SEED_LIMIT transitions, for the timeline (its last TIMELINE_SIZE)
 *   and the charts (the kept minutes): a restarted dashboard shows what came before it;
 * - for a task looked up, its attempts (as `pairlock history <taskId>`).
 *
 * Times are moved to this process's clock (the history keeps the server's), as the rest
 * of the dashboard's times.
 */
import {
  attemptDurations,
  grantKinds,
  type HistoryQuery,
  type HistoryTransition,
  mergeHistories,
  readHistory,
} from '../../redis/history.js';
import { workerOf } from '../../redis/replies.js';
import type { CliConnection } from '../common.js';
import { redisProblem } from './health.js';
import type { TimelineItem } from './state.js';

/** Transitions read at start, at most: the timeline's 500 and the charts' minutes. */
export const SEED_LIMIT = 10_000;

/** A transition of the history as a timeline entry, with the task's ref (for the rates). */
export type PastEntry = Omit<TimelineItem, 'seq'> & { ref: string; token: number };
export type PastItem = PastEntry & { history: true };

/** The same transition, whether from the feed or from the history. */
export const transitionKey = (t: Omit<TimelineItem, 'seq' | 'at'>) =>
  JSON.stringify([t.event, t.hash ?? null, t.task ?? null, t.token ?? null]);

/** One node's history, or every node's merged (each transition once), oldest first. */
export async function readLatest(
  conn: CliConnection,
  q: HistoryQuery,
): Promise<HistoryTransition[]> {
  const nodes = conn.upNodes.length > 0 ? conn.upNodes : conn.nodes;
  // quorum mode: each node keeps its own history; a node that fails adds nothing
  const lists = await Promise.all(
    nodes.map((n) =>
      readHistory(n.client, conn.keys, q).catch((err: unknown) => {
        if (nodes.length === 1) throw err;
        return [];
      }),
    ),
  );
  const all = mergeHistories(lists);
  return all.slice(Math.max(0, all.length - (q.limit ?? 1_000)));
}

/**
 * A transition as the live event of the same transition is shown (watch.ts decodeEvent):
 * grants are `claimed`, `took-over` or `reclaimed`; a lease given back unused is `released`.
 */
export function pastItem(t: HistoryTransition, ref: string, serverOffsetMs: number): PastItem {
  const at = t.at - serverOffsetMs;
  const item: PastItem = {
    time: new Date(at).toISOString(),
    at,
    event: t.kind,
    task: t.taskId,
    state: t.kind,
    token: t.token,
    attempt: t.attempt,
    worker: t.worker,
    session: t.session,
    ref,
    history: true,
  };
  if (t.hashKey !== undefined) item.hash = t.hashKey;
  if (grantKinds.has(t.kind)) {
    item.state = 'running';
    item.kind = t.kind;
    item.event =
      t.kind === 'fresh' ? 'claimed' : t.kind === 'reclaimed' ? 'reclaimed' : 'took-over';
    if (t.kind !== 'fresh' && t.detail !== '') item.from = workerOf(t.detail);
  } else if (t.kind === 'released' || t.kind === 'given-back') {
    item.event = 'released';
    item.state = 'released';
    if (t.kind === 'given-back') item.kind = t.kind;
  } else if (t.kind === 'failed' && t.detail !== '') {
    item.error = t.detail;
  }
  return item;
}

/**
 * The latest transitions as timeline entries, oldest first, and the local time from which
 * they are complete (the oldest one read: the history keeps nothing older, or the read
 * stopped there); undefined when the history holds none.
 */
export async function readPast(
  conn: CliConnection,
  serverOffsetMs: number,
  limit = SEED_LIMIT,
): Promise<{ items: PastItem[]; from?: number }> {
  const ts = await readLatest(conn, { limit });
  const items = ts.map((t) => pastItem(t, conn.keys.task(t.taskId, t.hashKey).ref, serverOffsetMs));
  return items.length > 0 ? { items, from: items[0]?.at } : { items };
}

/** One transition of a task, for /api/task: as `pairlock history <taskId> --json`. */
export interface AttemptRow {
  /** Local ms (this process's clock). */
  at: number;
  kind: string;
  token: number;
  attempt: number;
  worker: string;
  session: string;
  /** Outcomes: from the grant of the same token. */
  durationMs?: number;
  /** Grants: the previous owner's session; failures: the error's code and message. */
  detail?: string;
}

/** A task's transitions still in the history, oldest first; an error is said, not thrown. */
export async function taskHistory(
  conn: CliConnection,
  taskId: string,
  hashKey: string | undefined,
  serverOffsetMs: number,
): Promise<{ history: AttemptRow[]; historyError?: string }> {
  try {
    const q: HistoryQuery = { taskId, limit: 1_000 };
    if (hashKey !== undefined) q.hashKey = hashKey;
    const ts = await readLatest(conn, q);
    const ms = attemptDurations(ts);
    return {
      history: ts.map((t) => {
        const row: AttemptRow = {
          at: t.at - serverOffsetMs,
          kind: t.kind,
          token: t.token,
          attempt: t.attempt,
          worker: t.worker,
          session: t.session,
        };
        const d = ms.get(t);
        if (d !== undefined) row.durationMs = d;
        if (t.detail !== '') row.detail = t.detail;
        return row;
      }),
    };
  } catch (err) {
    return { history: [], historyError: `cannot read the history: ${redisProblem(err)}` };
  }
}
