/**
 * Scenario 4: crash takeover. A child process holds K tasks (handlers that never
 * return); a standby covers them; the child is killed with SIGKILL and we time, per
 * task, from the kill to the standby starting the handler. BullMQ: a worker process
 * holding K active jobs is killed; a second worker picks them up through stalled-job
 * recovery.
 */
import { Queue, Worker } from 'bullmq';
import { PairedWorker } from '../../src/index.js';
import { TcpProxy } from '../../src/testing/index.js';
import { Side } from '../lib/child.js';
import type { Ctx } from '../lib/context.js';
import { diffCounts, installCommandCounter, total } from '../lib/counting.js';
import { commandStats, statsDelta } from '../lib/redis.js';
import { newResult, type ScenarioResult, type Series } from '../lib/report.js';
import { downsample, ms, ratio, type Summary, signedMs, sleep, summarize } from '../lib/stats.js';

const SESSION_TTL = 1_000;

/** How a round's holder is set up and made to fail. */
interface Mode {
  /** 0: the library default (10 s). */
  readonly sessionTtlMs: number;
  readonly connectionBound: boolean;
  /** kill: SIGKILL of the holder's process; blackhole: its links partitioned (no FIN). */
  readonly fault: 'kill' | 'blackhole';
}

async function pairlockRound(ctx: Ctx, round: number, k: number, mode: Mode): Promise<number[]> {
  const namespace = `crash-${ctx.runId}-${mode.fault}-${mode.sessionTtlMs}-${round}`;
  const tasks = Array.from({ length: k }, (_, i) => `crash:${round}:${i}`);
  const proxy =
    mode.fault === 'blackhole' ? await TcpProxy.start({ targetPort: ctx.redis.port }) : undefined;
  const holder = new Side(`holder ${round}`, 'crash-holder', {
    url: proxy ? `redis://127.0.0.1:${proxy.port}` : ctx.redis.url,
    namespace,
    sessionTtlMs: mode.sessionTtlMs,
    connectionBound: mode.connectionBound,
    tasks,
  });
  const ttl = mode.sessionTtlMs || 10_000;
  const standby = new PairedWorker({
    redis: ctx.redis.url,
    namespace,
    name: 'standby',
    sessionTtlMs: mode.sessionTtlMs || undefined,
    connectionBound: mode.connectionBound,
  });
  try {
    await holder.next('holding', 60_000);
    await standby.start();
    let covering = 0;
    standby.on('standby', () => {
      covering += 1;
    });
    const started = new Map<string, number>();
    const outcomes = tasks.map((t) =>
      standby.run(t, () => {
        started.set(t, performance.now());
        return 'taken over';
      }),
    );
    const coverBy = performance.now() + 10_000;
    while (covering < k && performance.now() < coverBy) await sleep(1);
    if (covering < k) throw new Error(`the standby covers ${covering} of ${k} tasks`);
    // fail at a random point of the holder's heartbeat cycle (and so of its proof cycle,
    // and of the standby's connection checks)
    await sleep(Math.random() * (ttl / 3));
    const failedAt = performance.now();
    if (proxy) proxy.blackhole();
    else holder.kill();
    await Promise.race([Promise.all(outcomes), sleep(ttl * 3)]);
    return tasks.map((t) => (started.get(t) ?? Number.NaN) - failedAt);
  } finally {
    holder.kill();
    await holder.exited;
    proxy?.heal();
    await standby.close();
    await proxy?.close();
  }
}

/**
 * Healthy cost of connection-bound sessions: a holder (child process) holds k tasks, a
 * standby (this process) covers them, nothing fails, for `seconds`. Server-side
 * commandstats (commands inside scripts included) and the standby's own round trips.
 */
