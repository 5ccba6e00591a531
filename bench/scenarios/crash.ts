/**
 * Scenario 4: crash takeover. A child process holds K tasks (handlers that never
 * return); a standby covers them; the child is killed with SIGKILL and we time, per
 * task, from the kill to the standby starting the handler. BullMQ: a worker process
 * holding K active jobs is killed; a second worker picks them up through stalled-job
 * recovery.
 */
import { Queue, Worker } from 'bullmq';
import { PairedWorker } from '../../src/index.js';
import { Side } from '../lib/child.js';
import type { Ctx } from '../lib/context.js';
import { newResult, type ScenarioResult, type Series } from '../lib/report.js';
import { downsample, ms, ratio, signedMs, sleep, summarize } from '../lib/stats.js';

const SESSION_TTL = 1_000;

async function pairlockRound(ctx: Ctx, round: number, k: number): Promise<number[]> {
  const namespace = `crash-${ctx.runId}`;
  const tasks = Array.from({ length: k }, (_, i) => `crash:${round}:${i}`);
  const holder = new Side(`holder ${round}`, 'crash-holder', {
    url: ctx.redis.url,
    namespace,
    sessionTtlMs: SESSION_TTL,
    tasks,
  });
  const standby = new PairedWorker({
    redis: ctx.redis.url,
    namespace,
    name: 'standby',
    sessionTtlMs: SESSION_TTL,
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
    // kill at a random point of the holder's heartbeat cycle
    await sleep(Math.random() * (SESSION_TTL / 3));
    const killedAt = performance.now();
    holder.kill();
    await Promise.race([Promise.all(outcomes), sleep(SESSION_TTL * 10)]);
    return tasks.map((t) => (started.get(t) ?? Number.NaN) - killedAt);
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
  const pl: number[] = [];
  const perRound: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const xs = await pairlockRound(ctx, r, k);
    pl.push(...xs);
    perRound.push(Math.max(...xs));
  }
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
        `sessionTtlMs ${SESSION_TTL} (heartbeat every ${Math.floor(SESSION_TTL / 3)} ms)`,
        `${sPl.n} (${rounds} kills)`,
        ms(sPl.p50),
        ms(sPl.p99),
        ms(sPl.max),
        `sessionTtl ${SESSION_TTL} ms`,
        signedMs(sPl.p99 - SESSION_TTL),
        '1×',
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
      'pairlock: the holder runs in a child process; the standby (same settings) in the bench process. A session expires on the server sessionTtl after its last renewal, so the kill-to-expiry time lies between sessionTtl − heartbeat interval and sessionTtl; the standby’s timer fires at the server-reported expiry.',
      `Per kill, the slowest task: ${perRound.map((x) => ms(x)).join(', ')}.`,
      'BullMQ: the victim worker runs in a child process with every job active; the surviving worker (same settings) runs in the bench process and starts each job once the stalled-job checker has moved it back to wait. A check moves a job only when the check before marked it and its lock has expired since, hence the bound. The defaults round runs in the background from the start of the bench, on a Redis of its own.',
      'original (not measured): a crashed holder’s task is taken over only when the standby’s next retry finds the stored expiry (its own clock + lockTimeout) passed.',
    ],
  });
  const series: Series[] = [
    {
      panel: 'Crash takeover (from SIGKILL)',
      label: 'pairlock',
      summary: sPl,
      samples: downsample(pl),
      marker: { at: SESSION_TTL, label: `sessionTtl ${SESSION_TTL} ms` },
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
    perKillMax: perRound,
    bullmqTuned: sTuned,
    bullmqDefaults: sDef,
    bullmqDefaultsLost: lost(bullDefault),
  };
  return res;
}
