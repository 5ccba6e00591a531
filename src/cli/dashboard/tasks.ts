/**
 * The drill-down lists of the page (failed, done, released or running tasks, by worker and
 * task id prefix): records read as `pairlock list` reads them (SCAN pages, each record
 * decoded by the `inspect` script; in quorum mode the majority's records, read.ts), with
 * a task id prefix given to SCAN's MATCH (HSCAN's for a hash) on one Redis or a Cluster.
 *
 * Bounded: one list is read at a time (others wait their turn), at most SCAN_BUDGET
 * records are read and for at most TIME_BUDGET_MS; beyond either the answer is `partial`.
 * The newest `limit` matches (by last transition) are kept.
 */
import { CorruptRecordError } from '../../shared/errors.js';
import type { TaskInfo } from '../../worker/worker.js';
import { type CliConnection, detail, globEscape, scanKeys, taskJson } from '../common.js';
import { records } from '../read.js';

export const listStates = ['failed', 'done', 'released', 'running'] as const;
export type ListState = (typeof listStates)[number];

/** Records read per list at most. */
const SCAN_BUDGET = 50_000;
/** Time spent reading one list at most. */
const TIME_BUDGET_MS = 3_000;

export interface TaskQuery {
  state?: ListState;
  worker?: string;
  prefix?: string;
  limit: number;
  hash?: string;
  count: number;
}

export interface TaskList {
  items: Record<string, unknown>[];
  /** More records match than `limit`. */
  more: boolean;
  /** Records read. */
  scanned: number;
  /** The budget ran out before the scan ended: others may match. */
  partial: boolean;
  tookMs: number;
}

/** Task ids whose id starts with `prefix`, page by page (SCAN / HSCAN with MATCH). */
async function* idsWithPrefix(
  conn: CliConnection,
  prefix: string,
  q: TaskQuery,
): AsyncGenerator<string[], void, void> {
  const node = conn.nodes[0];
  if (!node) return;
  const { keys } = conn;
  if (q.hash !== undefined) {
    const key = keys.task('-', q.hash).container;
    let cursor = '0';
    do {
      const [next, flat] = await node.client.hscan(
        key,
        cursor,
        'MATCH',
        `${globEscape(prefix)}*`,
        'COUNT',
        q.count,
      );
      cursor = next;
      yield flat.filter((_, i) => i % 2 === 0);
    } while (cursor !== '0');
    return;
  }
  const base = `${keys.base}t:`;
  const { client } = await conn.scanTarget(node);
  for await (const page of scanKeys(client, `${globEscape(base + prefix)}*`, q.count))
    yield page.map((k) => k.slice(base.length));
}

/** Records, with the prefix given to SCAN where one Redis (or the Cluster's slot) answers. */
async function* candidates(
  conn: CliConnection,
  q: TaskQuery,
  warn: (line: string) => void,
): AsyncGenerator<TaskInfo, void, void> {
  if (!q.prefix || conn.topology.kind === 'quorum') {
    yield* records(conn, { hash: q.hash, count: q.count }, warn);
    return;
  }
  const opt = q.hash === undefined ? {} : { hash: { key: q.hash } };
  for await (const ids of idsWithPrefix(conn, q.prefix, q)) {
    const infos = await Promise.all(
      ids.map((id) =>
        conn.inspector.inspect(id, opt).catch((err: unknown) => {
          if (err instanceof CorruptRecordError) return null;
          if ((err as { code?: string }).code === 'ERR_INVALID_TASK_ID') return null;
          throw err;
        }),
      ),
    );
    for (const info of infos) if (info) yield info;
  }
}

const newestFirst = (a: TaskInfo, b: TaskInfo) =>
  b.updatedAt - a.updatedAt || (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0);

let turn: Promise<unknown> = Promise.resolve();

/** The records that match `q`, newest first; one list at a time. */
export function listTasks(
  conn: CliConnection,
  q: TaskQuery,
  warn: (line: string) => void,
): Promise<TaskList> {
  const run = turn.then(() => readList(conn, q, warn));
  turn = run.catch(() => {});
  return run;
}

async function readList(
  conn: CliConnection,
  q: TaskQuery,
  warn: (line: string) => void,
): Promise<TaskList> {
  const started = Date.now();
  let kept: TaskInfo[] = [];
  let matched = 0;
  let scanned = 0;
  let partial = false;
  for await (const info of candidates(conn, q, warn)) {
    scanned += 1;
    if (
      (q.state === undefined || info.state === q.state) &&
      (!q.worker || info.worker === q.worker) &&
      (!q.prefix || info.taskId.startsWith(q.prefix))
    ) {
      matched += 1;
      kept.push(info);
      if (kept.length >= 2 * q.limit) kept = kept.sort(newestFirst).slice(0, q.limit);
    }
    if (scanned >= SCAN_BUDGET || Date.now() - started > TIME_BUDGET_MS) {
      partial = true;
      break;
    }
  }
  kept.sort(newestFirst);
  return {
    items: kept.slice(0, q.limit).map((i) => ({ ...taskJson(i, q.hash), detail: detail(i) })),
    more: matched > q.limit,
    scanned,
    partial,
    tookMs: Date.now() - started,
  };
}
