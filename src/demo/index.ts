import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONNECTION_ENV } from '../cli/connection.js';
import { defaults } from '../shared/options.js';
import { RedisServer } from '../testing/redis-server.js';

/**
 * The demo: two worker processes ("site-a" and "site-b") receive the same tasks and race
 * for each. In the middle of a task, the winner is killed with SIGKILL; the standby takes
 * over and finishes it. Prints a timeline, and tells how the takeover came about from the
 * kind the standby reports: with connection-bound sessions (the default) the killed
 * process's connection closes, and the standby takes over about `crashGraceMs` after it
 * sees that (`connection-lost`); without them (or where the connection gives no evidence)
 * the holder's session expires one TTL after its last heartbeat (`session-expired`).
 */
export interface DemoOptions {
  /** Use this Redis instead of starting a redis-server. @default process.env.REDIS_URL */
  redisUrl?: string;
  /**
   * Instead of `redisUrl`: any topology, as the CLI's connection environment variables
   * (PAIRLOCK_SENTINEL, PAIRLOCK_CLUSTER, PAIRLOCK_NODES, …; see docs/cli.md), with a
   * description for the first line.
   */
  connection?: { env: Readonly<Record<string, string>>; description: string };
  /** Tasks fed to the pair. @default 6 */
  tasks?: number;
  /**
   * Session TTL of both workers: the takeover waits for it when the holder's connection
   * gives no evidence (connection-bound sessions off, quorum mode). @default 1000
   */
  sessionTtlMs?: number;
  /**
   * Connection-bound sessions for both workers (option `connectionBound`).
   * @default true (or PAIRLOCK_CONNECTION_BOUND=0 in the environment: off)
   */
  connectionBound?: boolean;
  /** How long each task works. @default 300 */
  taskMs?: number;
  out?: (line: string) => void;
}

export interface DemoReport {
  tasks: number;
  sessionTtlMs: number;
  /** ms from the SIGKILL to the standby starting the task. */
  takeoverMs: number;
  /** The grant kind the standby reported for that takeover (connection-lost, session-expired…). */
  takeoverKind: string | undefined;
  /** Per task: who ran it, and whether both sides reported the same outcome. */
  outcomes: { taskId: string; worker: string; token: number; agreed: boolean; crashed?: string }[];
}

type Msg = { ev: string; [k: string]: unknown };

interface Site {
  name: string;
  proc: ChildProcess;
  id: string;
  alive: boolean;
}

function workerScript(): { file: string; execArgv: string[] } {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts'))
    return { file: join(dirname(here), 'worker.ts'), execArgv: ['--import', 'tsx'] };
  // built: dist/demo-worker.js beside the bundle
  const built = join(dirname(here), 'demo-worker.js');
  if (existsSync(built)) return { file: built, execArgv: [] };
  return {
    file: join(dirname(here), '..', 'src', 'demo', 'worker.ts'),
    execArgv: ['--import', 'tsx'],
  };
}

