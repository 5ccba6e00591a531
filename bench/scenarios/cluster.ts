/**
 * Scenario 9: the pair of scenario 1 on a Redis Cluster of 3 masters, next to the same
 * pair on one Redis: what a task costs there (Redis commands, round trips, script calls).
 * Both sides run every task (trivial handler, 64 in flight per side). Both workers run in
 * the bench process, each with an ioredis client of its own (a `Cluster` on the cluster,
 * the worker's own client from the URL on one Redis), so tasks/s is not the figure of
 * scenario 1 (one process per side); the counts are comparable.
 */
import { Cluster, Redis } from 'ioredis';
import { PairedWorker } from '../../src/index.js';
import { Keys } from '../../src/redis/keys.js';
import { type ClusterTopology, startCluster } from '../../src/testing/index.js';
import type { Ctx } from '../lib/context.js';
import {
  type Counts,
  describeCounts,
  diffCounts,
  installCommandCounter,
  total,
} from '../lib/counting.js';
import { type CommandStat, commandStats, statsDelta } from '../lib/redis.js';
import { newResult, type ScenarioResult } from '../lib/report.js';
import { absNow, cpuMs, num, pool, sleep } from '../lib/stats.js';

const CONCURRENCY = 64;
const MASTERS = 3;
/** Tasks each side runs before the measurement (JIT, connections, peers met), at most WARMUP_CAP ms. */
const warmupOf = (ctx: Ctx) => (ctx.quick ? 300 : 1_000);
const WARMUP_CAP = 3_000;

interface TopologyRun {
  readonly topology: string;
  readonly setup: string;
  completed: number;
  /** Tasks at least one side finished: the per-task denominator. */
  reached: number;
  offered: number;
  wallMs: number;
  tasksPerSec: number;
  executions: number;
  /** Script calls the two sides sent (EVALSHA/EVAL, client-side count) per task. */
  scriptCalls: number;
  scriptDetail: string;
  /** Every command the two sides sent (client-side count) per task. */
  roundTrips: number;
  roundTripDetail: string;
  /** Commands the masters executed (INFO commandstats, inside scripts included) per task. */
  serverCommands: number;
  serverDetail: string;
  /** Masters that executed any command during the run. */
  mastersBusy: number;
  cpuRedisUs: number;
  cpuBenchUs: number;
  /** Task history: XADD calls per task; transitions, stream payload and memory per transition. */
  historyXaddsPerTask: number;
  historyTransitions: number;
  historyPayloadBytes: number;
  historyMemoryBytes: number;
  capped: boolean;
  error?: string;
}

/** Where the pair talks to, and the bench's own view of every master. */
interface Target {
  readonly topology: string;
  readonly setup: string;
  /** One admin connection per master (INFO only, never given to a worker). */
  readonly admins: readonly Redis[];
  readonly pids: readonly (number | undefined)[];
  worker(name: string, namespace: string): PairedWorker;
  /** A client that can read the namespace's keys (the task history). */
  reader(): Redis | Cluster;
  /** Releases what worker() created beyond the worker itself. */
  release(): Promise<void>;
}

async function serverSnapshot(admins: readonly Redis[]): Promise<Map<string, CommandStat>[]> {
  return Promise.all(admins.map((a) => commandStats(a)));
}

/**
 * Commands the masters executed between two snapshots, summed, without the bench's own:
 * the INFO of the first snapshot shows in the second (INFO does not count itself), one per
 * master; the bench sends nothing else to them meanwhile.
 */
function serverDelta(
  before: Map<string, CommandStat>[],
  after: Map<string, CommandStat>[],
): { counts: Counts; busy: number } {
  const counts: Counts = {};
  let busy = 0;
  after.forEach((snap, i) => {
    const delta = statsDelta(before[i] ?? new Map(), snap);
    const info = delta.get('info');
    if (info) info.calls -= 1;
    let mine = 0;
    for (const [k, v] of delta) {
      if (v.calls <= 0) continue;
      counts[k] = (counts[k] ?? 0) + v.calls;
      mine += v.calls;
    }
    if (mine > 0) busy += 1;
  });
  return { counts, busy };
}

const isScript = (k: string) => k.startsWith('evalsha') || k.startsWith('eval');

function pick(c: Counts, keep: (k: string) => boolean): Counts {
  return Object.fromEntries(Object.entries(c).filter(([k]) => keep(k)));
}

