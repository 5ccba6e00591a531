/**
 * A quorum deployment: three independent Redis masters (think: one per site), a worker
 * pair that needs a majority of them for every transition. One Redis node is killed in
 * the middle of the run: work goes on without a pause, no task runs twice, and both
 * workers keep agreeing on every outcome.
 *
 *   npx tsx examples/quorum.ts
 */
import { PairedWorker } from '../src/index.js';
import { startIndependent } from '../src/testing/index.js';
import { check, runExample } from './support.js';

runExample(async () => {
  const nodes = await startIndependent(3);
  const urls = nodes.nodes.map((n) => n.url);
  const worker = (name: string) =>
    new PairedWorker({ nodes: urls, namespace: 'quorum-example', name, sessionTtlMs: 2_000 });
  const a = worker('site-a');
  const b = worker('site-b');
  const executions = new Map<string, number>();
  const handler = async ({ taskId, token }: { taskId: string; token: number }) => {
    executions.set(taskId, (executions.get(taskId) ?? 0) + 1);
    return { taskId, token };
  };
  try {
    const ids = Array.from({ length: 60 }, (_, i) => `job-${i + 1}`);
    let killedAt = -1;
    for (const [i, id] of ids.entries()) {
      if (i === 30) {
        // a whole site's Redis goes down: the other two are still a majority
        await nodes.nodes[2]!.kill();
        killedAt = i;
        console.log(`killed Redis node 3 of 3 (${urls[2]}) after ${i} tasks`);
      }
      const [oa, ob] = await Promise.all([a.run(id, handler), b.run(id, handler)]);
      check(oa.token === ob.token && oa.worker === ob.worker, `both sides agree on ${id}`);
    }
    check(killedAt === 30, 'a node was killed mid-run');
    const twice = [...executions.values()].filter((n) => n !== 1).length;
    check(executions.size === ids.length && twice === 0, `each task ran once (${twice} ran twice)`);
    console.log(
      `quorum: ${ids.length} tasks on 3 Redis nodes, one killed mid-run, each ran exactly once`,
    );
  } finally {
    await Promise.allSettled([a.close(), b.close()]);
    await nodes.close();
  }
});
