import type { Command } from 'commander';
import { EVICTING_FLAG, evicts, formatPolicy, readPolicy } from '../redis/eviction.js';
import type { TaskInfo } from '../worker/worker.js';
import {
  type CliConnection,
  duration,
  type GlobalOptions,
  globEscape,
  type Io,
  iso,
  type NodeView,
  parsePositiveInt,
  printable,
  scanKeys,
  table,
  withConnection,
} from './common.js';
import { quorumRecords, records } from './read.js';

export interface StatsOptions {
  json?: boolean;
  hash?: string;
  count: number;
}

export interface LiveWorker {
  session: string;
  worker: string;
  host?: string;
  pid?: number;
  startedAt?: number;
  /** ms until the session expires unless renewed. */
  ttlMs: number;
  /** Task ids this session runs now. */
  holds: string[];
  /** Quorum mode: nodes that hold the session (a majority, or it is not live). */
  nodes?: number;
}

/** One node in quorum mode. */
export interface NodeStats {
  node: string;
  up: boolean;
  error?: string;
  /** Task records this node holds (a copy of any kind, undo placeholders not counted). */
  records: number;
  /** Session keys on this node. */
  sessions: number;
}

export interface QuorumStats {
  /** Nodes a decision needs. */
  majority: number;
  nodes: NodeStats[];
  /** Tasks whose copies differ between the nodes that answered, with the majority's state. */
  disagree: { taskId: string; agree: number; majority: string }[];
}

/** The eviction settings of a node (INFO memory); `error` when they could not be read. */
export interface NodeEviction {
  node: string;
  /** `maxmemory-policy`; anything but `noeviction` may evict sessions and records. */
  policy?: string;
  maxmemory?: number;
  evicting?: boolean;
  error?: string;
}

export interface Stats {
  namespace: string;
  tasks: {
    total: number;
    running: number;
    done: number;
    failed: number;
    released: number;
    orphaned: number;
  };
  workers: LiveWorker[];
  /** Running records whose owner session is gone: a peer takes them over when it next looks. */
  orphaned: { taskId: string; worker: string; session: string }[];
  /** Quorum mode: each node, and the tasks the nodes disagree on. */
  quorum?: QuorumStats;
  /** Each node's maxmemory-policy (on a Cluster: the master of the namespace's slot). */
  eviction: NodeEviction[];
}

interface SessionCopy {
  value: string;
  pttl: number;
}

/** Session keys on one node: `<base>s:<session>` with its JSON description and PTTL. */
async function sessionsOn(
  conn: CliConnection,
  node: NodeView,
  count: number,
): Promise<Map<string, SessionCopy>> {
  const out = new Map<string, SessionCopy>();
  const prefix = conn.keys.sessionPrefix;
  const { client: scanner } = await conn.scanTarget(node);
  for await (const page of scanKeys(scanner, `${globEscape(prefix)}*`, count)) {
    // through the node's own client: on a Cluster it follows the slot if it moves
    const pipe = node.client.pipeline();
    for (const key of page) pipe.get(key).pttl(key);
    const replies = (await pipe.exec()) ?? [];
    page.forEach((key, i) => {
      const value = replies[2 * i]?.[1] as string | null | undefined;
      const pttl = Number(replies[2 * i + 1]?.[1] ?? -2);
      if (value === null || value === undefined || pttl < 0) return; // expired meanwhile
      out.set(key.slice(prefix.length), { value, pttl });
    });
  }
  return out;
}

function describeSession(session: string, value: string, ttlMs: number): LiveWorker {
  let desc: { worker?: unknown; host?: unknown; pid?: unknown; startedAt?: unknown } = {};
  try {
    desc = JSON.parse(value) as typeof desc;
  } catch {
    // an older or foreign description: show what the key name tells
  }
  const hashAt = session.lastIndexOf('#');
  const w: LiveWorker = {
    session,
    worker:
      typeof desc.worker === 'string'
        ? desc.worker
        : hashAt < 0
          ? session
          : session.slice(0, hashAt),
    ttlMs,
    holds: [],
  };
  if (typeof desc.host === 'string') w.host = desc.host;
  if (typeof desc.pid === 'number') w.pid = desc.pid;
  if (typeof desc.startedAt === 'number') w.startedAt = desc.startedAt;
  return w;
}