export async function runDemo(opts: DemoOptions = {}): Promise<DemoReport> {
  const out = opts.out ?? ((line: string) => console.log(line));
  const tasks = opts.tasks ?? 6;
  const sessionTtlMs = opts.sessionTtlMs ?? 1_000;
  const taskMs = opts.taskMs ?? 300;
  if (!Number.isInteger(tasks) || tasks < 3)
    throw new Error('the demo needs `tasks` >= 3 (it crashes a worker mid-way)');
  const crashAt = Math.ceil(tasks / 2);
  const connectionBound = opts.connectionBound ?? process.env.PAIRLOCK_CONNECTION_BOUND !== '0';
  const namespace = `demo-${process.pid}-${Date.now().toString(36)}`;

  let server: RedisServer | undefined;
  let redisUrl = opts.redisUrl ?? process.env.REDIS_URL;
  // the workers' connection: PAIRLOCK_REDIS_URL, or the CLI's variables (and no others)
  const connectionEnv: Record<string, string | undefined> = {};
  if (opts.connection) {
    for (const name of CONNECTION_ENV) connectionEnv[name] = undefined;
    Object.assign(connectionEnv, opts.connection.env);
    out(`redis     using ${opts.connection.description}`);
  } else if (!redisUrl) {
    server = await RedisServer.start();
    redisUrl = server.url;
    out(`redis     started redis-server on ${server.host}:${server.port}`);
  } else {
    out(`redis     using ${redisUrl}`);
  }
  const env = (name: string): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = {
      ...process.env,
      ...connectionEnv,
      PAIRLOCK_NAMESPACE: namespace,
      PAIRLOCK_NAME: name,
      PAIRLOCK_SESSION_TTL_MS: String(sessionTtlMs),
      PAIRLOCK_CONNECTION_BOUND: connectionBound ? '1' : '0',
    };
    if (opts.connection) delete e.PAIRLOCK_REDIS_URL;
    else e.PAIRLOCK_REDIS_URL = redisUrl;
    for (const [k, v] of Object.entries(e)) if (v === undefined) delete e[k];
    return e;
  };
  out(
    `pair      site-a and site-b, namespace ${namespace}, session TTL ${sessionTtlMs} ms, connection-bound sessions ${connectionBound ? 'on' : 'off'}, ${tasks} tasks`,
  );
  out('');

  const t0 = performance.now();
  const stamp = () => `+${String(Math.round(performance.now() - t0)).padStart(6)} ms`;
  const log = (who: string, text: string) => out(`${stamp()}  ${who.padEnd(7)} ${text}`);
  const listeners = new Set<(site: Site, m: Msg) => void>();
  const { file, execArgv } = workerScript();
  const names = new Map<string, string>(); // worker id -> site name
  const nameOf = (id: unknown) => names.get(String(id)) ?? String(id);

  const start = (name: string): Promise<Site> =>
    new Promise((resolve, reject) => {
      const proc = fork(file, [], {
        execArgv,
        env: env(name),
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const site: Site = { name, proc, id: '', alive: true };
      proc.once('exit', () => {
        site.alive = false;
      });
      proc.once('error', reject);
      proc.on('message', (m: Msg) => {
        if (m.ev === 'ready') {
          site.id = String(m.id);
          names.set(site.id, name);
          log(name, `worker ${site.id} up (pid ${proc.pid})`);
          resolve(site);
          return;
        }
        for (const fn of listeners) fn(site, m);
      });
    });

  const sites = [await start('site-a'), await start('site-b')];
  listeners.add((site, m) => {
    switch (m.ev) {
      case 'claimed':
        log(site.name, `claimed ${m.taskId} (token ${m.token}) and runs it`);
        break;
      case 'standby':
        log(site.name, `stands by for ${m.taskId} (held by ${nameOf(m.holder)})`);
        break;
      case 'peer-failed':
        // why (connection or session) shows in the kind of the takeover that follows
        log(site.name, `finds ${nameOf(m.worker)} gone; takes over its ${m.tasks} task(s)`);
        break;
      case 'took-over':
        log(site.name, `took over ${m.taskId} (token ${m.token}, ${m.kind} of ${nameOf(m.from)})`);
        break;
      case 'settled':
        log(site.name, `settled ${m.taskId}: ${m.state}`);
        break;
      case 'outcome': {
        const o = m.outcome as { taskId: string; role: string; worker: string; token: number };
        log(
          site.name,
          `outcome of ${o.taskId}: done by ${nameOf(o.worker)} (token ${o.token}; this side ${o.role})`,
        );
        break;
      }
      case 'run-error':
        log(site.name, `run of ${m.taskId} failed: ${m.message}`);
        break;
    }
  });

  const report: DemoReport = {
    tasks,
    sessionTtlMs,
    takeoverMs: Number.NaN,
    takeoverKind: undefined,
    outcomes: [],
  };
  try {
    for (let i = 1; i <= tasks; i++) {
      const taskId = `push-${i}`;
      const live = sites.filter((s) => s.alive);
      const outcomes = new Map<string, Msg>();
      let crashed: Site | undefined;
      let killedAt = 0;
      const finished = new Promise<void>((resolve) => {
        const fn = (site: Site, m: Msg) => {
          if (m.ev === 'started' && m.taskId === taskId && i === crashAt && !crashed) {
            crashed = site;
            // kill the winner in the middle of its work
            setTimeout(() => {
              killedAt = performance.now();
              log('demo', `SIGKILL ${site.name} (pid ${site.proc.pid}) in the middle of ${taskId}`);
              site.proc.kill('SIGKILL');
            }, taskMs / 2);
          }
          if (m.ev === 'took-over' && m.taskId === taskId && killedAt > 0) {
            report.takeoverMs = performance.now() - killedAt;
            report.takeoverKind = String(m.kind);
            const after = `started ${taskId} ${report.takeoverMs.toFixed(0)} ms after the crash`;
            log(site.name, `${after}: ${why(report.takeoverKind, nameOf(m.from), sessionTtlMs)}`);
          }
          if (m.ev === 'outcome' && (m.outcome as { taskId: string }).taskId === taskId) {
            outcomes.set(site.name, m);
            const expected = live.filter((s) => s.alive).length;
            if (outcomes.size >= expected) {
              listeners.delete(fn);
              resolve();
            }
          }
        };
        listeners.add(fn);
      });
      for (const s of live) s.proc.send({ cmd: 'run', taskId, holdMs: taskMs });
      await finished;
      const results = [...outcomes.values()].map(
        (m) => m.outcome as { worker: string; token: number; result: unknown },
      );
      const first = results[0]!;
      report.outcomes.push({
        taskId,
        worker: nameOf(first.worker),
        token: first.token,
        agreed: results.every((r) => r.worker === first.worker && r.token === first.token),
        ...(crashed ? { crashed: crashed.name } : {}),
      });
      if (crashed) {
        out('');
        const again = await start(crashed.name);
        sites[sites.indexOf(crashed)] = again;
        out('');
      }
    }
  } finally {
    for (const s of sites) if (s.alive) s.proc.kill('SIGKILL');
    await server?.stop();
  }

  out('');
  out('summary');
  for (const o of report.outcomes) {
    const note = o.crashed ? ` after ${o.crashed} was killed mid-task` : '';
    out(
      `  ${o.taskId.padEnd(8)} completed once, by ${o.worker} (token ${o.token})${note}; both sides agree: ${o.agreed ? 'yes' : 'NO'}`,
    );
  }
  out(
    `  takeover after SIGKILL: ${report.takeoverMs.toFixed(0)} ms (${report.takeoverKind ?? 'none seen'}), with a session TTL of ${sessionTtlMs} ms`,
  );
  for (const line of bound(report.takeoverKind, sessionTtlMs)) out(`  ${line}`);
  return report;
}

const GRACE = defaults.crashGraceMs;
const CHECK = defaults.connectionCheckIntervalMs;

/** What the takeover kind says happened to the killed holder. */
function why(kind: string, holder: string, ttl: number): string {
  switch (kind) {
    case 'connection-lost':
      return `${holder}'s connection closed with its process (its liveness channel lost its subscriber), seen for crashGraceMs (${GRACE} ms, checked every ${CHECK} ms); no wait for the session TTL (${ttl} ms)`;
    case 'session-expired':
      return `${holder}'s session expired on the Redis server, one session TTL (${ttl} ms) after its last heartbeat`;
    default:
      return `a ${kind} takeover from ${holder}`;
  }
}

/** The summary's account of what bounds a takeover, after the one that happened. */
function bound(kind: string | undefined, ttl: number): string[] {
  if (kind === 'connection-lost') {
    return [
      "(connection-bound sessions, the default: the killed holder's connection closed, and the",
      ` standby took over once it had seen that for crashGraceMs (${GRACE} ms), checking every ${CHECK} ms.`,
      ` The session TTL (${ttl} ms) bounds a takeover only when the connection does not close:`,
      ' a partition, a paused process, a host gone without closing its sockets)',
    ];
  }
  if (kind === 'session-expired') {
    return [
      '(no connection evidence here, so the session TTL decided: a session expires one TTL',
      ` (${ttl} ms) after the holder's last heartbeat, so a takeover comes about one TTL after a`,
      ` crash; with connection-bound sessions, the default, a closed connection is taken over in`,
      ` about crashGraceMs (${GRACE} ms) plus a check (${CHECK} ms))`,
    ];
  }
  return [];
}
