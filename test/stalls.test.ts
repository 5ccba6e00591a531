/**
 * Stall-tolerant liveness on real redis-server processes: a pause that nobody acted on
 * (of Redis, of the holder's event loop) never re-runs a task; a lease the holder gave up
 * uses no attempt and is taken back as 'reclaimed'; a grant nobody will run goes back at
 * once; a worker alone honours backoffMs. Each test here failed before its fix (see the
 * commit that added it). Times are printed for the record, never asserted as speed.
 */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type HandlerContext, PairedWorker, type PairedWorkerOptions } from '../src/index.js';
import { Keys } from '../src/redis/keys.js';
import { RedisServer, TcpProxy } from '../src/testing/index.js';

const now = () => performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const workers: PairedWorker[] = [];
let n = 0;
let server: RedisServer;
let admin: Redis;

beforeAll(async () => {
  // test servers run with debug commands enabled (DEBUG SLEEP)
  server = await RedisServer.start();
  admin = new Redis(server.url);
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});
afterEach(async () => {
  await Promise.allSettled(workers.splice(0).map((w) => w.close()));
});

/** Waits until `ok` holds, polling; fails the test past `ms` (a bound, not a timing). */
async function until(ok: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = now() + ms;
  while (!(await ok())) {
    if (now() > deadline) throw new Error(`not within ${ms} ms`);
    await sleep(10);
  }
}

function worker(url: string, ns: string, name: string, extra: Partial<PairedWorkerOptions> = {}) {
  const w = new PairedWorker({ redis: url, namespace: ns, name, ...extra });
  workers.push(w);
  return w;
}

/** Every lease-lost and lease-doubt event of the workers, and every execution per task. */
function record(...ws: PairedWorker[]) {
  const lost: string[] = [];
  const doubts: boolean[] = [];
  const executions = new Map<string, number>();
  for (const w of ws) {
    w.on('lease-lost', (e) => lost.push(`${e.taskId}:${e.reason}`));
    w.on('lease-doubt', (e) => doubts.push(e.inDoubt));
  }
  const started = (taskId: string) => executions.set(taskId, (executions.get(taskId) ?? 0) + 1);
  const total = () => [...executions.values()].reduce((a, b) => a + b, 0);
  return { lost, doubts, executions, started, total };
}

describe('a pause nobody acted on re-runs nothing (library defaults)', () => {
  it('a 300 ms Redis stall (DEBUG SLEEP 0.3) under 20 held tasks: no handler aborted, 20 executions', async () => {
    const ns = `redis-stall-${++n}`;
    const a = worker(server.url, ns, 'a');
    const b = worker(server.url, ns, 'b');
    const rec = record(a, b);
    const ids = Array.from({ length: 20 }, (_, i) => `job-${i}`);
    const sawDoubt: boolean[] = [];
    const handler = async (ctx: HandlerContext) => {
      const { taskId, signal } = ctx;
      rec.started(taskId);
      // what a handler can see meanwhile: its worker in doubt, then certain again
      const look = setInterval(() => {
        if (ctx.inDoubt && !sawDoubt.includes(true)) sawDoubt.push(true);
      }, 10);
      signal.addEventListener('abort', () => clearInterval(look));
      setTimeout(() => clearInterval(look), 1_200);
      // holds the task across the stall; stops early only if its signal fires
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 1_200);
        signal.addEventListener('abort', () => {
          clearTimeout(t);
          resolve();
        });
      });
      if (signal.aborted) throw new Error('aborted');
      return taskId;
    };
    const runs = ids.flatMap((id) => [a.run(id, handler), b.run(id, handler)]);
    await until(() => rec.total() === 20, 10_000);
    const stallAt = now();
    await admin.call('DEBUG', 'SLEEP', '0.3');
    console.log(`DEBUG SLEEP 0.3 answered after ${(now() - stallAt).toFixed(0)} ms`);
    const outcomes = await Promise.all(runs);
    expect(outcomes.every((o) => o.state === 'done' && o.attempts === 1)).toBe(true);
    expect(rec.lost).toEqual([]);
    expect(rec.total()).toBe(20);
    // the stall outlasted the proofs' certainty while the connections stood: doubt, seen
    // by the handlers (ctx.inDoubt) and reported (lease-doubt), then ended by a proof
    expect(sawDoubt).toEqual([true]);
    expect(rec.doubts.length).toBeGreaterThanOrEqual(2);
    expect(rec.doubts.at(-1)).toBe(false);
    console.log(
      `Redis stall 300 ms: ${rec.total()} executions for 20 tasks, doubt events ${rec.doubts.length}`,
    );
  });

  it('handlers with 150 ms synchronous chunks, two workers in one process: every task runs once', async () => {
    const ns = `loop-stall-${++n}`;
    const a = worker(server.url, ns, 'a');
    const b = worker(server.url, ns, 'b');
    const rec = record(a, b);
    const ids = Array.from({ length: 10 }, (_, i) => `job-${i}`);
    const handler = async ({ taskId, signal }: HandlerContext) => {
      rec.started(taskId);
      for (let chunk = 0; chunk < 3; chunk++) {
        const until = now() + 150;
        while (now() < until) {
          // synchronous work: the event loop stands still
        }
        await new Promise((r) => setImmediate(r));
        if (signal.aborted) throw new Error('aborted');
      }
      return taskId;
    };
    const outcomes = await Promise.all(
      ids.flatMap((id) => [a.run(id, handler), b.run(id, handler)]),
    );
    expect(outcomes.every((o) => o.state === 'done' && o.attempts === 1)).toBe(true);
    expect(rec.lost).toEqual([]);
    expect(rec.total()).toBe(10);
    console.log(
      `150 ms chunks: ${rec.total()} executions for 10 tasks, doubt events ${rec.doubts.length}`,
    );
  });
});