/**
 * Live sessions. In quorum mode a session is live when a majority of the nodes hold it
 * (as the workers decide), and its TTL is the one a majority still reaches.
 */
export async function liveSessions(
  conn: CliConnection,
  count: number,
  perNode?: (node: NodeView, sessions: number) => void,
): Promise<LiveWorker[]> {
  const copies = new Map<string, SessionCopy[]>();
  for (const node of conn.upNodes) {
    const found = await sessionsOn(conn, node, count);
    perNode?.(node, found.size);
    for (const [session, copy] of found) {
      const list = copies.get(session);
      if (list) list.push(copy);
      else copies.set(session, [copy]);
    }
  }
  const out: LiveWorker[] = [];
  for (const [session, list] of copies) {
    if (list.length < conn.majority) continue;
    const ttls = list.map((c) => c.pttl).sort((a, b) => b - a);
    const w = describeSession(session, list[0]?.value ?? '', ttls[conn.majority - 1] ?? 0);
    if (conn.topology.kind === 'quorum') w.nodes = list.length;
    out.push(w);
  }
  out.sort((a, b) => (a.worker < b.worker ? -1 : a.worker > b.worker ? 1 : 0));
  return out;
}

function tally(stats: Stats, info: TaskInfo, bySession: Map<string, LiveWorker>): void {
  stats.tasks.total += 1;
  stats.tasks[info.state] += 1;
  if (info.state !== 'running') return;
  const holder = bySession.get(info.session);
  if (holder && info.ownerAlive) holder.holds.push(info.taskId);
  else {
    stats.tasks.orphaned += 1;
    stats.orphaned.push({ taskId: info.taskId, worker: info.worker, session: info.session });
  }
}

export async function collectStats(
  conn: CliConnection,
  opts: StatsOptions,
  warn: (l: string) => void,
): Promise<Stats> {
  const nodeStats = new Map<NodeView, NodeStats>(
    conn.nodes.map((n) => [
      n,
      {
        node: n.label,
        up: n.up,
        ...(n.error === undefined ? {} : { error: n.error }),
        records: 0,
        sessions: 0,
      },
    ]),
  );
  const workers = await liveSessions(conn, opts.count, (node, sessions) => {
    const s = nodeStats.get(node);
    if (s) s.sessions = sessions;
  });
  const bySession = new Map(workers.map((w) => [w.session, w]));
  const stats: Stats = {
    namespace: conn.opts.namespace,
    tasks: { total: 0, running: 0, done: 0, failed: 0, released: 0, orphaned: 0 },
    workers,
    orphaned: [],
    eviction: await evictionOf(conn),
  };
  if (conn.topology.kind === 'quorum') {
    const disagree: QuorumStats['disagree'] = [];
    for await (const r of quorumRecords(conn, opts, warn)) {
      r.nodes.forEach((copy, i) => {
        const s = nodeStats.get(conn.nodes[i] as NodeView);
        if (s && copy.status === 'record') s.records += 1;
      });
      if (r.agree < conn.upNodes.length) {
        disagree.push({ taskId: r.taskId, agree: r.agree, majority: r.verdict?.state ?? 'absent' });
      }
      if (r.verdict) tally(stats, r.verdict, bySession);
    }
    stats.quorum = { majority: conn.majority, nodes: [...nodeStats.values()], disagree };
  } else {
    for await (const info of records(conn, opts, warn)) tally(stats, info, bySession);
  }
  for (const w of workers) w.holds.sort();
  return stats;
}

/** The maxmemory-policy of every node that answered (docs/operations.md#eviction). */
async function evictionOf(conn: CliConnection): Promise<NodeEviction[]> {
  return Promise.all(
    conn.upNodes.map(async (n): Promise<NodeEviction> => {
      let node = n.label;
      try {
        const target = await conn.scanTarget(n);
        node = target.label;
        const p = await readPolicy(target.client, conn.opts.timeout);
        return { node, ...p, evicting: evicts(p.policy) };
      } catch (err) {
        return { node, error: (err as Error).message };
      }
    }),
  );
}

function evictionLines(list: NodeEviction[], quorum: boolean): string[] {
  return list.map((e) => {
    const on = quorum ? ` on ${e.node}` : '';
    if (e.policy === undefined) return `maxmemory-policy${on}: unknown (${e.error ?? ''})`;
    const p = formatPolicy({ policy: e.policy, maxmemory: e.maxmemory ?? 0 });
    return `maxmemory-policy${on}: ${p}${e.evicting ? ` — ${EVICTING_FLAG}` : ''}`;
  });
}

