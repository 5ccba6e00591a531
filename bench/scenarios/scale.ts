/**
 * Scenario 6: one worker holding N running tasks (handlers that wait), a second worker
 * covering all of them as standby. Commands per second of each while the holder is
 * healthy (client-side counts, checked against INFO commandstats deltas over the same
 * window), and Redis memory per running record (INFO memory used_memory delta / N).
 * Holder and standby each run in a child process, on a Redis of their own.
 */

import { type Message, Side } from '../lib/child.js';
import type { Ctx } from '../lib/context.js';
import { type Counts, describeCounts, diffCounts, total } from '../lib/counting.js';
import { commandStats, startRedis, statsDelta, usedMemory } from '../lib/redis.js';
import { newResult, type ScenarioResult } from '../lib/report.js';
import { bytes, num, sleep } from '../lib/stats.js';

/** The scale scenario's workers bind with this crash grace (see below). */
const SCALE_CRASH_GRACE_MS = 1_000;

export async function scale(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('scale', '6. Scale');
  const n = ctx.quick ? 5_000 : 100_000;
  const windowA = ctx.quick ? 2_000 : 10_000;
  const windowB = ctx.quick ? 6_000 : 32_000;
  const batch = 1_000;
  const redis = await startRedis();
  const namespace = `scale-${ctx.runId}`;
  const prefix = 'task:';
  // Starting thousands of runs a turn stalls a worker's event loop for longer than the
  // default crashGraceMs (140 ms): the holder would abort every handler it had just started
  // (nobody takes over: its connection stands; see the README on stalls).
  const crashGraceMs = SCALE_CRASH_GRACE_MS;
  const init = { url: redis.url, namespace, prefix, n, batch, capMs: 120_000, crashGraceMs };
  let holder: Side | undefined;
  let standby: Side | undefined;
  try {
    holder = new Side('scale holder', 'scale-holder', init);
    await holder.next('ready', 60_000);
    await sleep(200);
    const m0 = await usedMemory(redis.admin);
    ctx.log(`scale: holder claims ${num(n)} tasks`);
    const claimed = await holder.request({ type: 'go' }, 'reached', 180_000);
    if (Number(claimed.count) < n)
      throw new Error(`the holder claimed ${claimed.count} of ${n} tasks in time`);
    await sleep(500);
    const m1 = await usedMemory(redis.admin);
    const sampleKey = `pairlock:{${namespace}}:t:${prefix}0`;
    const perKey = Number(await redis.admin.call('MEMORY', 'USAGE', sampleKey));
    const record = String(await redis.admin.get(sampleKey));

    // window A: the holder alone
    const counts = async (side: Side): Promise<Counts> =>
      (await side.request({ type: 'counts' }, 'counts', 10_000)).counts as Counts;
    ctx.log(`scale: holder alone, ${windowA / 1000} s window`);
    const sa0 = await commandStats(redis.admin);
    const ha0 = await counts(holder);
    let t = performance.now();
    await sleep(windowA);
    const ha1 = await counts(holder);
    const sa = statsDelta(sa0, await commandStats(redis.admin));
    const secA = (performance.now() - t) / 1000;

    ctx.log(`scale: standby covers ${num(n)} tasks`);
    standby = new Side('scale standby', 'scale-standby', init);
    await standby.next('ready', 60_000);
    const covered: Message = await standby.request({ type: 'go' }, 'reached', 180_000);
    if (Number(covered.count) < n)
      throw new Error(`the standby covers ${covered.count} of ${n} tasks`);

    ctx.log(`scale: holder + standby, ${windowB / 1000} s window`);
    const sb0 = await commandStats(redis.admin);
    const hb0 = await counts(holder);
    const cb0 = await counts(standby);
    t = performance.now();
    await sleep(windowB);
    const hb1 = await counts(holder);
    const cb1 = await counts(standby);
    const sb = statsDelta(sb0, await commandStats(redis.admin));
    const secB = (performance.now() - t) / 1000;
    const m2 = await usedMemory(redis.admin);

    const holderA = diffCounts(ha0, ha1);
    const holderB = diffCounts(hb0, hb1);
    const standbyB = diffCounts(cb0, cb1);
    // commands sent by clients, as Redis saw them: script calls and plain commands, not
    // the commands scripts run inside, and not this bench's own INFO calls
    const clientCalls = (d: ReturnType<typeof statsDelta>) =>
      (d.get('evalsha')?.calls ?? 0) + (d.get('eval')?.calls ?? 0);
    const perRecord = (m1 - m0) / n;
    const rate = (c: Counts, s: number) => (total(c) / s).toFixed(2);
    res.tables.push({
      title: `Scale: ${num(n)} running tasks on one worker, a second worker covering all of them (defaults but crashGraceMs ${crashGraceMs} ms: sessionTtl 10 s, heartbeat 3.3 s, safety net 10 s then 30 s)`,
      columns: ['measure', 'value', 'detail'],
      rows: [
        [
          'holder: claiming',
          `${num((Number(claimed.ms) / 1000) * 1000)} ms`,
          `${num((n / Number(claimed.ms)) * 1000)} claims/s, ${batch} run() calls in flight`,
        ],
        [
          'standby: covering',
          `${num(Number(covered.ms))} ms`,
          `${num((n / Number(covered.ms)) * 1000)} claims/s (held)`,
        ],
        [
          'holder commands/s, alone',
          rate(holderA, secA),
          `${secA.toFixed(1)} s window; ${describeCounts(holderA, 1, 0)}; Redis saw ${(clientCalls(sa) / secA).toFixed(2)} script calls/s`,
        ],
        [
          'holder commands/s, covered',
          rate(holderB, secB),
          `${secB.toFixed(1)} s window; ${describeCounts(holderB, 1, 0)}`,
        ],
        [
          'standby commands/s, holder healthy',
          rate(standbyB, secB),
          `same window; ${describeCounts(standbyB, 1, 0)}`,
        ],
        [
          'Redis script calls/s, both (commandstats)',
          (clientCalls(sb) / secB).toFixed(2),
          `all commands incl. inside scripts: ${([...sb.values()].reduce((s, v) => s + v.calls, 0) / secB).toFixed(1)}/s (INFO calls of the bench included)`,
        ],
        [
          'Redis memory per running record',
          `${perRecord.toFixed(0)} B`,
          `used_memory ${bytes(m0)} → ${bytes(m1)} for ${num(n)} records; MEMORY USAGE of one record key: ${perKey} B; value ${record.length} B`,
        ],
        [
          'Redis memory after the standby covered all',
          bytes(m2),
          'the standby stores nothing per task',
        ],
      ],
      notes: [
        'commands/s: commands each process sent (client-side count over all its connections), over the window; Redis’s own commandstats delta over the same window is given as a check.',
        windowB >= 12_000
          ? 'The standby’s window starts once it covers every task; it includes its first safety-net round (a batched peek of every watched task, up to 1,000 per call, checks due within 1 s sharing calls, 10 s after each claim). Later rounds come every 30 s.'
          : 'The standby’s window (--quick) is shorter than its first safety-net interval (10 s): it shows the heartbeat and holder-session checks only.',
        `Sample record (${record.length} B): ${record}`,
      ],
    });
    res.data = {
      n,
      usedMemoryBefore: m0,
      usedMemoryAfter: m1,
      bytesPerRecord: perRecord,
      memoryUsageOneKey: perKey,
      holderAlone: { seconds: secA, counts: holderA, perSec: total(holderA) / secA },
      holderCovered: { seconds: secB, counts: holderB, perSec: total(holderB) / secB },
      standby: { seconds: secB, counts: standbyB, perSec: total(standbyB) / secB },
      claimMs: Number(claimed.ms),
      coverMs: Number(covered.ms),
    };
  } finally {
    standby?.kill();
    holder?.kill();
    await Promise.all([standby?.exited, holder?.exited]);
    await redis.stop();
  }
  return res;
}