describe('a lost lease, a dropped grant, a worker alone', () => {
  it("a holder's lease lost to its links cut: the grant goes back unused, and its own worker takes it back as 'reclaimed' on the same attempt", async () => {
    const ns = `reclaim-${++n}`;
    const proxy = await TcpProxy.start({ targetPort: server.port });
    try {
      const a = worker(`redis://127.0.0.1:${proxy.port}`, ns, 'a');
      const kinds: string[] = [];
      let tookOver = 0;
      a.on('claimed', (e) => kinds.push(e.kind));
      a.on('took-over', () => {
        tookOver += 1;
      });
      const reasons: string[] = [];
      a.on('lease-lost', (e) => reasons.push(e.reason));
      let calls = 0;
      const run = a.run('t', ({ signal }) => {
        calls += 1;
        if (calls > 1) return Promise.resolve('second');
        return new Promise<string>((_resolve, reject) => {
          // stops with the signal's reason: a lost lease, not a failure of the task
          signal.addEventListener('abort', () => reject(signal.reason));
        });
      });
      while (calls === 0) await sleep(5);
      proxy.cut();
      while (reasons.length === 0) await sleep(5);
      await sleep(100);
      proxy.heal();
      const outcome = await run;
      expect(reasons).toEqual(['connection']);
      // a worker taking its own task back is neither a peer's takeover nor a handover
      expect(kinds).toEqual(['fresh', 'reclaimed']);
      expect(tookOver).toBe(0);
      expect(outcome).toMatchObject({ state: 'done', result: 'second', role: 'ran' });
      // the first grant was never run to an effect: it used no attempt
      expect(outcome.attempts).toBe(1);
      expect(outcome.token).toBe(2);
    } finally {
      await Promise.allSettled(workers.splice(0).map((w) => w.close()));
      await proxy.close();
    }
  });

  it('a grant made to a run() its caller aborted meanwhile goes back at once: the peer does not wait for the deadline', async () => {
    const ns = `dropped-${++n}`;
    const proxy = await TcpProxy.start({ targetPort: server.port });
    try {
      const opts = { taskTimeoutMs: 60_000 };
      const a = worker(`redis://127.0.0.1:${proxy.port}`, ns, 'a', opts);
      const b = worker(server.url, ns, 'b', opts);
      // both started (sessions open, bound) before the replies to a slow down
      await a.run('warm-a', async () => 'ok');
      await b.run('warm-b', async () => 'ok');
      proxy.setReplyDelay(200);
      const ac = new AbortController();
      let ranOnA = false;
      const runA = a
        .run(
          't',
          async () => {
            ranOnA = true;
            return 'a';
          },
          { signal: ac.signal },
        )
        .catch((e: Error) => e);
      // the claim applied on Redis; its reply is on its way
      const record = new Keys('pairlock', ns).task('t').container;
      await until(async () => (await admin.exists(record)) === 1, 10_000);
      ac.abort();
      expect(await runA).toBeInstanceOf(Error);
      // the grant reached a, which gave it back
      await until(async () => /^\d+\|X\|/.test((await admin.get(record)) ?? ''), 10_000);
      proxy.setReplyDelay(0);
      const startedAt = now();
      let from = '';
      b.on('took-over', (e) => {
        if (e.taskId === 't') from = e.kind;
      });
      const outcome = await Promise.race([
        b.run('t', async () => 'b'),
        sleep(10_000).then(() => undefined),
      ]);
      expect(outcome).toMatchObject({ state: 'done', result: 'b', role: 'took-over' });
      expect(from).toBe('handover');
      expect(outcome?.attempts).toBe(1);
      expect(ranOnA).toBe(false);
      console.log(
        `dropped grant: the peer ran the task after ${(now() - startedAt).toFixed(0)} ms`,
      );
    } finally {
      await Promise.allSettled(workers.splice(0).map((w) => w.close()));
      await proxy.close();
    }
  });

  it('a worker alone retries a failed attempt after backoffMs, not after the safety-net interval', async () => {
    const ns = `alone-${++n}`;
    const a = worker(server.url, ns, 'a', {
      failure: { maxAttempts: 2, backoffMs: 200 },
      firstAttemptIntervalMs: 20_000,
    });
    const starts: number[] = [];
    const outcome = await Promise.race([
      a.run('t', async () => {
        starts.push(now());
        if (starts.length === 1) throw new Error('first attempt fails');
        return 'second';
      }),
      sleep(15_000).then(() => undefined),
    ]);
    expect(outcome).toMatchObject({ state: 'done', result: 'second', attempts: 2 });
    const gap = (starts[1] ?? 0) - (starts[0] ?? 0);
    // the backoff, and a moment for a peer to go first; not the 20 s safety net
    expect(gap).toBeGreaterThanOrEqual(200);
    expect(gap).toBeLessThan(20_000);
    console.log(`alone: retried ${gap.toFixed(0)} ms after the failure (backoffMs 200)`);
  });
});

