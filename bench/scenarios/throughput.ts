/**
 * Scenario 1: a pair, both sides given every task (trivial handler, 64 in flight per
 * side, one local Redis, one child process per side). Peers in the same run: the
 * original algorithm (defaults, and intervals scaled down), redlock, and BullMQ with
 * two workers on one queue.
 */
import { Queue } from 'bullmq';
import { TcpProxy } from '../../src/testing/index.js';
import { type Message, Side } from '../lib/child.js';
import type { Ctx } from '../lib/context.js';
import { type Counts, describeCounts, total } from '../lib/counting.js';
import { commandStats, statsDelta } from '../lib/redis.js';
import { newResult, type ScenarioResult } from '../lib/report.js';
import { absNow, cpuMs, num, ratio, sleep } from '../lib/stats.js';

const CONCURRENCY = 64;
/** The bare batched probe (bench/probe.ts): what this machine allows pairlock's protocol shape. */
const PROBE = 'bare batched probe';
const PROBE_SETUP =
  '2 processes; one claim and one settle script per turn, one event per settle batch';
const PROBE_NOTE =
  'bare batched probe: not a lock service and not a peer to choose; a reference for what this machine allows pairlock’s protocol shape (bench/probe.ts). It has none of pairlock’s safety: no sessions, fencing tokens, attempts, deadlines, retries, takeovers, options, history or events, and it passes no results on.';
/** Tasks each side runs before the measurement (JIT, connections), at most WARMUP_CAP ms. */
const warmupOf = (ctx: Ctx) => (ctx.quick ? 300 : 1_000);
const WARMUP_CAP = 2_000;

interface PeerRun {
  readonly peer: string;
  readonly setup: string;
  /** Tasks both sides finished (BullMQ: jobs completed). */
  completed: number;
  /** Tasks given (or, capped: reached) */
  offered: number;
  wallMs: number;
  tasksPerSec: number;
  executions: number;
  /** Handler runs beyond one per task. */
  duplicates: number;
  /** Round trips sent by the sides (client-side count) per completed task. */
  roundTrips: number;
  roundTripDetail: string;
  /** Commands Redis executed (INFO commandstats, inside scripts included) per completed task. */
  serverCommands: number;
  /** CPU µs per completed task: Redis, and the two sides (plus the producer for BullMQ). */
  cpuRedisUs: number;
  cpuSidesUs: number;
  capped: boolean;
  note?: string;
  error?: string;
}

