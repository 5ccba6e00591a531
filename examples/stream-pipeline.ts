/**
 * A stream pipeline. Orders arrive on the Redis stream `orders`. A router pair turns
 * each order into three tasks (email, invoice, stock) on the stream `tasks`; a worker
 * pair runs those. Each side of each pair reads through its own consumer group, so both
 * sides see every entry, and the task records decide who runs what. Task ids are derived
 * from the order (`<order>:<kind>`), so even a task routed twice runs once.
 *
 *   npx tsx examples/stream-pipeline.ts
 */
import { Redis } from 'ioredis';
import { streamFeed } from '../src/feeds/index.js';
import { PairedWorker } from '../src/index.js';
import { check, exampleRedis, runExample, sleep } from './support.js';

const KINDS = ['email', 'invoice', 'stock'] as const;

runExample(async () => {
  const redis = await exampleRedis('pipeline');
  const client = new Redis(redis.url);
  const orders = `${redis.namespace}:orders`;
  const tasks = `${redis.namespace}:tasks`;
  const executed: { task: string; by: string }[] = [];

  const pair = (role: string) =>
    ['a', 'b'].map(
      (s) =>
        new PairedWorker({
          redis: redis.url,
          namespace: redis.namespace,
          name: `${role}-${s}`,
          sessionTtlMs: 2_000,
        }),
    );
  const routers = pair('router');
  const runners = pair('runner');

  // the router: one order in, three tasks out (runs on one router per order)
  const routerFeeds = routers.map((w) =>
    streamFeed(w, {
      redis: client,
      stream: orders,
      startId: '0',
      taskId: (e) => `route:${e.fields.order}`,
      handler: async (e) => {
        for (const kind of KINDS)
          await client.xadd(tasks, '*', 'order', e.fields.order as string, 'kind', kind);
        return { routed: KINDS.length };
      },
    }),
  );
  // the runners: each task once
  const runnerFeeds = runners.map((w) =>
    streamFeed(w, {
      redis: client,
      stream: tasks,
      startId: '0',
      taskId: (e) => `${e.fields.order}:${e.fields.kind}`,
      handler: async (e, { token }) => {
        executed.push({ task: `${e.fields.order}:${e.fields.kind}`, by: w.options.name });
        return { done: `${e.fields.kind} for ${e.fields.order}`, token };
      },
    }),
  );

  try {
    for (let i = 1; i <= 5; i++) await client.xadd(orders, '*', 'order', `order-${i}`);
    const want = 5 * KINDS.length;
    for (let i = 0; i < 800; i++) {
      const acked = runnerFeeds.every((f) => f.stats.acked >= want);
      if (acked) break;
      await sleep(25);
    }
    for (const f of [...routerFeeds, ...runnerFeeds]) await f.stop();

    const names = executed.map((e) => e.task);
    check(names.length === want, `${want} tasks ran (got ${names.length})`);
    check(new Set(names).size === want, 'no task ran twice');
    for (const f of runnerFeeds) {
      const pending = (await client.xpending(tasks, f.group)) as [number];
      check(Number(pending[0]) === 0, `${f.group} acknowledged everything`);
    }
    const by = (n: string) => executed.filter((e) => e.by === n).length;
    console.log(`routed 5 orders into ${await client.xlen(tasks)} tasks`);
    console.log(
      `stream pipeline: 5 orders, ${want} tasks, each ran exactly once (runner-a ${by('runner-a')}, runner-b ${by('runner-b')})`,
    );
  } finally {
    await Promise.allSettled([...routerFeeds, ...runnerFeeds].map((f) => f.stop()));
    await Promise.allSettled([...routers, ...runners].map((w) => w.close()));
    client.disconnect();
    await redis.stop();
  }
});
