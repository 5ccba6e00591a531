/**
 * Scenario 3: how soon the standby learns the outcome. Two workers with their own
 * connections (one process); the winner's handler returns once the standby covers the
 * task, and we time from that return (settle sent) to the standby's run() resolving.
 * The original algorithm: the same with its timed retries (defaults: 10 s, then 30 s).
 */
import { Redis } from 'ioredis';
import { PairedWorker } from '../../src/index.js';
import { OriginalPairedWorker } from '../baseline.js';
import type { Ctx } from '../lib/context.js';
import { newResult, type ScenarioResult } from '../lib/report.js';
import { downsample, ms, ratio, sleep, summarize } from '../lib/stats.js';

/** Bound of each wait of one sample. */
const STEP_TIMEOUT = 5_000;

async function pairlockSamples(
  ctx: Ctx,
  count: number,
): Promise<{ fromSend: number[]; fromReply: number[] }> {
  const namespace = `sb-${ctx.runId}`;
  const winner = new PairedWorker({ redis: ctx.redis.url, namespace, name: 'winner' });
  const standby = new PairedWorker({ redis: ctx.redis.url, namespace, name: 'standby' });
  const fromSend: number[] = [];
  const fromReply: number[] = [];
  try {
    await Promise.all([winner.start(), standby.start()]);
    const covering = new Map<string, () => void>();
    standby.on('standby', ({ taskId }) => covering.get(taskId)?.());
    const settledAt = new Map<string, number>();
    winner.on('settled', ({ taskId }) => settledAt.set(taskId, performance.now()));
    for (let i = 0; i < count; i++) {
      const taskId = `sb:${i}`;
      const isCovered = new Promise<void>((resolve) => covering.set(taskId, resolve));
      let sentAt = 0;
      const won = winner.run(taskId, async () => {
        await Promise.race([isCovered, sleep(STEP_TIMEOUT)]);
        sentAt = performance.now();
        return i;
      });
      // the standby only starts once the winner holds the task
      const holdBy = performance.now() + STEP_TIMEOUT;
      while (winner.running === 0 && performance.now() < holdBy) await sleep(0);
      const timeout = new AbortController();
      const timer = setTimeout(
        () => timeout.abort(new Error('no outcome in time')),
        STEP_TIMEOUT * 2,
      );
      const watched = await standby
        .run(
          taskId,
          () => {
            throw new Error('the standby must not run this task');
          },
          { signal: timeout.signal },
        )
        .finally(() => clearTimeout(timer));
      const doneAt = performance.now();
      await won;
      if (watched.role !== 'watched') throw new Error(`standby role ${watched.role}`);
      fromSend.push(doneAt - sentAt);
      fromReply.push(doneAt - (settledAt.get(taskId) ?? Number.NaN));
      covering.delete(taskId);
    }
  } finally {
    await Promise.all([winner.close(), standby.close()]);
  }
  return { fromSend, fromReply };
}

async function originalSamples(
  ctx: Ctx,
  count: number,
  intervals: { first?: number; other?: number },
  sideBySide: boolean,
): Promise<number[]> {
  const a = new Redis(ctx.redis.url);
  const b = new Redis(ctx.redis.url);
  const waiting = new Map<string, () => void>();
  const winner = new OriginalPairedWorker(a, { keyPrefix: `sb-orig-${ctx.runId}:` });
  const standby = new OriginalPairedWorker(b, {
    keyPrefix: `sb-orig-${ctx.runId}:`,
    ...(intervals.first !== undefined ? { firstAttemptInterval: intervals.first } : {}),
    ...(intervals.other !== undefined ? { otherAttemptInterval: intervals.other } : {}),
    onWait: (name) => waiting.get(name)?.(),
  });
  const tag = `${intervals.first ?? 'd'}`;
  try {
    const sample = async (i: number): Promise<number> => {
      const name = `${tag}:${i}`;
      const standbyWaits = new Promise<void>((resolve) => waiting.set(name, resolve));
      const held = new Promise<(ok: boolean) => Promise<void>>((resolve, reject) =>
        winner.lock(name, (err, acquired, done) => {
          if (err || !acquired) reject(err ?? new Error('the winner did not acquire'));
          else resolve(done);
        }),
      );
      const done = await held;
      const learned = new Promise<number>((resolve, reject) =>
        standby.lock(name, (err, acquired) => {
          if (err || acquired) reject(err ?? new Error('the standby acquired'));
          else resolve(performance.now());
        }),
      );
      await standbyWaits;
      // settle at points spread evenly over the standby's first wait
      await sleep(((i + 0.5) / count) * (intervals.first ?? 10_000));
      const settleAt = performance.now();
      await done(true);
      return (await learned) - settleAt;
    };
    // long intervals: samples side by side (each waits out the standby's retry interval)
    if (sideBySide) return await Promise.all(Array.from({ length: count }, (_, i) => sample(i)));
    const out: number[] = [];
    for (let i = 0; i < count; i++) out.push(await sample(i));
    return out;
  } finally {
    winner.stop();
    standby.stop();
    a.disconnect();
    b.disconnect();
  }
}