function sumCounts(list: Counts[]): Counts {
  const out: Counts = {};
  for (const c of list) for (const [k, v] of Object.entries(c)) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** Two sides of one kind race through the same N tasks; a task counts once both finished it. */
async function pairRun(
  ctx: Ctx,
  peer: string,
  setup: string,
  role: string,
  n: number,
  capMs: number,
  extra: Record<string, unknown>,
  /** Per side (A, B): what differs, e.g. a URL through a delaying proxy. */
  perSide: [Record<string, unknown>, Record<string, unknown>] = [{}, {}],
): Promise<PeerRun> {
  await ctx.redis.flush();
  const prefix = `${ctx.runId}:${role}:`;
  const base = { url: ctx.redis.url, n, concurrency: CONCURRENCY, prefix, capMs, ...extra };
  const sides = [
    new Side(`${peer} A`, role, { ...base, name: 'a', ...perSide[0] }),
    new Side(`${peer} B`, role, { ...base, name: 'b', ...perSide[1] }),
  ];
  try {
    await Promise.all(sides.map((s) => s.next('ready', 60_000)));
    const warmAt = absNow() + 100;
    await Promise.all(
      sides.map((s) =>
        s.request(
          { type: 'warm', n: warmupOf(ctx), capMs: WARMUP_CAP, startAt: warmAt },
          'warmed',
          30_000,
        ),
      ),
    );
    const before = await commandStats(ctx.redis.admin);
    const redisPid = ctx.redis.server.pid;
    const cpu0 = [cpuMs(redisPid), ...sides.map((s) => cpuMs(s.pid))];
    const startAt = absNow() + 100;
    const results = await Promise.all(
      sides.map((s) => s.request({ type: 'go', startAt }, 'result', capMs + 60_000)),
    );
    const cpu1 = [cpuMs(redisPid), ...sides.map((s) => cpuMs(s.pid))];
    const server = statsDelta(before, await commandStats(ctx.redis.admin));
    const [a, b] = results as [Message, Message];
    const ca = a.completions as Float64Array;
    const cb = b.completions as Float64Array;
    let completed = 0;
    let anySide = 0;
    let last = startAt;
    for (let i = 0; i < n; i++) {
      const x = ca[i] as number;
      const y = cb[i] as number;
      if (Number.isFinite(x) || Number.isFinite(y)) anySide += 1;
      if (Number.isFinite(x) && Number.isFinite(y)) {
        completed += 1;
        last = Math.max(last, x, y);
      }
    }
    const capped = completed < n;
    const wallMs = capped ? capMs : last - startAt;
    const executions = Number(a.executions) + Number(b.executions);
    const commands = sumCounts([a.commands as Counts, b.commands as Counts]);
    let serverTotal = 0;
    for (const v of server.values()) serverTotal += v.calls;
    const errors = Number(a.errors) + Number(b.errors);
    return {
      peer,
      setup,
      completed,
      offered: capped ? anySide : n,
      wallMs,
      tasksPerSec: (completed / wallMs) * 1000,
      executions,
      duplicates: Math.max(0, executions - anySide),
      roundTrips: total(commands) / Math.max(1, anySide),
      roundTripDetail: describeCounts(commands, Math.max(1, anySide)),
      serverCommands: serverTotal / Math.max(1, anySide),
      cpuRedisUs: (((cpu1[0] as number) - (cpu0[0] as number)) * 1000) / Math.max(1, anySide),
      cpuSidesUs:
        (((cpu1[1] as number) - (cpu0[1] as number) + (cpu1[2] as number) - (cpu0[2] as number)) *
          1000) /
        Math.max(1, anySide),
      capped,
      ...(errors > 0
        ? { error: `${errors} run errors, first: ${String(a.firstError || b.firstError)}` }
        : {}),
    };
  } finally {
    await Promise.all(sides.map((s) => s.stop()));
  }
}

/** BullMQ: two workers (one child process each) consume one queue fed by a producer here. */
async function bullRun(ctx: Ctx, n: number, capMs: number): Promise<PeerRun> {
  await ctx.redis.flush();
  const queueName = `bench-${ctx.runId}`;
  const init = { url: ctx.redis.url, queue: queueName, concurrency: CONCURRENCY };
  const sides = [
    new Side('BullMQ A', 'bull-worker', init),
    new Side('BullMQ B', 'bull-worker', init),
  ];
  const queue = new Queue(queueName, {
    connection: { host: ctx.redis.host, port: ctx.redis.port, maxRetriesPerRequest: null },
  });
  queue.on('error', () => {});
  try {
    await Promise.all(sides.map((s) => s.next('ready', 60_000)));
    await queue.waitUntilReady();
    const counts = [0, 0];
    sides.forEach((s, i) => {
      s.listeners.set('progress', (m) => {
        counts[i] = Number(m.count);
      });
    });
    // warm-up, as for the other peers
    await queue.addBulk(
      Array.from({ length: warmupOf(ctx) }, (_, i) => ({ name: 'warm', data: { i } })),
    );
    const warmBy = absNow() + 30_000;
    while ((counts[0] ?? 0) + (counts[1] ?? 0) < warmupOf(ctx) && absNow() < warmBy)
      await sleep(10);
    const warmed = (counts[0] ?? 0) + (counts[1] ?? 0);
    const before = await commandStats(ctx.redis.admin);
    const redisPid = ctx.redis.server.pid;
    const cpu0 = [cpuMs(redisPid), ...sides.map((s) => cpuMs(s.pid)), process.cpuUsage()];
    const start = absNow();
    const stopAt = start + capMs;
    let added = 0;
    for (let i = 0; i < n && absNow() < stopAt; i += 1_000) {
      const chunk = Array.from({ length: Math.min(1_000, n - i) }, (_, j) => ({
        name: 'task',
        data: { i: i + j },
      }));
      await queue.addBulk(chunk);
      added += chunk.length;
    }
    const addMs = absNow() - start;
    while ((counts[0] ?? 0) + (counts[1] ?? 0) < warmed + added && absNow() < stopAt)
      await sleep(10);
    const cpu1 = [cpuMs(redisPid), ...sides.map((s) => cpuMs(s.pid))];
    const producerCpu = process.cpuUsage(cpu0[3] as NodeJS.CpuUsage);
    const reports = await Promise.all(
      sides.map((s) => s.request({ type: 'report' }, 'result', 30_000)),
    );
    const server = statsDelta(before, await commandStats(ctx.redis.admin));
    let completed = 0;
    let last = start;
    for (const r of reports) {
      for (const t of r.completions as Float64Array) {
        if (t >= start && t <= stopAt) {
          completed += 1;
          last = Math.max(last, t);
        }
      }
    }
    const capped = completed < n;
    const wallMs = capped ? capMs : last - start;
    let serverTotal = 0;
    for (const v of server.values()) serverTotal += v.calls;
    const evalsha = server.get('evalsha')?.calls ?? 0;
    return {
      peer: 'BullMQ',
      setup: '2 workers (1 process each), producer adds in bulk',
      completed,
      offered: n,
      wallMs,
      tasksPerSec: (completed / wallMs) * 1000,
      executions: completed,
      duplicates: 0,
      roundTrips: Number.NaN,
      roundTripDetail: `server: EVALSHA ${(evalsha / Math.max(1, completed)).toFixed(2)}/job`,
      serverCommands: serverTotal / Math.max(1, completed),
      cpuRedisUs: (((cpu1[0] as number) - (cpu0[0] as number)) * 1000) / Math.max(1, completed),
      cpuSidesUs:
        (((cpu1[1] as number) - (cpu0[1] as number) + (cpu1[2] as number) - (cpu0[2] as number)) *
          1000 +
          producerCpu.user +
          producerCpu.system) /
        Math.max(1, completed),
      capped,
      note: `adding ${num(n)} jobs took ${num(addMs)} ms of the wall time; each job runs on one worker only`,
    };
  } finally {
    await queue.close().catch(() => {});
    await Promise.all(sides.map((s) => s.stop()));
  }
}

const COLUMNS = [
  'peer',
  'setup',
  'tasks done',
  'wall',
  'tasks/s',
  'pairlock ×',
  'executions/task',
  'duplicates',
  'round trips/task',
  'Redis cmds/task',
  'CPU/task: Redis + sides',
];

function rows(runs: readonly PeerRun[]): string[][] {
  const mine = runs.find((r) => r.peer.startsWith('pairlock'));
  return runs.map((r) => [
    r.peer,
    r.setup,
    r.error ? 'error' : `${num(r.completed)}${r.capped ? ` of ${num(r.offered)} (capped)` : ''}`,
    Number.isFinite(r.wallMs) ? `${(r.wallMs / 1000).toFixed(2)} s` : 'n/a',
    num(r.tasksPerSec, r.tasksPerSec < 100 ? 1 : 0),
    r === mine ? '1.00×' : ratio(mine?.tasksPerSec ?? Number.NaN, r.tasksPerSec),
    r.offered
      ? (r.executions / Math.max(1, r.peer === 'BullMQ' ? r.completed : r.offered)).toFixed(3)
      : 'n/a',
    num(r.duplicates),
    Number.isFinite(r.roundTrips) ? r.roundTrips.toFixed(2) : 'n/a',
    Number.isFinite(r.serverCommands) ? r.serverCommands.toFixed(1) : 'n/a',
    Number.isFinite(r.cpuRedisUs)
      ? `${r.cpuRedisUs.toFixed(0)} + ${r.cpuSidesUs.toFixed(0)} µs`
      : 'n/a',
  ]);
}

export async function throughput(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('throughput', '1. Pair throughput');
  const n = ctx.quick ? 2_000 : 20_000;
  const cap = ctx.quick ? 20_000 : 60_000;
  const baselineWindow = ctx.quick ? 3_000 : 21_000;
  const scaled = { first: 10, other: 30 };
  const attempt = async (runs: PeerRun[], label: string, fn: () => Promise<PeerRun>) => {
    ctx.log(`throughput: ${label}`);
    try {
      runs.push(await fn());
    } catch (err) {
      runs.push({
        peer: label,
        setup: '',
        completed: 0,
        offered: n,
        wallMs: Number.NaN,
        tasksPerSec: Number.NaN,
        executions: 0,
        duplicates: 0,
        roundTrips: Number.NaN,
        roundTripDetail: '',
        serverCommands: Number.NaN,
        cpuRedisUs: Number.NaN,
        cpuSidesUs: Number.NaN,
        capped: false,
        error: String((err as Error).message ?? err),
      });
    }
  };
  const runs: PeerRun[] = [];
  await attempt(runs, 'pairlock', () =>
    pairRun(ctx, 'pairlock', '2 workers (1 process each), defaults', 'tp-pairlock', n, cap, {
      namespace: `tp-${ctx.runId}`,
    }),
  );
  await attempt(runs, 'original, defaults', () =>
    pairRun(
      ctx,
      'original, defaults',
      `2 processes; first/other interval 10 s/30 s; continuous feed, ${baselineWindow / 1000} s window`,
      'tp-baseline',
      200_000,
      baselineWindow,
      {},
    ),
  );
  await attempt(runs, 'original, intervals ÷1000', () =>
    pairRun(
      ctx,
      'original, intervals ÷1000',
      `2 processes; first/other interval ${scaled.first} ms/${scaled.other} ms`,
      'tp-baseline',
      n,
      cap,
      scaled,
    ),
  );
  await attempt(runs, 'redlock', () =>
    pairRun(ctx, 'redlock', '2 processes; acquire (retryCount 0) + release', 'tp-redlock', n, cap, {
      ttlMs: 10_000,
    }),
  );
  await attempt(runs, 'BullMQ', () => bullRun(ctx, n, cap));
  await attempt(runs, PROBE, () => pairRun(ctx, PROBE, PROBE_SETUP, 'tp-probe', n, cap, {}));

  res.tables.push({
    title: `Pair throughput: ${num(n)} tasks, both sides run() every task (trivial handler), ${CONCURRENCY} in flight per side`,
    columns: COLUMNS,
    rows: rows(runs),
    notes: [
      'tasks/s: tasks finished by both sides (BullMQ: jobs completed by either worker) per second of wall time, from the common start to the last finish; pairlock ×: pairlock’s tasks/s divided by the peer’s, same run.',
      `original, defaults: a side that finds the task still running waits firstAttemptInterval (10 s) before it looks again, and that lane of its 64 stays blocked meanwhile. With a trivial handler this happens only when its GET falls between the winner's SETNX and its SET, so the figure depends on timing luck and on how long one looks: it is measured as a sustained rate, tasks finished by both sides within a ${baselineWindow / 1000} s window of a continuous feed. Intervals ÷1000 shows the same algorithm when that wait is not the limit.`,
      'redlock: the loser of a race gets no outcome (it only learns the lock is taken); when it comes after the winner released, it runs the task again: these are the duplicates.',
      'BullMQ is a queue: each job runs on one of the two workers, and the producer is part of the measurement (jobs added from the bench process).',
      PROBE_NOTE,
      'round trips/task: commands the two sides sent (client-side count, all connections), per task; Redis cmds/task: commands Redis executed, commands inside Lua scripts included (INFO commandstats).',
      'CPU/task: CPU time used during the run by the Redis process and by the two side processes (BullMQ: plus the producer), per task (10 ms clock resolution).',
      `Every peer first runs ${num(warmupOf(ctx))} tasks of its own (at most ${WARMUP_CAP / 1000} s) before the measured run.`,
      ...runs.filter((r) => r.error).map((r) => `${r.peer}: ${r.error}`),
      ...runs.filter((r) => r.note).map((r) => `${r.peer}: ${r.note}`),
    ],
  });

  // The same pair when the handler takes a little time (a timer, no CPU): the case the
  // original's timed retries were made for
  const slow: PeerRun[] = [];
  if (!ctx.quick) {
    const handlerMs = 5;
    const slowN = 5_000;
    const slowWindow = 21_000;
    await attempt(slow, 'pairlock, 5 ms handler', () =>
      pairRun(
        ctx,
        'pairlock, 5 ms handler',
        '2 workers (1 process each), defaults',
        'tp-pairlock',
        slowN,
        cap,
        {
          namespace: `tp5-${ctx.runId}`,
          handlerMs,
        },
      ),
    );
    await attempt(slow, 'original, defaults, 5 ms handler', () =>
      pairRun(
        ctx,
        'original, defaults, 5 ms handler',
        `2 processes; first/other interval 10 s/30 s; continuous feed, ${slowWindow / 1000} s window`,
        'tp-baseline',
        200_000,
        slowWindow,
        { handlerMs },
      ),
    );
    await attempt(slow, 'original, intervals ÷1000, 5 ms handler', () =>
      pairRun(
        ctx,
        'original, intervals ÷1000, 5 ms handler',
        `2 processes; first/other interval ${scaled.first} ms/${scaled.other} ms`,
        'tp-baseline',
        slowN,
        cap,
        { ...scaled, handlerMs },
      ),
    );
    await attempt(slow, `${PROBE}, 5 ms handler`, () =>
      pairRun(ctx, `${PROBE}, 5 ms handler`, PROBE_SETUP, 'tp-probe', slowN, cap, { handlerMs }),
    );
    // the lane bound: each task holds a lane on each side for at least the handler's time
    const bound = (CONCURRENCY * 1000) / handlerMs;
    res.tables.push({
      title: `Pair throughput with a 5 ms handler (it waits on a timer): ${num(slowN)} tasks, ${CONCURRENCY} in flight per side`,
      columns: [...COLUMNS.slice(0, 5), 'of lane bound', ...COLUMNS.slice(5)],
      rows: rows(slow).map((row, i) => {
        const tps = slow[i]?.tasksPerSec ?? Number.NaN;
        const share = Number.isFinite(tps) ? `${((100 * tps) / bound).toFixed(0)}%` : 'n/a';
        return [...row.slice(0, 5), share, ...row.slice(5)];
      }),
      notes: [
        `of lane bound: tasks/s divided by ${CONCURRENCY} lanes ÷ ${handlerMs} ms = ${num(bound)} tasks/s, the most ${CONCURRENCY} tasks in flight per side can finish when every task holds a lane for exactly the handler's time. The handler's timer itself fires a little late (Node timers), so 100% is out of reach for any peer.`,
        'Once the handler takes longer than the gap between the two sides, the original’s loser finds the task running and waits out its retry interval; pairlock’s loser is woken by the settle event.',
        PROBE_NOTE,
        ...slow.filter((r) => r.error).map((r) => `${r.peer}: ${r.error}`),
      ],
    });
  }
  // Two sites: side B reaches Redis through the project's TCP proxy with a 40 ms round
  // trip, and each side keeps 1,000 tasks in flight. Batching is what makes this fast:
  // a task costs a share of a round trip, not two of them.
  const far: PeerRun[] = [];
  if (!ctx.quick) {
    const farN = 20_000;
    const inFlight = 1_000;
    const proxy = await TcpProxy.start({ targetPort: ctx.redis.port, delayMs: 20 });
    try {
      const farSide: [Record<string, unknown>, Record<string, unknown>] = [{}, { url: proxy.url }];
      await attempt(far, 'pairlock, one side 40 ms away', () =>
        pairRun(
          ctx,
          'pairlock, one side 40 ms away',
          `2 workers; side B through a proxy with 40 ms RTT; ${num(inFlight)} in flight per side`,
          'tp-pairlock',
          farN,
          cap,
          { namespace: `tpf-${ctx.runId}`, concurrency: inFlight },
          farSide,
        ),
      );
      await attempt(far, 'original, intervals ÷1000, one side 40 ms away', () =>
        pairRun(
          ctx,
          'original, intervals ÷1000, one side 40 ms away',
          `2 processes; side B through the same proxy; ${num(inFlight)} in flight per side`,
          'tp-baseline',
          farN,
          cap,
          { ...scaled, concurrency: inFlight },
          farSide,
        ),
      );
    } finally {
      await proxy.close();
    }
    res.tables.push({
      title: `Pair throughput across sites: ${num(farN)} tasks, side B 40 ms (round trip) from Redis, ${num(inFlight)} in flight per side`,
      columns: COLUMNS,
      rows: rows(far),
      notes: [
        'A task counts when both sides finished it. The far side pays a round trip per batch of transitions (pairlock) or per command (the original).',
        ...far.filter((r) => r.error).map((r) => `${r.peer}: ${r.error}`),
      ],
    });
  }
  res.notes.push(
    `Round trips per task, by command: ${[...runs, ...slow, ...far]
      .filter((r) => r.roundTripDetail)
      .map((r) => `${r.peer}: ${r.roundTripDetail}`)
      .join('; ')}`,
  );
  res.data.runs = runs;
  res.data.slowHandlerRuns = slow;
  res.data.farRuns = far;
  res.data.n = n;
  return res;
}
