import type { Command } from 'commander';
import {
  type CliConnection,
  duration,
  type GlobalOptions,
  globEscape,
  type Io,
  iso,
  parsePositiveInt,
  scanKeys,
  table,
  withConnection,
} from './common.js';
import { records } from './list.js';

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
}

/** Live sessions: `<base>s:<session>` keys, their JSON description and remaining TTL. */
export async function liveSessions(conn: CliConnection, count: number): Promise<LiveWorker[]> {
  const out: LiveWorker[] = [];
  const prefix = conn.keys.sessionPrefix;
  for await (const page of scanKeys(conn.client, `${globEscape(prefix)}*`, count)) {
    const pipe = conn.client.pipeline();
    for (const key of page) pipe.get(key).pttl(key);
    const replies = (await pipe.exec()) ?? [];
    page.forEach((key, i) => {
      const value = replies[2 * i]?.[1] as string | null | undefined;
      const pttl = Number(replies[2 * i + 1]?.[1] ?? -2);
      if (value === null || value === undefined || pttl < 0) return; // expired meanwhile
      const session = key.slice(prefix.length);
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
        ttlMs: pttl,
        holds: [],
      };
      if (typeof desc.host === 'string') w.host = desc.host;
      if (typeof desc.pid === 'number') w.pid = desc.pid;
      if (typeof desc.startedAt === 'number') w.startedAt = desc.startedAt;
      out.push(w);
    });
  }
  out.sort((a, b) => (a.worker < b.worker ? -1 : a.worker > b.worker ? 1 : 0));
  return out;
}

export async function collectStats(
  conn: CliConnection,
  opts: StatsOptions,
  warn: (l: string) => void,
): Promise<Stats> {
  const workers = await liveSessions(conn, opts.count);
  const bySession = new Map(workers.map((w) => [w.session, w]));
  const stats: Stats = {
    namespace: conn.opts.namespace,
    tasks: { total: 0, running: 0, done: 0, failed: 0, released: 0, orphaned: 0 },
    workers,
    orphaned: [],
  };
  for await (const info of records(conn, opts, warn)) {
    stats.tasks.total += 1;
    stats.tasks[info.state] += 1;
    if (info.state !== 'running') continue;
    const holder = bySession.get(info.session);
    if (holder && info.ownerAlive) holder.holds.push(info.taskId);
    else {
      stats.tasks.orphaned += 1;
      stats.orphaned.push({ taskId: info.taskId, worker: info.worker, session: info.session });
    }
  }
  for (const w of workers) w.holds.sort();
  return stats;
}

const MAX_HELD_SHOWN = 10;

export async function statsCommand(opts: StatsOptions, g: GlobalOptions, io: Io): Promise<void> {
  await withConnection(g, async (conn) => {
    const s = await collectStats(conn, opts, io.err);
    if (opts.json) {
      io.out(JSON.stringify(s));
      return;
    }
    const t = s.tasks;
    const scope = opts.hash === undefined ? '' : ` (hash ${opts.hash})`;
    io.out(`namespace ${s.namespace}${scope} on ${conn.where.replace(/^Redis at /, '')}`);
    io.out(
      `tasks: ${t.total} total, ${t.running} running (${t.orphaned} orphaned), ${t.done} done, ${t.failed} failed, ${t.released} released`,
    );
    io.out(`workers: ${s.workers.length} live`);
    if (s.workers.length > 0) {
      const rows = s.workers.map((w) => [
        w.worker,
        w.host ?? '-',
        w.pid === undefined ? '-' : String(w.pid),
        w.startedAt === undefined ? '-' : iso(w.startedAt),
        duration(w.ttlMs),
        String(w.holds.length),
        w.holds.slice(0, MAX_HELD_SHOWN).join(', ') +
          (w.holds.length > MAX_HELD_SHOWN ? ', …' : ''),
      ]);
      for (const line of table(
        ['WORKER', 'HOST', 'PID', 'STARTED', 'TTL', 'HOLDS', 'TASKS'],
        rows,
      )) {
        io.out(`  ${line}`);
      }
    }
    if (s.orphaned.length > 0) {
      io.out(`orphaned: ${s.orphaned.map((o) => `${o.taskId} (was ${o.worker})`).join(', ')}`);
    }
  });
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
