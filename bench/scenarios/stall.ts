/**
 * Scenario 8: stalls that nobody acted on. A pair of workers (library defaults, one
 * process) runs tasks whose handlers honour their signal, while something pauses: Redis
 * (DEBUG SLEEP, standing in for a fork, a slow command or script, an fsync), the
 * handlers' own synchronous work (the event loop stands still), or a burst of run()
 * calls started in one turn. A pause nobody took a task over in must re-run nothing:
 * every handler execution beyond one per task is counted as a re-execution.
 */
import { type HandlerContext, PairedWorker } from '../../src/index.js';
import type { Ctx } from '../lib/context.js';
import { newResult, type ScenarioResult } from '../lib/report.js';
import { sleep } from '../lib/stats.js';

interface Round {
  readonly what: string;
  readonly tasks: number;
  readonly executions: number;
  readonly leaseLost: number;
  readonly doubts: number;
  readonly tookOver: number;
  readonly seconds: number;
}

/** Run `tasks` on a fresh pair; `during` pauses something while the handlers hold them. */
async function round(
  ctx: Ctx,
  what: string,
  tasks: number,
  handlerWork: (ctx: HandlerContext) => Promise<void>,
  during: () => Promise<void> = async () => {},
): Promise<Round> {
  await ctx.redis.flush();
  const namespace = `stall-${ctx.runId}-${what.replace(/\W+/g, '-')}`;
  const a = new PairedWorker({ redis: ctx.redis.url, namespace, name: 'a' });
  const b = new PairedWorker({ redis: ctx.redis.url, namespace, name: 'b' });
  let executions = 0;
  let leaseLost = 0;
  let doubts = 0;
  let tookOver = 0;
  for (const w of [a, b]) {
    w.on('lease-lost', () => {
      leaseLost += 1;
    });
    w.on('lease-doubt', (e) => {
      if (e.inDoubt) doubts += 1;
    });
    w.on('took-over', () => {
      tookOver += 1;
    });
  }
  const t0 = performance.now();
  try {
    await Promise.all([a.start(), b.start()]);
    const handler = async (hc: HandlerContext) => {
      executions += 1;
      await handlerWork(hc);
      // a handler that stops when told ends with the signal's reason
      hc.signal.throwIfAborted();
      return hc.taskId;
    };
    const ids = Array.from({ length: tasks }, (_, i) => `${what}:${i}`);
    const runs = ids.flatMap((id) => [a.run(id, handler), b.run(id, handler)]);
    await during();
    const outcomes = await Promise.race([
      Promise.allSettled(runs),
      sleep(120_000).then(() => undefined),
    ]);
    if (!outcomes) throw new Error(`${what}: not every run() resolved within 120 s`);
  } finally {
    await Promise.allSettled([a.close(), b.close()]);
  }
  return {
    what,
    tasks,
    executions,
    leaseLost,
    doubts,
    tookOver,
    seconds: (performance.now() - t0) / 1_000,
  };
}

/** Holds the task for `ms`, or until its signal fires. */
const hold =
  (ms: number) =>
  ({ signal }: HandlerContext) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      signal.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      });
    });

/**
 * `chunks` pieces of synchronous work of `ms` each, yielding between them. The handlers
 * take turns (one computes at a time, as on one core), so that each stall of the event
 * loop is one chunk long, not one chunk of every running handler.
 */
const busy = (ms: number, chunks: number) => {
  let cpu: Promise<void> = Promise.resolve();
  return async ({ signal }: HandlerContext) => {
    for (let c = 0; c < chunks && !signal.aborted; c++) {
      const turn = cpu.then(() => {
        if (signal.aborted) return;
        const until = performance.now() + ms;
        while (performance.now() < until) {
          // the event loop stands still
        }
      });
      cpu = turn.then(() => new Promise((r) => setTimeout(r, 5)));
      await turn;
      await new Promise((r) => setImmediate(r));
    }
  };
};

export async function stall(ctx: Ctx): Promise<ScenarioResult> {
  const res = newResult('stall', '8. Stalls nobody acted on');
  const rounds: Round[] = [];
  const redisStalls = ctx.quick ? [0.3] : [0.15, 0.3, 0.5];
  for (const seconds of redisStalls) {
    ctx.log(`stall: Redis DEBUG SLEEP ${seconds}`);
    rounds.push(
      await round(ctx, `redis-sleep-${seconds * 1000}ms`, 20, hold(1_500), async () => {
        await sleep(400);
        await ctx.redis.admin.call('DEBUG', 'SLEEP', String(seconds));
      }),
    );
  }
  const chunked: [number, number][] = ctx.quick
    ? [[150, 10]]
    : [
        [60, 40],
        [150, 40],
        [500, 10],
      ];
  for (const [chunkMs, tasks] of chunked) {
    ctx.log(`stall: handlers with ${chunkMs} ms synchronous chunks`);
    rounds.push(await round(ctx, `sync-${chunkMs}ms-chunks`, tasks, busy(chunkMs, 2)));
  }
  const burst = ctx.quick ? 2_000 : 10_000;
  ctx.log(`stall: ${burst} run() calls in one turn`);
  rounds.push(await round(ctx, `burst-${burst}`, burst, hold(50)));

  res.tables.push({
    title:
      'Pauses nobody took a task over in: a pair at library defaults (one process), handlers that honour their signal; re-executions = executions − tasks',
    columns: [
      'pause',
      'tasks',
      'executions',
      're-executions',
      'lease losses',
      'doubts',
      'takeovers',
      'time',
    ],
    rows: rounds.map((r) => [
      describe(r.what),
      String(r.tasks),
      String(r.executions),
      String(r.executions - r.tasks),
      String(r.leaseLost),
      String(r.doubts),
      String(r.tookOver),
      `${r.seconds.toFixed(1)} s`,
    ]),
    notes: [
      'Redis stalls: DEBUG SLEEP 400 ms after 20 handlers started (each holds its task 1.5 s). Synchronous chunks: each handler runs two chunks; the handlers take turns (one computes at a time, 5 ms apart), so each stall of the shared event loop (both workers) is one chunk. Burst: every run() of both workers started in one turn, handlers of 50 ms.',
      'A doubt is a holder whose connection proofs were late on a connection that stood: it aborts nothing (docs/topologies.md, "Doubt is not loss").',
    ],
  });
  res.data = { rounds };
  return res;
}

function describe(what: string): string {
  const m = /^redis-sleep-(\d+)ms$/.exec(what);
  if (m) return `Redis stall ${m[1]} ms (DEBUG SLEEP)`;
  const c = /^sync-(\d+)ms-chunks$/.exec(what);
  if (c) return `handler sync chunks of ${c[1]} ms`;
  const b = /^burst-(\d+)$/.exec(what);
  if (b) return `${Number(b[1]).toLocaleString('en-US')} run() calls in one turn`;
  return what;
}