async function healthyCost(ctx: Ctx, k: number, seconds: number) {
  const namespace = `crash-${ctx.runId}-healthy`;
  const tasks = Array.from({ length: k }, (_, i) => `healthy:${i}`);
  const holder = new Side('holder (healthy)', 'crash-holder', {
    url: ctx.redis.url,
    namespace,
    sessionTtlMs: 0,
    tasks,
  });
  const standby = new PairedWorker({ redis: ctx.redis.url, namespace, name: 'standby' });
  const counted = installCommandCounter();
  try {
    await holder.next('holding', 60_000);
    await standby.start();
    for (const t of tasks) standby.run(t, () => 'x').catch(() => {});
    await sleep(1_000);
    const before = await commandStats(ctx.redis.admin);
    const mine = counted();
    await sleep(seconds * 1_000);
    const delta = statsDelta(before, await commandStats(ctx.redis.admin));
    const standbyCalls = diffCounts(mine, counted());
    const per = (name: string) => (delta.get(name)?.calls ?? 0) / seconds;
    let inside = 0;
    for (const [name, st] of delta)
      if (!name.startsWith('evalsha') && name !== 'ping') inside += st.calls;
    return {
      // every worker proves its own connection: two workers here
      proofPerWorker: per('ping') / 2,
      standbyCover: (standbyCalls['evalsha:cover'] ?? 0) / seconds,
      standbyRoundTrips: total(standbyCalls) / seconds,
      scripts: per('evalsha'),
      inside: inside / seconds,
      totalPerSecond: [...delta.values()].reduce((a, st) => a + st.calls, 0) / seconds,
      breakdown: [...delta.entries()]
        .sort((a, b) => b[1].calls - a[1].calls)
        .map(([name, st]) => `${name} ${(st.calls / seconds).toFixed(1)}`)
        .join(', '),
    };
  } finally {
    holder.kill();
    await holder.exited;
    await standby.close();
  }
}

export interface BullSettings {
  lockDuration: number;
  stalledInterval: number;
}

/** BullMQ's defaults: a job's lock lasts 30 s (renewed every 15 s); stalled jobs are checked every 30 s. */
export const BULL_DEFAULTS: BullSettings = { lockDuration: 30_000, stalledInterval: 30_000 };
/**
 * A stalled job is moved back only by a check that finds it marked by the check before
 * and its lock gone: up to lockDuration + 2 × stalledInterval after the crash.
 */
export const bullBound = (s: BullSettings) => s.lockDuration + 2 * s.stalledInterval;

export interface BullCrash {
  /** ms from the kill to the survivor starting each job (Infinity: not within the wait). */
  readonly result: Promise<number[]>;
  readonly waitMs: number;
}

/**
 * Starts a BullMQ crash round: a victim worker (child process) takes k jobs and hangs in
 * them, a survivor worker (this process) is started, the victim is killed at a random
 * point of its lock-renewal cycle. Resolves once it is killed; `result` settles when the
 * survivor started every job, or after `waitMs`.
 */
export async function startBullCrash(
  redis: { host: string; port: number; url: string },
  k: number,
  settings: BullSettings,
  waitMs: number,
): Promise<BullCrash> {
  const queueName = `crash-${settings.stalledInterval}-${Math.random().toString(36).slice(2, 8)}`;
  const connection = { host: redis.host, port: redis.port, maxRetriesPerRequest: null };
  const victim = new Side('BullMQ victim', 'bull-worker', {
    url: redis.url,
    queue: queueName,
    concurrency: k,
    hang: true,
    holdCount: k,
    workerOpts: settings,
  });
  const queue = new Queue(queueName, { connection });
  queue.on('error', () => {});
  const started = new Map<string, number>();
  let survivor: Worker | undefined;
  const cleanup = async () => {
    victim.kill();
    await survivor?.close(true).catch(() => {});
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close().catch(() => {});
  };
  let killedAt: number;
  try {
    await victim.next('ready', 60_000);
    await queue.addBulk(Array.from({ length: k }, (_, i) => ({ name: 'task', data: { i } })));
    await victim.next('holding', 30_000);
    survivor = new Worker(
      queueName,
      async (job) => {
        if (job.id) started.set(job.id, performance.now());
        return 'taken over';
      },
      { connection, concurrency: k, ...settings },
    );
    survivor.on('error', () => {});
    await survivor.waitUntilReady();
    await sleep(Math.random() * (settings.lockDuration / 2));
    killedAt = performance.now();
    victim.kill();
  } catch (err) {
    await cleanup();
    throw err;
  }
  const result = (async () => {
    try {
      const until = killedAt + waitMs;
      while (started.size < k && performance.now() < until) await sleep(5);
      const out = [...started.values()].map((t) => t - killedAt);
      while (out.length < k) out.push(Number.POSITIVE_INFINITY);
      return out;
    } finally {
      await cleanup();
    }
  })();
  return { result, waitMs };
}

