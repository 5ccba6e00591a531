/**
 * Scenario 7: quorum mode (N independent masters, majority wins) against one Redis:
 * the time from run() to the grant ('claimed' event) and from the handler's return to
 * run() resolving (settle), one task at a time. Runs only when this build has quorum
 * mode (src/redis/quorum.ts, and PairedWorker accepting `nodes`).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PairedWorker, type PairedWorkerOptions } from '../../src/index.js';
import { startIndependent } from '../../src/testing/index.js';
import type { Ctx } from '../lib/context.js';
import { newResult, type ScenarioResult } from '../lib/report.js';
import { downsample, ms, pct, summarize } from '../lib/stats.js';

const NOT_AVAILABLE = 'quorum: not available in this build';

async function measure(
  opts: PairedWorkerOptions,
  count: number,
): Promise<{ claim: number[]; settle: number[] }> {
  const worker = new PairedWorker(opts);
  const claim: number[] = [];
  const settle: number[] = [];
  try {
    await worker.start();
    let claimedAt = 0;
    worker.on('claimed', () => {
      claimedAt = performance.now();
    });
    for (let i = -50; i < count; i++) {
      const t0 = performance.now();
      let returnedAt = 0;
      await worker.run(`q:${i}`, () => {
        returnedAt = performance.now();
        return i;
      });
      const t1 = performance.now();
      if (i < 0) continue;
      claim.push(claimedAt - t0);
      settle.push(t1 - returnedAt);
    }
  } finally {
    await worker.close();
  }
  return { claim, settle };
}

export async function quorum(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('quorum', '7. Quorum');
  const source = fileURLToPath(new URL('../../src/redis/quorum.ts', import.meta.url));
  if (!existsSync(source)) {
    res.notes.push(NOT_AVAILABLE);
    res.data = { available: false };
    return res;
  }
  const count = ctx.quick ? 200 : 1_000;
  const topo = await startIndependent(3);
  try {
    const nodes = topo.addrs.map((a) => `redis://${a.host}:${a.port}`);
    try {
      new PairedWorker({ nodes, namespace: 'probe' }).close().catch(() => {});
    } catch (err) {
      res.notes.push(`${NOT_AVAILABLE} (${(err as Error).message})`);
      res.data = { available: false };
      return res;
    }
    await ctx.redis.flush();
    const one = await measure(
      { redis: ctx.redis.url, namespace: `q1-${ctx.runId}`, name: 'one' },
      count,
    );
    const three = await measure({ nodes, namespace: `q3-${ctx.runId}`, name: 'three' }, count);
    const s = {
      oneClaim: summarize(one.claim),
      oneSettle: summarize(one.settle),
      threeClaim: summarize(three.claim),
      threeSettle: summarize(three.settle),
    };
    const over = (a: number, b: number) => pct((a / b - 1) * 100);
    res.tables.push({
      title: `Quorum: 3 independent Redis processes against one, ${count} tasks one at a time (PairedWorker.run)`,
      columns: [
        'topology',
        'claim p50',
        'claim p99',
        'settle p50',
        'settle p99',
        'claim p50 vs one',
      ],
      rows: [
        [
          'one Redis',
          ms(s.oneClaim.p50),
          ms(s.oneClaim.p99),
          ms(s.oneSettle.p50),
          ms(s.oneSettle.p99),
          '',
        ],
        [
          'quorum of 3',
          ms(s.threeClaim.p50),
          ms(s.threeClaim.p99),
          ms(s.threeSettle.p50),
          ms(s.threeSettle.p99),
          over(s.threeClaim.p50, s.oneClaim.p50),
        ],
      ],
      notes: [
        'claim: from the run() call to the grant (the claimed event); settle: from the handler’s return to run() resolving. All Redis processes on this machine (loopback).',
      ],
    });
    res.series.push(
      {
        panel: 'Quorum claim',
        label: 'one Redis',
        summary: s.oneClaim,
        samples: downsample(one.claim),
      },
      {
        panel: 'Quorum claim',
        label: 'quorum of 3',
        summary: s.threeClaim,
        samples: downsample(three.claim),
      },
    );
    res.data = { available: true, ...s };
  } finally {
    await topo.close();
  }
  return res;
}