/** The pair on `target`: both sides run the same `n` tasks; a task counts once both finished it. */
async function pairRun(ctx: Ctx, target: Target, n: number, capMs: number): Promise<TopologyRun> {
  const counter = installCommandCounter();
  const namespace = `cl-${ctx.runId}`;
  const prefix = `${ctx.runId}:cl:`;
  const workers = [target.worker('a', namespace), target.worker('b', namespace)];
  try {
    await Promise.all(workers.map((w) => w.start()));
    const run = (w: PairedWorker, id: string, exec: () => void) =>
      w.run(id, () => {
        exec();
        return id;
      });
    // warm-up on tasks of their own (JIT, connections, the peer met), both sides at once
    const warmN = warmupOf(ctx);
    const warmStop = absNow() + WARMUP_CAP;
    await Promise.all(
      workers.map((w) =>
        pool(warmN, CONCURRENCY, warmStop, (i) =>
          run(w, `${prefix}warm-${i}`, () => {}).then(
            () => {},
            () => {},
          ),
        ),
      ),
    );
    await sleep(50);

    const historyKey = new Keys('pairlock', namespace).history;
    const reader = target.reader();
    const lastId = async () =>
      (
        (await reader.xrevrange(historyKey, '+', '-', 'COUNT', 1)) as [string, string[]][]
      )[0]?.[0] ?? '0-0';
    const memory = async () =>
      Number((await reader.call('MEMORY', 'USAGE', historyKey, 'SAMPLES', '0')) ?? 0);
    const historyFrom = await lastId();
    const memory0 = await memory();
    const before = await serverSnapshot(target.admins);
    const redisCpu0 = target.pids.map(cpuMs);
    const benchCpu0 = process.cpuUsage();
    const counts0 = counter();
    const completions = workers.map(() => new Float64Array(n).fill(Number.NaN));
    let executions = 0;
    let errors = 0;
    let firstError = '';
    const start = absNow();
    const stopAt = start + capMs;
    await Promise.all(
      workers.map((w, side) =>
        pool(n, CONCURRENCY, stopAt, async (i) => {
          try {
            await run(w, `${prefix}${i}`, () => {
              executions += 1;
            });
            (completions[side] as Float64Array)[i] = absNow();
          } catch (err) {
            errors += 1;
            firstError ||= String((err as Error)?.message ?? err);
          }
        }),
      ),
    );
    const client = diffCounts(counts0, counter());
    const cpuBench = process.cpuUsage(benchCpu0);
    const cpuRedis = target.pids.reduce<number>(
      (sum, pid, i) => sum + cpuMs(pid) - (redisCpu0[i] ?? 0),
      0,
    );
    const server = serverDelta(before, await serverSnapshot(target.admins));
    // the history the measured run wrote: its entries' payload, and the stream's growth
    let transitions = 0;
    let payload = 0;
    for (let from = `(${historyFrom}`; ; ) {
      const page = (await reader.xrange(historyKey, from, '+', 'COUNT', 1_000)) as [
        string,
        string[],
      ][];
      for (const [, fields] of page) {
        for (let i = 0; i < fields.length; i++) payload += Buffer.byteLength(fields[i] ?? '');
        const text = fields[fields.indexOf('t') + 1] ?? '';
        transitions += text === '' ? 0 : text.split('\n').length;
      }
      if (page.length < 1_000) break;
      from = `(${page[page.length - 1]?.[0]}`;
    }
    const memoryGrowth = (await memory()) - memory0;

    const [ca, cb] = completions as [Float64Array, Float64Array];
    let completed = 0;
    let reached = 0;
    let last = start;
    for (let i = 0; i < n; i++) {
      const x = ca[i] as number;
      const y = cb[i] as number;
      if (Number.isFinite(x) || Number.isFinite(y)) reached += 1;
      if (Number.isFinite(x) && Number.isFinite(y)) {
        completed += 1;
        last = Math.max(last, x, y);
      }
    }
    const per = Math.max(1, reached);
    const capped = completed < n;
    const wallMs = capped ? capMs : last - start;
    const scripts = pick(client, isScript);
    const serverScripts = pick(server.counts, isScript);
    return {
      topology: target.topology,
      setup: target.setup,
      completed,
      reached,
      offered: n,
      wallMs,
      tasksPerSec: (completed / wallMs) * 1000,
      executions,
      scriptCalls: total(scripts) / per,
      scriptDetail: describeCounts(scripts, per, 3),
      roundTrips: total(client) / per,
      roundTripDetail: describeCounts(
        pick(client, (k) => !isScript(k)),
        per,
        3,
      ),
      serverCommands: total(server.counts) / per,
      serverDetail: `${describeCounts(serverScripts, per, 3)}; inside scripts and others: ${describeCounts(
        pick(server.counts, (k) => !isScript(k)),
        per,
      )}`,
      mastersBusy: server.busy,
      cpuRedisUs: (cpuRedis * 1000) / per,
      cpuBenchUs: (cpuBench.user + cpuBench.system) / per,
      historyXaddsPerTask: (server.counts.xadd ?? 0) / per,
      historyTransitions: transitions,
      historyPayloadBytes: transitions ? payload / transitions : Number.NaN,
      historyMemoryBytes: transitions ? memoryGrowth / transitions : Number.NaN,
      capped,
      ...(errors > 0 ? { error: `${errors} run errors, first: ${firstError}` } : {}),
    };
  } finally {
    await Promise.all(workers.map((w) => w.close().catch(() => {})));
    await target.release();
  }
}