const MAX_HELD_SHOWN = 10;

/** Where the namespace lives, in words: the address, and on a Cluster its shard. */
async function location(conn: CliConnection): Promise<string> {
  const where = conn.where.replace(/^Redis at /, '');
  const node = conn.nodes[0];
  if (conn.topology.kind === 'cluster' && node)
    return `${where}, shard ${(await conn.scanTarget(node)).label}`;
  if (conn.topology.kind === 'quorum') return `${where}, majority ${conn.majority}`;
  return where;
}

function showQuorum(q: QuorumStats, out: (line: string) => void): void {
  out('nodes:');
  const rows = q.nodes.map((n) => [
    n.node,
    n.up ? 'up' : 'unreachable',
    n.up ? String(n.records) : '-',
    n.up ? String(n.sessions) : '-',
    n.error ?? '',
  ]);
  for (const line of table(['NODE', 'STATUS', 'RECORDS', 'SESSIONS', ''], rows)) out(`  ${line}`);
  if (q.disagree.length === 0) {
    out('the nodes that answered agree on every task');
    return;
  }
  const shown = q.disagree
    .slice(0, MAX_HELD_SHOWN)
    .map((d) => `${d.taskId} (${d.agree} agree; majority: ${d.majority})`);
  out(
    `the nodes disagree on ${q.disagree.length} task(s): ${shown.join(', ')}${q.disagree.length > MAX_HELD_SHOWN ? ', …' : ''}`,
  );
}

export async function statsCommand(opts: StatsOptions, g: GlobalOptions, io: Io): Promise<void> {
  await withConnection(
    g,
    async (conn) => {
      const s = await collectStats(conn, opts, io.err);
      if (opts.json) {
        io.out(JSON.stringify(s));
        return;
      }
      // names, task ids and errors come from Redis: shown with their control characters escaped
      const out = (line: string) => io.out(printable(line));
      const t = s.tasks;
      const scope = opts.hash === undefined ? '' : ` (hash ${opts.hash})`;
      out(`namespace ${s.namespace}${scope} on ${await location(conn)}`);
      out(
        `tasks: ${t.total} total, ${t.running} running (${t.orphaned} orphaned), ${t.done} done, ${t.failed} failed, ${t.released} released`,
      );
      for (const line of evictionLines(s.eviction, s.quorum !== undefined)) out(line);
      out(`workers: ${s.workers.length} live`);
      if (s.workers.length > 0) {
        const rows = s.workers.map((w) => [
          w.worker,
          w.host ?? '-',
          w.pid === undefined ? '-' : String(w.pid),
          w.startedAt === undefined ? '-' : iso(w.startedAt),
          duration(w.ttlMs),
          ...(w.nodes === undefined ? [] : [String(w.nodes)]),
          String(w.holds.length),
          w.holds.slice(0, MAX_HELD_SHOWN).join(', ') +
            (w.holds.length > MAX_HELD_SHOWN ? ', …' : ''),
        ]);
        const nodes = s.quorum ? ['NODES'] : [];
        for (const line of table(
          ['WORKER', 'HOST', 'PID', 'STARTED', 'TTL', ...nodes, 'HOLDS', 'TASKS'],
          rows,
        )) {
          out(`  ${line}`);
        }
      }
      if (s.orphaned.length > 0) {
        out(`orphaned: ${s.orphaned.map((o) => `${o.taskId} (was ${o.worker})`).join(', ')}`);
      }
      if (s.quorum) showQuorum(s.quorum, out);
    },
    io.err,
  );
}

export function registerStats(program: Command, globals: () => GlobalOptions, io: Io): void {
  program
    .command('stats')
    .description('counts of tasks by state, live workers and what each of them holds')
    .option(
      '--hash <key>',
      'count the fields of this hash (hash-field mode) instead of plain records',
    )
    .option(
      '--count <n>',
      'SCAN COUNT hint: keys examined per call',
      parsePositiveInt('--count'),
      500,
    )
    .option('--json', 'print JSON')
    .action((opts: StatsOptions) => statsCommand(opts, globals(), io));
}