export async function crash(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('crash', '4. Crash takeover');
  const k = 20;
  const rounds = ctx.quick ? 2 : 10;
  await ctx.redis.flush();
  // library defaults: connection-bound sessions, sessionTtl 10 s
  const pl: number[] = [];
  const perKill: Summary[] = [];
  for (let r = 0; r < rounds; r++) {
    const xs = await pairlockRound(ctx, r, k, {
      sessionTtlMs: 0,
      connectionBound: true,
      fault: 'kill',
    });
    pl.push(...xs);
    perKill.push(summarize(xs));
  }
  // the session TTL alone (as before connection-bound sessions): sessionTtl 1 s
  const ttlOnly: number[] = [];
  for (let r = 0; r < (ctx.quick ? 1 : 3); r++) {
    const xs = await pairlockRound(ctx, 100 + r, k, {
      sessionTtlMs: SESSION_TTL,
      connectionBound: false,
      fault: 'kill',
    });
    ttlOnly.push(...xs);
  }
  // a network cut (no FIN): the connection evidence is absent, the session TTL decides
  const cut: number[] = [];
  for (let r = 0; r < (ctx.quick ? 1 : 3); r++) {
    const xs = await pairlockRound(ctx, 200 + r, k, {
      sessionTtlMs: SESSION_TTL,
      connectionBound: true,
      fault: 'blackhole',
    });
    cut.push(...xs);
  }
  const healthy = await healthyCost(ctx, k, ctx.quick ? 3 : 5);
  const tuned = { lockDuration: 1_000, stalledInterval: 1_000 };
  const bullTuned: number[] = [];
  for (let r = 0; r < (ctx.quick ? 1 : 3); r++) {
    const round = await startBullCrash(ctx.redis, k, tuned, 15_000);
    bullTuned.push(...(await round.result));
  }
  // BullMQ defaults: lockDuration 30 s, stalledInterval 30 s; one bounded round
  // BullMQ defaults: started in the background when the run began (on a Redis of its
  // own), because its recovery takes up to a minute and a half
  const background = ctx.background?.bullDefaultCrash;
  const defaultWait = background?.waitMs ?? 0;
  let bullDefault: number[] = [];
  let bullDefaultError = '';
  if (background) {
    try {
      bullDefault = await background.result;
    } catch (err) {
      bullDefaultError = String((err as Error).message ?? err);
    }
  }

  const sPl = summarize(pl);
  const sTtl = summarize(ttlOnly);
  const sCut = summarize(cut);
  const sTuned = summarize(bullTuned.filter(Number.isFinite));
  const sDef = summarize(bullDefault.filter(Number.isFinite));
  const lost = (xs: number[]) => xs.filter((x) => !Number.isFinite(x)).length;
  res.tables.push({
    title: `Crash takeover: SIGKILL of a process holding ${k} tasks; time from the kill to the standby starting each task`,
    columns: [
      'peer',
      'settings',
      'tasks',
      'p50',
      'p99',
      'max',
      'bound',
      'p99 − bound',
      'p50 ÷ pairlock p50',
    ],
    rows: [
      [
        'pairlock',
        'defaults (sessionTtl 10 s; connection-bound, crashGrace 140 ms, check every 40 ms)',
        `${sPl.n} (${rounds} kills)${lost(pl) ? ` (+${lost(pl)} not taken over)` : ''}`,
        ms(sPl.p50),
        ms(sPl.p99),
        ms(sPl.max),
        'target p99 200 ms (crashGrace 140 + check interval 40 + a claim)',
        signedMs(sPl.p99 - 200),
        '1×',
      ],
      [
        'pairlock, session TTL only',
        `sessionTtlMs ${SESSION_TTL}, connectionBound false`,
        `${sTtl.n}${lost(ttlOnly) ? ` (+${lost(ttlOnly)} not taken over)` : ''}`,
        ms(sTtl.p50),
        ms(sTtl.p99),
        ms(sTtl.max),
        `sessionTtl ${SESSION_TTL} ms`,
        signedMs(sTtl.p99 - SESSION_TTL),
        ratio(sTtl.p50, sPl.p50),
      ],
      [
        'pairlock, network cut (blackhole, no FIN)',
        `sessionTtlMs ${SESSION_TTL}, connection-bound`,
        `${sCut.n}${lost(cut) ? ` (+${lost(cut)} not taken over)` : ''}`,
        ms(sCut.p50),
        ms(sCut.p99),
        ms(sCut.max),
        `sessionTtl + 50 = ${SESSION_TTL + 50} ms`,
        signedMs(sCut.p99 - SESSION_TTL - 50),
        ratio(sCut.p50, sPl.p50),
      ],
      [
        'BullMQ, tuned',
        'lockDuration 1000, stalledInterval 1000',
        `${sTuned.n}${lost(bullTuned) ? ` (+${lost(bullTuned)} not recovered in 15 s)` : ''}`,
        ms(sTuned.p50),
        ms(sTuned.p99),
        ms(sTuned.max),
        `up to lockDuration + 2 × stalledInterval = ${bullBound(tuned)} ms`,
        signedMs(sTuned.p99 - bullBound(tuned)),
        ratio(sTuned.p50, sPl.p50),
      ],
      !background || bullDefaultError
        ? [
            'BullMQ, defaults',
            'lockDuration 30 s, stalledInterval 30 s',
            bullDefaultError ? `error: ${bullDefaultError}` : 'not measured (--quick or --only)',
            '',
            '',
            '',
            `up to lockDuration + 2 × stalledInterval = ${bullBound(BULL_DEFAULTS) / 1000} s`,
            '',
            '',
          ]
        : [
            'BullMQ, defaults',
            'lockDuration 30 s, stalledInterval 30 s',
            `${sDef.n}${lost(bullDefault) ? ` (+${lost(bullDefault)} not recovered in ${defaultWait / 1000} s)` : ''}`,
            ms(sDef.p50),
            ms(sDef.p99),
            ms(sDef.max),
            `up to lockDuration + 2 × stalledInterval = ${bullBound(BULL_DEFAULTS) / 1000} s`,
            sDef.n ? signedMs(sDef.p99 - bullBound(BULL_DEFAULTS)) : '',
            sDef.n ? ratio(sDef.p50, sPl.p50) : '',
          ],
      [
        'original',
        'lockTimeout 100 s',
        '',
        '',
        '',
        '',
        '100 s after the holder’s claim, + up to 30 s retry',
        '',
        '',
      ],
    ],
    notes: [
      'pairlock: the holder runs in a child process; the standby (same settings) in the bench process.',
      `pairlock defaults, per kill (p50 / p99 / max): ${perKill.map((x) => `${ms(x.p50)} / ${ms(x.p99)} / ${ms(x.max)}`).join('; ')}.`,
      'pairlock defaults: the holder’s process dies, the OS closes its sockets and Redis drops its subscriber; the standby’s next connection check (one call for all holders, every 40 ms) records the first sighting, and the claim made crashGraceMs later takes every task over (kind connection-lost). Session TTL only, and a network cut (blackhole: no FIN, so Redis still sees the connection): the session expires on the server sessionTtl after its last renewal, between sessionTtl − heartbeat interval and sessionTtl after the fault.',
      'BullMQ: the victim worker runs in a child process with every job active; the surviving worker (same settings) runs in the bench process and starts each job once the stalled-job checker has moved it back to wait. A check moves a job only when the check before marked it and its lock has expired since, hence the bound. The defaults round runs in the background from the start of the bench, on a Redis of its own.',
      'original (not measured): a crashed holder’s task is taken over only when the standby’s next retry finds the stored expiry (its own clock + lockTimeout) passed.',
    ],
  });
  res.tables.push({
    title: `Healthy cost of connection-bound sessions: a holder (child process) holds ${k} tasks, a standby covers them, nothing fails (library defaults)`,
    columns: ['measure', 'per second', 'budget'],
    rows: [
      [
        'holder proof (PING on its subscriber), per worker',
        healthy.proofPerWorker.toFixed(1),
        '≤ 10',
      ],
      ['standby connection check (cover calls)', healthy.standbyCover.toFixed(1), '≤ 25'],
      ['standby round trips in all', healthy.standbyRoundTrips.toFixed(1), ''],
      ['script calls (both workers)', healthy.scripts.toFixed(1), ''],
      ['commands inside scripts', healthy.inside.toFixed(1), ''],
      ['Redis commands in all', healthy.totalPerSecond.toFixed(1), ''],
    ],
    notes: [
      `Server commandstats per second: ${healthy.breakdown}.`,
      'Both workers prove their own connections (a standby may be granted a task at any time), so PING counts are halved for the per-worker figure. Independent of the number of tasks held.',
    ],
  });
  const series: Series[] = [
    {
      panel: 'Crash takeover (from SIGKILL)',
      label: 'pairlock',
      summary: sPl,
      samples: downsample(pl),
      marker: { at: 200, label: 'target p99 200 ms' },
    },
    {
      panel: 'Crash takeover (from SIGKILL)',
      label: 'BullMQ tuned',
      summary: sTuned,
      samples: downsample(bullTuned.filter(Number.isFinite)),
    },
  ];
  if (sDef.n)
    series.push({
      panel: 'Crash takeover (from SIGKILL)',
      label: 'BullMQ defaults',
      summary: sDef,
      samples: downsample(bullDefault.filter(Number.isFinite)),
    });
  res.series.push(...series);
  res.data = {
    sessionTtlMs: SESSION_TTL,
    pairlock: sPl,
    perKill,
    sessionTtlOnly: sTtl,
    networkCut: sCut,
    healthy,
    bullmqTuned: sTuned,
    bullmqDefaults: sDef,
    bullmqDefaultsLost: lost(bullDefault),
  };
  return res;
}
