/**
 * An HA cron: two workers run the same schedule; every tick is one task named after
 * its time (`report:2030-01-01T00:00:00.500Z`), so both sides agree on it and exactly
 * one runs it. When one side stops, the other keeps every tick going.
 *
 *   npx tsx examples/ha-cron.ts
 */
import { schedule } from '../src/feeds/index.js';
import { PairedWorker } from '../src/index.js';
import { check, exampleRedis, runExample, sleep } from './support.js';

runExample(async () => {
  const redis = await exampleRedis('cron');
  const ran = new Map<string, string[]>();
  const side = (name: string) => {
    const worker = new PairedWorker({
      redis: redis.url,
      namespace: redis.namespace,
      name,
      sessionTtlMs: 2_000,
    });
    const cron = schedule(worker, {
      name: 'report',
      every: '500ms',
      handler: (tick) => {
        ran.set(tick.taskId, [...(ran.get(tick.taskId) ?? []), name]);
        console.log(`${tick.taskId} ran on ${name}`);
        return { reportFor: tick.at.toISOString() };
      },
    });
    return { name, worker, cron };
  };
  const a = side('cron-a');
  const b = side('cron-b');
  try {
    await Promise.all([a.worker.start(), b.worker.start()]);
    for (let i = 0; i < 400 && ran.size < 4; i++) await sleep(25);

    // the side that has been running the ticks goes away (a deploy): what it holds is
    // handed over, and the other side keeps every tick going
    const count = (n: string) => [...ran.values()].filter((s) => s[0] === n).length;
    const [gone, stays] = count('cron-a') >= count('cron-b') ? [a, b] : [b, a];
    await gone.cron.stop();
    await gone.worker.close({ handover: true });
    const before = ran.size;
    console.log(`${gone.name} stopped`);
    for (let i = 0; i < 400 && ran.size < before + 3; i++) await sleep(25);
    await stays.cron.stop();

    check(ran.size >= before + 3, 'ticks went on with one side');
    for (const [tick, sides] of ran)
      check(sides.length === 1, `${tick} ran once (${sides.join(', ')})`);
    const later = [...ran.keys()].sort().slice(before + 1);
    check(
      later.every((t) => ran.get(t)?.[0] === stays.name),
      `${stays.name} ran the ticks after ${gone.name} stopped`,
    );
    console.log(
      `cron: ${ran.size} ticks, each ran exactly once (cron-a ${count('cron-a')}, cron-b ${count('cron-b')}); ${ran.size - before} after ${gone.name} stopped`,
    );
  } finally {
    await Promise.allSettled([a.worker.close(), b.worker.close()]);
    await redis.stop();
  }
});
