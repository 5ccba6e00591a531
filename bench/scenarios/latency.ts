/**
 * Scenario 2: claim and settle latency (RedisStore.claim / settle called directly, one
 * at a time on one connection), against a bare PING and a trivial EVALSHA on the same
 * connection, interleaved so that drift on the machine touches all four alike.
 */
import { Redis } from 'ioredis';
import { Keys } from '../../src/redis/keys.js';
import { RedisStore } from '../../src/redis/store.js';
import type { Ctx } from '../lib/context.js';
import { commandStats, statsDelta } from '../lib/redis.js';
import { newResult, type ScenarioResult } from '../lib/report.js';
import { downsample, ms, pct, summarize } from '../lib/stats.js';

type Trivial = Redis & { benchTrivial(): Promise<number> };

export async function latency(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('latency', '2. Claim latency');
  const samples = ctx.quick ? 1_000 : 10_000;
  const warmup = ctx.quick ? 200 : 1_000;
  await ctx.redis.flush();
  const client = new Redis(ctx.redis.url, { lazyConnect: true }) as Trivial;
  client.on('error', () => {});
  client.defineCommand('benchTrivial', { numberOfKeys: 0, lua: 'return 1' });
  const keys = new Keys('pairlock', `lat-${ctx.runId}`);
  const store = new RedisStore(client, keys, 5_000);
  try {
    await store.connect();
    const session = `bench:${ctx.runId}#1`;
    const opened = await store.session('open', session, 600_000, '{}');
    if (!opened.ok) throw new Error(`could not open a session: ${opened.reason}`);
    const claimArgs = {
      session,
      sessionTtlMs: 600_000,
      taskTimeoutMs: 300_000,
      retentionMs: 3_600_000,
      maxAttempts: 3,
      dryRun: false,
    };
    const settleArgs = (token: number) => ({
      session,
      token,
      state: 'D' as const,
      payload: '42',
      retentionMs: 3_600_000,
      backoffMs: 1_000,
    });
    const times = {
      ping: [] as number[],
      evalsha: [] as number[],
      claim: [] as number[],
      settle: [] as number[],
    };
    let granted = 0;
    const step = async (i: number, record: boolean) => {
      const loc = keys.task(`lat:${i}`);
      let t = performance.now();
      await client.ping();
      const ping = performance.now() - t;
      t = performance.now();
      await client.benchTrivial();
      const trivial = performance.now() - t;
      t = performance.now();
      const c = await store.claim(loc, claimArgs);
      const claim = performance.now() - t;
      if (c.type !== 'granted') throw new Error(`claim of a fresh task was not granted: ${c.type}`);
      t = performance.now();
      const s = await store.settle(loc, settleArgs(c.token));
      const settle = performance.now() - t;
      if (!s.ok) throw new Error(`settle was rejected: ${s.reason}`);
      if (!record) return;
      granted += 1;
      times.ping.push(ping);
      times.evalsha.push(trivial);
      times.claim.push(claim);
      times.settle.push(settle);
    };
    for (let i = 0; i < warmup; i++) await step(-1 - i, false);
    for (let i = 0; i < samples; i++) await step(i, true);

    // Server-side execution time, one kind of call at a time (commandstats cannot tell
    // one script from another within a mixed run).
    const serverUs: Record<string, number> = {};
    const block = Math.min(2_000, samples);
    const measure = async (name: string, fn: (i: number) => Promise<unknown>, cmd: string) => {
      const before = await commandStats(ctx.redis.admin);
      for (let i = 0; i < block; i++) await fn(i);
      const d = statsDelta(before, await commandStats(ctx.redis.admin)).get(cmd);
      serverUs[name] = d ? d.usec / d.calls : Number.NaN;
    };
    await measure('ping', () => client.ping(), 'ping');
    await measure('evalsha', () => client.benchTrivial(), 'evalsha');
    const tokens: number[] = [];
    await measure(
      'claim',
      async (i) => {
        const c = await store.claim(keys.task(`srv:${i}`), claimArgs);
        tokens[i] = c.type === 'granted' ? c.token : 0;
      },
      'evalsha',
    );
    await measure(
      'settle',
      (i) => store.settle(keys.task(`srv:${i}`), settleArgs(tokens[i] ?? 0)),
      'evalsha',
    );

    const sum = {
      ping: summarize(times.ping),
      evalsha: summarize(times.evalsha),
      claim: summarize(times.claim),
      settle: summarize(times.settle),
    };
    const over = (a: number, b: number) => pct((a / b - 1) * 100);
    const row = (label: string, k: keyof typeof sum, trips: string) => {
      const s = sum[k];
      return [
        label,
        trips,
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.mean),
        `${(serverUs[k] ?? Number.NaN).toFixed(1)} µs`,
        k === 'ping' || k === 'evalsha' ? '' : over(s.p50, sum.evalsha.p50),
        k === 'ping' || k === 'evalsha' ? '' : over(s.p99, sum.evalsha.p99),
      ];
    };
    res.tables.push({
      title: `Claim and settle latency: ${granted.toLocaleString('en-US')} sequential samples each, one connection, in-process (interleaved)`,
      columns: [
        'call',
        'round trips',
        'p50',
        'p90',
        'p99',
        'mean',
        'server time/call',
        'vs EVALSHA p50',
        'vs EVALSHA p99',
      ],
      rows: [
        row('PING', 'ping', '1'),
        row('EVALSHA `return 1`', 'evalsha', '1'),
        row('claim (RedisStore.claim, fresh task)', 'claim', '1'),
        row('settle (RedisStore.settle, done)', 'settle', '1'),
      ],
      notes: [
        'Each sample: PING, the trivial EVALSHA, claim of a new task, settle of it, one after another on the same ioredis connection.',
        'server time/call: INFO commandstats usec per call, from a separate block of calls of one kind.',
        `claim + settle together: p50 ${ms(summarize(times.claim.map((c, i) => c + (times.settle[i] ?? 0))).p50)}, two round trips.`,
      ],
    });
    res.series.push(
      {
        panel: 'Claim latency (one connection)',
        label: 'PING',
        summary: sum.ping,
        samples: downsample(times.ping),
      },
      {
        panel: 'Claim latency (one connection)',
        label: 'EVALSHA return 1',
        summary: sum.evalsha,
        samples: downsample(times.evalsha),
      },
      {
        panel: 'Claim latency (one connection)',
        label: 'claim',
        summary: sum.claim,
        samples: downsample(times.claim),
      },
      {
        panel: 'Claim latency (one connection)',
        label: 'settle',
        summary: sum.settle,
        samples: downsample(times.settle),
      },
    );
    res.data = {
      samples: granted,
      summary: sum,
      serverUsPerCall: serverUs,
      overheadP50: {
        claim: sum.claim.p50 / sum.evalsha.p50 - 1,
        settle: sum.settle.p50 / sum.evalsha.p50 - 1,
      },
      overheadP99: {
        claim: sum.claim.p99 / sum.evalsha.p99 - 1,
        settle: sum.settle.p99 / sum.evalsha.p99 - 1,
      },
    };
    await store.session('close', session, 0).catch(() => {});
  } finally {
    await store.close();
    client.disconnect();
  }
  return res;
}