function oneRedis(ctx: Ctx): Target {
  return {
    topology: 'one Redis',
    setup: '2 workers in the bench process, each its own client (from the URL)',
    admins: [ctx.redis.admin],
    pids: [ctx.redis.server.pid],
    worker: (name, namespace) => new PairedWorker({ redis: ctx.redis.url, namespace, name }),
    reader: () => ctx.redis.admin,
    release: async () => {},
  };
}

function onCluster(topo: ClusterTopology, admins: Redis[]): Target {
  const clients: Cluster[] = [];
  return {
    topology: `Cluster, ${MASTERS} masters`,
    setup: '2 workers in the bench process, each its own ioredis Cluster client',
    admins,
    pids: topo.nodes.map((n) => n.pid),
    worker: (name, namespace) => {
      // one startup node is enough: ioredis learns the slot map and follows redirections
      const c = new Cluster([topo.startupNodes[0] as { host: string; port: number }], {
        enableOfflineQueue: false,
        redisOptions: { maxRetriesPerRequest: 0 },
      });
      c.on('error', () => {});
      clients.push(c);
      return new PairedWorker({ redis: c, namespace, name });
    },
    reader: () => {
      const c = new Cluster([topo.startupNodes[0] as { host: string; port: number }]);
      c.on('error', () => {});
      clients.push(c);
      return c;
    },
    release: async () => {
      for (const c of clients.splice(0)) c.disconnect();
    },
  };
}

const COLUMNS = [
  'topology',
  'setup',
  'tasks done',
  'wall',
  'tasks/s',
  'executions/task',
  'script calls/task',
  'round trips/task',
  'Redis cmds/task',
  'masters busy',
  'CPU/task: Redis + bench',
  'history: XADD/task',
  'history: bytes/transition (payload, memory)',
];

function rows(runs: readonly TopologyRun[]): string[][] {
  return runs.map((r) => [
    r.topology,
    r.setup,
    r.error && r.completed === 0
      ? 'error'
      : `${num(r.completed)}${r.capped ? ` of ${num(r.offered)} (capped)` : ''}`,
    Number.isFinite(r.wallMs) ? `${(r.wallMs / 1000).toFixed(2)} s` : 'n/a',
    Number.isFinite(r.tasksPerSec) ? num(r.tasksPerSec, r.tasksPerSec < 100 ? 1 : 0) : 'n/a',
    r.reached ? (r.executions / r.reached).toFixed(3) : 'n/a',
    Number.isFinite(r.scriptCalls) ? r.scriptCalls.toFixed(3) : 'n/a',
    Number.isFinite(r.roundTrips) ? r.roundTrips.toFixed(3) : 'n/a',
    Number.isFinite(r.serverCommands) ? r.serverCommands.toFixed(2) : 'n/a',
    Number.isFinite(r.serverCommands)
      ? `${r.mastersBusy} of ${r.topology.startsWith('Cluster') ? MASTERS : 1}`
      : 'n/a',
    Number.isFinite(r.cpuRedisUs)
      ? `${r.cpuRedisUs.toFixed(0)} + ${r.cpuBenchUs.toFixed(0)} µs`
      : 'n/a',
    Number.isFinite(r.historyXaddsPerTask) ? r.historyXaddsPerTask.toFixed(3) : 'n/a',
    Number.isFinite(r.historyPayloadBytes)
      ? `${r.historyPayloadBytes.toFixed(0)}, ${r.historyMemoryBytes.toFixed(0)} (${num(r.historyTransitions)} transitions)`
      : 'n/a',
  ]);
}

