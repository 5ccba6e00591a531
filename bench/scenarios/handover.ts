/**
 * Scenario 5: graceful handover. A holder runs K tasks (handlers that wait), a standby
 * covers them; the holder calls close({ handover: true }) and we time, per task, from
 * that call to the standby starting the handler. Two workers, own connections, one process.
 */
import { PairedWorker } from '../../src/index.js';
import type { Ctx } from '../lib/context.js';
import { newResult, type ScenarioResult } from '../lib/report.js';
import { downsample, ms, sleep, summarize } from '../lib/stats.js';

export async function handover(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('handover', '5. Graceful handover');
  const k = 5;
  const rounds = ctx.quick ? 10 : 40;
  await ctx.redis.flush();
  const namespace = `ho-${ctx.runId}`;
  const standby = new PairedWorker({ redis: ctx.redis.url, namespace, name: 'standby' });
  const samples: number[] = [];
  const closeMs: number[] = [];
  let covering = 0;
  standby.on('standby', () => {
    covering += 1;
  });
  try {
    await standby.start();
    for (let r = 0; r < rounds; r++) {
      const holder = new PairedWorker({ redis: ctx.redis.url, namespace, name: 'holder' });
      await holder.start();
      const tasks = Array.from({ length: k }, (_, i) => `ho:${r}:${i}`);
      let holding = 0;
      for (const t of tasks) {
        holder
          .run(t, ({ signal }) => {
            holding += 1;
            // a handler that stops when told: it ends with the signal's reason (one that
            // returned a result instead would have it settled, and nothing handed over)
            return new Promise((_, reject) =>
              signal.addEventListener('abort', () => reject(signal.reason)),
            );
          })
          .catch(() => {});
      }
      const holdBy = performance.now() + 10_000;
      while (holding < k && performance.now() < holdBy) await sleep(1);
      if (holding < k) throw new Error(`the holder runs ${holding} of ${k} tasks`);
      const started = new Map<string, number>();
      const target = covering + k;
      const outcomes = tasks.map((t) =>
        standby.run(t, () => {
          started.set(t, performance.now());
          return 'handed over';
        }),
      );
      const coverBy = performance.now() + 10_000;
      while (covering < target && performance.now() < coverBy) await sleep(1);
      const t0 = performance.now();
      await holder.close({ handover: true });
      closeMs.push(performance.now() - t0);
      await Promise.race([Promise.all(outcomes), sleep(15_000)]);
      for (const t of tasks) samples.push((started.get(t) ?? Number.NaN) - t0);
    }
  } finally {
    await standby.close();
  }
  const s = summarize(samples);
  const c = summarize(closeMs);
  res.tables.push({
    title: `Graceful handover: close({ handover: true }) of a holder of ${k} tasks; time to the standby starting each`,
    columns: ['peer', 'tasks', 'p50', 'p99', 'max', 'close() itself p50 / p99'],
    rows: [
      [
        'pairlock',
        `${s.n} (${rounds} closes)`,
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        `${ms(c.p50)} / ${ms(c.p99)}`,
      ],
      ['BullMQ', 'n/a', 'no handover: Worker.close() waits for active jobs to finish', '', '', ''],
      ['original', 'n/a', 'no handover: the task stays locked until lockTimeout', '', '', ''],
    ],
    notes: [
      'Holder and standby are two workers with their own connections in the bench process; the standby learns of each release by pub/sub and claims it (token + 1).',
    ],
  });
  res.series.push({
    panel: 'Graceful handover',
    label: 'pairlock',
    summary: s,
    samples: downsample(samples),
    marker: { at: 20, label: 'target 20 ms' },
  });
  res.data = { tasksPerClose: k, pairlock: s, close: c };
  return res;
}