describe('a handler that runs to its deadline', () => {
  it('uses its attempt: one that always hangs ends at maxAttempts, not in a loop', async () => {
    const ns = `deadline-${++n}`;
    const a = worker(server.url, ns, 'a', {
      taskTimeoutMs: 300,
      failure: { maxAttempts: 2, backoffMs: 0 },
    });
    const reasons: string[] = [];
    a.on('lease-lost', (e) => reasons.push(e.reason));
    let calls = 0;
    const outcome = await Promise.race([
      a
        .run('t', ({ signal }) => {
          calls += 1;
          return new Promise<string>((_resolve, reject) => {
            signal.addEventListener('abort', () => reject(signal.reason));
          });
        })
        .catch((e: Error) => e),
      sleep(15_000).then(() => 'still looping'),
    ]);
    // a timeout is the task's failure: the failure policy decides, attempts run out. Each
    // attempt's signal fires at its deadline and its failure settles, or, when the settle
    // comes after the server's deadline (the signal fires only a drift early), Redis
    // refuses it and the next grant counts the attempt as a deadline takeover: at most
    // one more execution, never a loop
    expect(outcome).toMatchObject({ state: 'failed', error: { code: 'ERR_TASK_TIMEOUT' } });
    const o = outcome as { attempts: number };
    expect(o.attempts).toBeGreaterThanOrEqual(2);
    expect(calls).toBe(o.attempts);
    expect(calls).toBeLessThanOrEqual(3);
    expect(reasons.filter((r) => r === 'deadline')).toHaveLength(calls);
    expect(reasons.every((r) => r === 'deadline' || r === 'rejected')).toBe(true);
    console.log(
      `always hangs, maxAttempts 2: ${calls} executions, then ${JSON.stringify(outcome)}`,
    );
  });
});