function failed(target: { topology: string; setup: string }, n: number, err: unknown): TopologyRun {
  return {
    topology: target.topology,
    setup: target.setup,
    completed: 0,
    reached: 0,
    offered: n,
    wallMs: Number.NaN,
    tasksPerSec: Number.NaN,
    executions: 0,
    scriptCalls: Number.NaN,
    scriptDetail: '',
    roundTrips: Number.NaN,
    roundTripDetail: '',
    serverCommands: Number.NaN,
    serverDetail: '',
    mastersBusy: 0,
    cpuRedisUs: Number.NaN,
    cpuBenchUs: Number.NaN,
    historyXaddsPerTask: Number.NaN,
    historyTransitions: 0,
    historyPayloadBytes: Number.NaN,
    historyMemoryBytes: Number.NaN,
    capped: false,
    error: String((err as Error)?.message ?? err),
  };
}

export async function cluster(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('cluster', '9. Pair on a Redis Cluster');
  const n = ctx.quick ? 1_000 : 10_000;
  const cap = ctx.quick ? 20_000 : 60_000;
  const runs: TopologyRun[] = [];

  ctx.log('cluster: one Redis');
  await ctx.redis.flush();
  const single = oneRedis(ctx);
  try {
    runs.push(await pairRun(ctx, single, n, cap));
  } catch (err) {
    runs.push(failed(single, n, err));
  }

  ctx.log(`cluster: starting a cluster of ${MASTERS} masters`);
  const label = {
    topology: `Cluster, ${MASTERS} masters`,
    setup: '2 workers in the bench process, each its own ioredis Cluster client',
  };
  let topo: ClusterTopology | undefined;
  const admins: Redis[] = [];
  try {
    topo = await startCluster({ masters: MASTERS });
    for (const node of topo.nodes) {
      const admin = new Redis({ host: node.host, port: node.port, lazyConnect: true });
      admin.on('error', () => {});
      await admin.connect();
      admins.push(admin);
    }
    ctx.log('cluster: the pair on the cluster');
    runs.push(await pairRun(ctx, onCluster(topo, admins), n, cap));
  } catch (err) {
    runs.push(failed(label, n, err));
  } finally {
    for (const a of admins) a.disconnect();
    await topo?.close();
  }

  res.data.runs = runs;
  res.tables.push({
    title: `A pair on one Redis and on a Redis Cluster: ${num(n)} tasks, both sides run() every task (trivial handler), ${CONCURRENCY} in flight per side`,
    columns: COLUMNS,
    rows: rows(runs),
    notes: [
      'The counts are the figures to compare; tasks/s is secondary: both workers share the bench process (and the machine its cores with the Redis servers), so it moves from run to run and is not the figure of scenario 1 (one process per side).',
      'script calls/task: EVALSHA/EVAL the two sides sent (client-side count, a redirected call counts twice), per task some side finished; round trips/task: every command the two sides sent, on all their connections, scripts included. A script call carries every transition of its kind made in the same event-loop turn (src/redis/batcher.ts), so with 64 tasks in flight per side one call serves many tasks: fewer than one per task.',
      'Redis cmds/task: commands the masters executed (INFO commandstats summed over every master, commands inside Lua scripts included), per task; the bench’s own INFO calls are left out. A namespace is one hash slot, so one master does the work: masters busy counts those that executed any command during the run.',
      'CPU/task: CPU time of the Redis processes (all masters) and of the bench process (both workers), per task (10 ms clock resolution).',
      'history: the task history the measured run wrote (lua/includes/history.lua: one XADD per script call that made transitions): XADD calls per task, and per transition the entries’ field bytes (payload) and the growth of the stream’s MEMORY USAGE (memory), over the transitions counted.',
      `Each pair first runs ${num(warmupOf(ctx))} tasks of its own per side (at most ${WARMUP_CAP / 1000} s) before the measured run.`,
      ...runs.flatMap((r) =>
        r.scriptDetail
          ? [
              `${r.topology}: scripts per task: ${r.scriptDetail}; other round trips per task: ${r.roundTripDetail || 'none'}; server commands per task: ${r.serverDetail}.`,
            ]
          : [],
      ),
      ...runs.filter((r) => r.error).map((r) => `${r.topology}: ${r.error}`),
    ],
  });
  return res;
}
