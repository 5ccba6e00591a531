/**
 * Scenario 10: what an idle namespace costs Redis as it grows. 2 workers, then 10, in one
 * namespace (each its own connections, one process), library defaults; each worker holds
 * 5 tasks whose handlers wait, and every worker calls run() for every task (as a pair
 * does), so each covers every other one. Redis commands per second over a window, from
 * INFO commandstats (commands run inside scripts included): the holders' proofs (PUBLISH /
 * SPUBLISH on their liveness channels, PING) apart from the rest, which is mostly the
 * standbys' connection checks (`cover`). The goal: the rest with 10 workers at most twice
 * that with 2.
 */

import { PairedWorker } from '../../src/index.js';
import type { Ctx } from '../lib/context.js';
import { type CommandStat, commandStats, statsDelta } from '../lib/redis.js';
import { newResult, type ScenarioResult } from '../lib/report.js';
import { num, sleep } from '../lib/stats.js';

/** Proofs and keep-alives: counted apart from the rest. */
const PROOFS = new Set(['publish', 'spublish', 'ping']);
/** The bench's own INFO calls (two per window) are not the workers'. */
const OWN = new Set(['info', 'config|resetstat']);
const TASKS_PER_WORKER = 5;

export interface IdleRow {
  readonly workers: number;
  readonly tasks: number;
  readonly seconds: number;
  /** commands/s, proofs aside */
  readonly rest: number;
  /** PUBLISH / SPUBLISH / PING per second */
  readonly proofs: number;
  readonly coverCalls: number;
  readonly numsub: number;
  readonly top: string;
}

async function measure(ctx: Ctx, workers: number, windowMs: number): Promise<IdleRow> {
  await ctx.redis.flush();
  const namespace = `idle-${workers}-${ctx.runId}`;
  const ws = Array.from(
    { length: workers },
    (_, i) => new PairedWorker({ redis: ctx.redis.url, namespace, name: `w${i}` }),
  );
  let stop: () => void = () => {};
  const stopped = new Promise<void>((resolve) => {
    stop = resolve;
  });
  const runs: Promise<unknown>[] = [];
  try {
    await Promise.all(ws.map((w) => w.start()));
    // worker i holds tasks w<i>-<j>: it calls run() first, its handlers wait
    const started: Promise<void>[] = [];
    ws.forEach((w, i) => {
      for (let j = 0; j < TASKS_PER_WORKER; j++) {
        started.push(
          new Promise<void>((resolve) => {
            runs.push(
              w.run(`w${i}-${j}`, async () => {
                resolve();
                await stopped;
                return i;
              }),
            );
          }),
        );
      }
    });
    await Promise.race([
      Promise.all(started),
      sleep(10_000).then(() => {
        throw new Error('the holders did not start their tasks in time');
      }),
    ]);
    // then every other worker calls run() for every task: it covers the holder
    ws.forEach((w, i) => {
      for (let h = 0; h < workers; h++) {
        if (h === i) continue;
        for (let j = 0; j < TASKS_PER_WORKER; j++) {
          runs.push(
            w.run(`w${h}-${j}`, () => {
              throw new Error(`w${i} must not run a task its holder w${h} still holds`);
            }),
          );
        }
      }
    });
    for (const r of runs) r.catch(() => {});
    await sleep(1_000);
    const before = await commandStats(ctx.redis.admin);
    const t0 = performance.now();
    await sleep(windowMs);
    const delta = statsDelta(before, await commandStats(ctx.redis.admin));
    const seconds = (performance.now() - t0) / 1000;
    for (const k of OWN) delta.delete(k);
    const sum = (pick: (k: string) => boolean) =>
      [...delta].filter(([k]) => pick(k)).reduce((s, [, v]) => s + v.calls, 0);
    const top = [...delta]
      .filter(([k]) => !PROOFS.has(k))
      .sort((a, b) => b[1].calls - a[1].calls)
      .slice(0, 6)
      .map(([k, v]: [string, CommandStat]) => `${k} ${num(v.calls / seconds)}`)
      .join(', ');
    return {
      workers,
      tasks: workers * TASKS_PER_WORKER,
      seconds,
      rest: sum((k) => !PROOFS.has(k)) / seconds,
      proofs: sum((k) => PROOFS.has(k)) / seconds,
      coverCalls: (delta.get('evalsha')?.calls ?? 0) / seconds,
      numsub: sum((k) => k === 'pubsub|numsub' || k === 'pubsub|shardnumsub') / seconds,
      top,
    };
  } finally {
    stop();
    await Promise.race([Promise.allSettled(runs), sleep(5_000)]);
    await Promise.allSettled(ws.map((w) => w.close()));
  }
}

export async function idle(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('idle', '10. Idle cost as the namespace grows');
  const windowMs = ctx.quick ? 3_000 : 10_000;
  const rows: IdleRow[] = [];
  for (const workers of [2, 10]) {
    ctx.log(`idle: ${workers} workers, ${windowMs / 1000} s window`);
    rows.push(await measure(ctx, workers, windowMs));
  }
  const [two, ten] = rows as [IdleRow, IdleRow];
  const row = (r: IdleRow) => [
    `${r.workers}`,
    `${r.tasks}`,
    num(r.rest, 1),
    num(r.proofs, 1),
    num(r.coverCalls, 1),
    num(r.numsub, 1),
    r.top,
  ];
  res.tables.push({
    title: `Idle namespace: Redis commands/s (INFO commandstats, inside scripts included), ${TASKS_PER_WORKER} waiting tasks per worker, every worker covering every other`,
    columns: [
      'workers',
      'tasks held',
      'commands/s, proofs aside',
      'proofs/s (PUBLISH, SPUBLISH, PING)',
      'script calls/s (EVALSHA)',
      'NUMSUB/s',
      'largest, proofs aside (per s)',
    ],
    rows: [
      row(two),
      row(ten),
      [
        '10 ÷ 2',
        '',
        `${(ten.rest / two.rest).toFixed(2)}×`,
        `${(ten.proofs / two.proofs).toFixed(2)}×`,
        `${(ten.coverCalls / two.coverCalls).toFixed(2)}×`,
        `${(ten.numsub / two.numsub).toFixed(2)}×`,
        '',
      ],
    ],
    notes: [
      `${windowMs / 1000} s window after 1 s of warm-up; library defaults (connectionCheckIntervalMs 40, crashGraceMs 140, sessionTtlMs 10 s); all workers in the bench process, each with its own connections.`,
      'The bench’s own INFO calls are left out. The target: commands/s proofs aside with 10 workers at most twice that with 2.',
    ],
  });
  res.data = { rows, ratio: ten.rest / two.rest };
  return res;
}