export async function standby(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('standby', '3. Standby outcome latency');
  const count = ctx.quick ? 100 : 500;
  await ctx.redis.flush();
  const p = await pairlockSamples(ctx, count);
  const scaled = await originalSamples(ctx, ctx.quick ? 20 : 100, { first: 10, other: 30 }, false);
  const defaults = ctx.quick ? [] : await originalSamples(ctx, 4, {}, true);
  const sSend = summarize(p.fromSend);
  const sReply = summarize(p.fromReply);
  const sScaled = summarize(scaled);
  const sDef = summarize(defaults);
  const row = (label: string, s: ReturnType<typeof summarize>, how: string) => [
    label,
    how,
    s.n.toString(),
    ms(s.p50),
    ms(s.p99),
    ms(s.max),
    s === sSend ? '1×' : s === sReply ? '' : ratio(s.p50, sSend.p50),
  ];
  res.tables.push({
    title: 'Standby learns the outcome: from the winner settling to the standby’s run() resolving',
    columns: [
      'peer',
      'how the standby learns',
      'samples',
      'p50',
      'p99',
      'max',
      'p50 ÷ pairlock p50',
    ],
    rows: [
      row(
        'pairlock (from settle sent)',
        sSend,
        'pub/sub settle event carrying the result (no further call)',
      ),
      row('pairlock (from settle reply)', sReply, 'same, timed from the winner’s settle reply'),
      row('original, intervals ÷1000 (10 ms/30 ms)', sScaled, 'next timed retry: SETNX, GET'),
      ctx.quick
        ? [
            'original, defaults (10 s/30 s)',
            'next timed retry: SETNX, GET',
            '0',
            'not measured in --quick',
            '≤ 10 s (firstAttemptInterval)',
            '',
            '',
          ]
        : row('original, defaults (10 s/30 s)', sDef, 'next timed retry: SETNX, GET'),
      ['redlock', 'never: a lock has no outcome', '', 'n/a', 'n/a', 'n/a', ''],
    ],
    notes: [
      'pairlock: two workers with their own connections in one process, one task at a time; the winner’s handler returns once the standby covers the task.',
      'original: the winner reports done(true) at points spread evenly over the standby’s first retry interval (the standby found the task running and waits); ÷1000 samples one after another, default-interval samples side by side.',
    ],
  });
  res.series.push(
    {
      panel: 'Standby learns the outcome',
      label: 'pairlock',
      summary: sSend,
      samples: downsample(p.fromSend),
      marker: { at: 5, label: 'target 5 ms' },
    },
    {
      panel: 'Standby learns the outcome',
      label: 'original ÷1000',
      summary: sScaled,
      samples: downsample(scaled),
    },
  );
  if (defaults.length) {
    res.series.push({
      panel: 'Standby learns the outcome',
      label: 'original defaults',
      summary: sDef,
      samples: downsample(defaults),
    });
  }
  res.data = {
    pairlockFromSend: sSend,
    pairlockFromReply: sReply,
    originalScaled: sScaled,
    originalDefaults: sDef,
  };
  return res;
}
