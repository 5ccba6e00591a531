import { CorruptRecordError } from '../shared/errors.js';
import type { TaskInfo } from '../worker/worker.js';
import {
  type CliConnection,
  globEscape,
  type NodeView,
  printable,
  quoted,
  scanHashFields,
  scanKeys,
} from './common.js';

/*
 * Reading a namespace's records on every topology. One Redis or a Sentinel-managed master:
 * SCAN it. A Cluster: SCAN the master serving the namespace's hash slot (every key of a
 * namespace is in that slot), read through the Cluster client. Quorum mode: SCAN every
 * node that answers, and read each task id found anywhere on every node and through the
 * majority (the verdict a worker would act on), so that records the nodes disagree on show.
 */

/** A record as `list` and `stats` show it; in quorum mode with how many nodes hold it. */
export type ListedTask = TaskInfo & { quorum?: { agree: number; of: number } };

/** One node's copy of a record (quorum mode). */
export interface NodeRecord {
  /** host:port */
  node: string;
  status: 'record' | 'absent' | 'unreachable' | 'error';
  record?: TaskInfo;
  error?: string;
}

/** One task read on every node and through the majority (quorum mode). */
export interface QuorumRead {
  taskId: string;
  /** The majority's record (when the nodes are split: the largest group's), or null. */
  verdict: TaskInfo | null;
  /** Nodes whose copy is the verdict (the same state, token and owner), or absent like it. */
  agree: number;
  nodes: NodeRecord[];
}

export interface ReadOptions {
  hash?: string;
  /** SCAN COUNT hint. */
  count: number;
  /** Awaited after each page: a long-running reader (the dashboard) spaces its pages out. */
  pace?: () => Promise<void>;
}

/** Task ids on one node, page by page: SCAN (HSCAN for a hash), never KEYS. */
export async function* taskIds(
  conn: CliConnection,
  node: NodeView,
  opts: ReadOptions,
): AsyncGenerator<string[], void, void> {
  const { keys } = conn;
  if (opts.hash !== undefined) {
    yield* scanHashFields(node.client, keys.task('-', opts.hash).container, opts.count);
    return;
  }
  const prefix = `${keys.base}t:`;
  const { client } = await conn.scanTarget(node);
  for await (const page of scanKeys(client, `${globEscape(prefix)}*`, opts.count)) {
    yield page.map((k) => k.slice(prefix.length));
  }
}

/** `inspect`, with an unreadable record reported and skipped: it must not hide the others. */
function skipUnreadable(id: string, warn: (line: string) => void) {
  return (err: unknown): null => {
    if (
      err instanceof CorruptRecordError ||
      (err as { code?: string }).code === 'ERR_INVALID_TASK_ID'
    ) {
      warn(`pairlock: skipping ${quoted(id)}: ${printable((err as Error).message)}`);
      return null;
    }
    throw err;
  };
}

const hashOpt = (hash: string | undefined) => (hash === undefined ? {} : { hash: { key: hash } });

/** An undo placeholder (a grant taken back where there was no record) counts as absent. */
function present(info: TaskInfo | null): info is TaskInfo {
  return info !== null && !(info.state === 'released' && info.attempt === 0);
}

function sameRecord(a: TaskInfo, b: TaskInfo): boolean {
  return a.state === b.state && a.token === b.token && a.session === b.session;
}

/** One task on every node and through the majority (quorum mode). */
export async function readEverywhere(
  conn: CliConnection,
  taskId: string,
  hash?: string,
): Promise<QuorumRead> {
  const perNode = conn.nodes.map(async (n): Promise<NodeRecord> => {
    if (!n.up) return { node: n.label, status: 'unreachable', error: n.error ?? 'unreachable' };
    try {
      const info = await n.inspector.inspect(taskId, hashOpt(hash));
      return present(info)
        ? { node: n.label, status: 'record', record: info }
        : { node: n.label, status: 'absent' };
    } catch (err) {
      return { node: n.label, status: 'error', error: (err as Error).message };
    }
  });
  const [found, nodes] = await Promise.all([
    conn.inspector.inspect(taskId, hashOpt(hash)),
    Promise.all(perNode),
  ]);
  const verdict = present(found) ? found : null;
  const agree = nodes.filter((n) =>
    n.status === 'record' && n.record
      ? verdict !== null && sameRecord(n.record, verdict)
      : n.status === 'absent' && verdict === null,
  ).length;
  return { taskId, verdict, agree, nodes };
}

/** Every task id found on any node, each read everywhere (quorum mode). */
export async function* quorumRecords(
  conn: CliConnection,
  opts: ReadOptions,
  warn: (line: string) => void,
): AsyncGenerator<QuorumRead, void, void> {
  const seen = new Set<string>();
  for (const node of conn.upNodes) {
    for await (const page of taskIds(conn, node, opts)) {
      const fresh = page.filter((id) => !seen.has(id));
      for (const id of fresh) seen.add(id);
      const reads = await Promise.all(
        fresh.map((id) => readEverywhere(conn, id, opts.hash).catch(skipUnreadable(id, warn))),
      );
      for (const r of reads) if (r) yield r;
      await opts.pace?.();
    }
  }
}

/**
 * Every task record of the namespace (or of one hash), page by page, decoded by the same
 * `inspect` script the workers use. In quorum mode: the majority's records, each with how
 * many nodes agree (a record only a minority holds is not one; `stats` counts those).
 */
export async function* records(
  conn: CliConnection,
  opts: ReadOptions,
  warn: (line: string) => void,
): AsyncGenerator<ListedTask, void, void> {
  if (conn.topology.kind === 'quorum') {
    const of = conn.nodes.length;
    for await (const r of quorumRecords(conn, opts, warn)) {
      if (r.verdict) yield { ...r.verdict, quorum: { agree: r.agree, of } };
    }
    return;
  }
  const node = conn.nodes[0];
  if (!node) return;
  for await (const ids of taskIds(conn, node, opts)) {
    const infos = await Promise.all(
      ids.map((id) =>
        conn.inspector.inspect(id, hashOpt(opts.hash)).catch(skipUnreadable(id, warn)),
      ),
    );
    for (const info of infos) if (info) yield info;
    await opts.pace?.();
  }
}
