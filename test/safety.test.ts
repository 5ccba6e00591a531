import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type HandlerContext,
  InvalidOptionError,
  type Outcome,
  PairedWorker,
  RedisUnavailableError,
} from '../src/index.js';
import type { Store } from '../src/redis/store.js';
import { RedisServer, TcpProxy } from '../src/testing/index.js';
import { useRedisPair } from './support/redis-pair.js';

/*
 * Interleavings that a run without these faults never shows: a caller that aborts and
 * asks again, a reply lost to a client-side timeout, a handover while a handler runs,
 * a paused worker finding its own grant, a hung handler under default intervals, and
 * option combinations that would let a fencing token restart.
 */

const pair = useRedisPair();
let admin: Redis;
beforeAll(() => {
  admin = new Redis(pair.url);
});
afterAll(async () => {
  await admin.quit();
});
afterEach(async () => {
  await pair.closeWorkers();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

/** Resolves with the value, or rejects after `ms` (a hang is a failure, not a stall). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
    }),
  ]);
}

async function until(cond: () => Promise<boolean> | boolean, ms = 5_000): Promise<void> {
  const end = now() + ms;
  while (!(await cond())) {
    if (now() > end) throw new Error('condition not reached in time');
    await sleep(5);
  }
}

/** The store of a worker, to inject faults below the worker (not part of the public API). */
function storeOf(
  w: PairedWorker,
): Store & { call(name: string, args: unknown[]): Promise<unknown> } {
  return (w as unknown as { store: Store & { call(n: string, a: unknown[]): Promise<unknown> } })
    .store;
}

const abortable = (ctx: HandlerContext) =>
  new Promise<never>((_, reject) => {
    ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true });
  });

describe('a second run() of a task whose handler still runs here', () => {
  it('joins the running execution and resolves with its outcome', async () => {
    const ns = pair.namespace('join');
    const w = pair.worker(ns, 'a');
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let firstRuns = 0;
    let secondRuns = 0;
    const caller = new AbortController();
    const first = w.run(
      't',
      async () => {
        firstRuns += 1;
        await gate;
        return 'first';
      },
      { signal: caller.signal },
    );
    await until(() => firstRuns === 1);
    caller.abort(new Error('caller gave up'));
    await expect(first).rejects.toThrow('caller gave up');
    const second = w.run('t', async () => {
      secondRuns += 1;
      return 'second';
    });
    release();
    const outcome = await within(second, 5_000, 'the second run()');
    expect(outcome).toMatchObject({ state: 'done', result: 'first', role: 'ran', token: 1 });
    expect([firstRuns, secondRuns]).toEqual([1, 0]);
  });
});

describe('a second run() of a task whose settle is on its way', () => {
  it('gets the outcome that settle brings (the handler has returned, its settle is not answered yet)', async () => {
    const ns = pair.namespace('join-settle');
    const w = pair.worker(ns, 'a');
    await w.start();
    // hold the settle back until the second run() has come
    const store = storeOf(w);
    const settle = store.settle.bind(store);
    let letSettle!: () => void;
    const gate = new Promise<void>((r) => {
      letSettle = r;
    });
    let settling = false;
    store.settle = async (...args: Parameters<Store['settle']>) => {
      settling = true;
      await gate;
      return settle(...args);
    };
    const caller = new AbortController();
    let runs = 0;
    const first = w.run(
      't',
      () => {
        runs += 1;
        return 'first';
      },
      { signal: caller.signal },
    );
    await until(() => settling);
    caller.abort(new Error('caller gave up'));
    await expect(first).rejects.toThrow('caller gave up');
    const second = w.run('t', () => {
      runs += 1;
      return 'second';
    });
    await sleep(20);
    letSettle();
    const outcome = await within(second, 5_000, 'the second run()');
    expect(outcome).toMatchObject({ state: 'done', result: 'first', token: 1 });
    expect(runs).toBe(1);
  });
});

describe('a handler that overran its deadline and was taken over', () => {
  for (const joined of [false, true]) {
    it(`resolves its worker's run() with the peer's outcome once its settle is refused${joined ? ' (a run() that joined the execution)' : ''}`, async () => {
      const ns = pair.namespace('overrun');
      const timing = {
        taskTimeoutMs: 400,
        firstAttemptIntervalMs: 200,
        otherAttemptIntervalMs: 400,
      };
      const a = pair.worker(ns, 'a', timing);
      const b = pair.worker(ns, 'b', timing);
      const caller = new AbortController();
      let aStarted!: () => void;
      const started = new Promise<void>((r) => {
        aStarted = r;
      });
      const slow = () => {
        aStarted();
        return sleep(1_200).then(() => 'late a'); // ignores its signal
      };
      const first = a.run('t', slow, joined ? { signal: caller.signal } : {});
      await started;
      let mine = first;
      if (joined) {
        caller.abort(new Error('caller gave up'));
        await expect(first).rejects.toThrow('caller gave up');
        mine = a.run('t', () => 'never');
      }
      const peer = b.run('t', () => 'b');
      expect(await within(peer, 5_000, "the peer's run()")).toMatchObject({
        result: 'b',
        role: 'took-over',
      });
      expect(await within(mine, 5_000, "the overrunning worker's run()")).toMatchObject({
        state: 'done',
        result: 'b',
        role: 'watched',
        token: 2,
      });
    });
  }
});

describe('a handler that stops because its lease was lost', () => {
  it('gives the task back instead of reporting a failure (a lease lost to its cut links uses up no attempt)', async () => {
    const ns = pair.namespace('lapse');
    const proxy = await TcpProxy.start({ targetPort: pair.server.port });
    try {
      // give-up: one reported failure would be the outcome
      const w = pair.worker(ns, 'a', { redis: proxy.url, failure: { policy: 'give-up' } });
      const lost: string[] = [];
      w.on('lease-lost', (e) => lost.push(e.reason));
      await w.start();
      await sleep(300); // bound
      let runs = 0;
      const running = w.run('t', async (ctx) => {
        runs += 1;
        if (runs === 1) {
          // stops at its signal, with the signal's reason
          await new Promise((_, reject) =>
            ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)),
          );
        }
        return 'ok';
      });
      while (runs === 0) await sleep(5);
      // the connections close (the subscriber's too) and cannot be unbound: a loss
      proxy.cut();
      while (lost.length === 0) await sleep(5);
      proxy.heal();
      const outcome = await within(running, 10_000, 'run()');
      expect(lost).toEqual(['connection']);
      expect(outcome).toMatchObject({ state: 'done', result: 'ok', attempts: 1 });
      expect(runs).toBe(2);
    } finally {
      await pair.closeWorkers();
      await proxy.close();
    }
  });

  it('by default the same stall is doubt, not loss: the handler goes on, it runs once', async () => {
    const ns = pair.namespace('doubt');
    const w = pair.worker(ns, 'a', { failure: { policy: 'give-up' } });
    const lost: string[] = [];
    const doubts: boolean[] = [];
    w.on('lease-lost', (e) => lost.push(e.reason));
    w.on('lease-doubt', (e) => doubts.push(e.inDoubt));
    await w.start();
    await sleep(300); // bound
    let runs = 0;
    const outcome = await within(
      w.run('t', async (ctx) => {
        runs += 1;
        const until = performance.now() + 400;
        while (performance.now() < until) {}
        await sleep(50);
        ctx.signal.throwIfAborted();
        return 'ok';
      }),
      10_000,
      'run()',
    );
    expect(outcome).toMatchObject({ state: 'done', result: 'ok', attempts: 1, token: 1 });
    expect(runs).toBe(1);
    expect(lost).toEqual([]);
    // the stall may have put the holder in doubt (unless the proof it sent on waking was
    // answered in the same turn), and a proof answered after it ended the doubt
    expect([[], [true, false]]).toContainEqual(doubts);
  });
});

describe('a claim reply lost to a client-side timeout', () => {
  it('resumes its own grant with the server deadline and the grant kind', async () => {
    const ns = pair.namespace('resume');
    const proxy = await TcpProxy.start({ targetPort: pair.server.port });
    try {
      const taskTimeoutMs = 1_500;
      const a = pair.worker(ns, 'a', { redis: proxy.url, connectTimeoutMs: 300, taskTimeoutMs });
      const b = pair.worker(ns, 'b');
      const bStarted = new Promise<void>((resolve) => {
        void b
          .run('t', (ctx) => {
            resolve();
            return abortable(ctx);
          })
          .catch(() => {});
      });
      await bStarted;
      let kind = '';
      let abortedAt = 0;
      const aRun = a.run('t', async (ctx) => {
        if (kind !== '') return 'again'; // only the first execution is measured
        kind = ctx.kind;
        await abortable(ctx).catch(() => {
          abortedAt = now();
        });
        return 'late';
      });
      await until(async () => (await a.inspect('t'))?.worker === b.id);
      await sleep(50); // a is covering b now
      // every byte through the proxy now takes 200 ms each way: a's claim is applied by
      // Redis, and its reply arrives after a's 300 ms bound
      proxy.setDelay(200);
      await b.close({ handover: true });
      let grantSeenAt = 0;
      await until(async () => {
        const raw = await admin.get(`pairlock:{${ns}}:t:t`);
        if (raw?.includes(a.session)) grantSeenAt = now();
        return grantSeenAt > 0;
      });
      proxy.setDelay(0); // the reply in flight stays late; the retry gets a prompt answer
      await aRun.catch(() => {});
      expect(kind).toBe('handover');
      // the server's deadline is at most taskTimeoutMs after the grant was applied
      expect(abortedAt).toBeGreaterThan(0);
      expect(abortedAt).toBeLessThanOrEqual(grantSeenAt + taskTimeoutMs);
    } finally {
      await pair.closeWorkers();
      await proxy.close();
    }
  });

  it('does not run a failed handler again under the same token when its settle never reached Redis', async () => {
    const ns = pair.namespace('failset');
    const w = pair.worker(ns, 'a', {
      sessionTtlMs: 600,
      failure: { maxAttempts: 1 },
    });
    await w.start();
    const store = storeOf(w);
    const realSettle = store.settle.bind(store);
    const realSession = store.session.bind(store);
    let faulty = true;
    // settles are lost before Redis sees them; renewals reach Redis but their replies are
    // lost, so the worker cannot prove its lease while the server keeps its session
    store.settle = async (loc, a) => {
      if (faulty) throw new RedisUnavailableError('injected: settle not sent');
      return realSettle(loc, a);
    };
    store.session = async (op, id, ttl, desc) => {
      const reply = await realSession(op, id, ttl, desc);
      if (faulty && op === 'renew') throw new RedisUnavailableError('injected: reply lost');
      return reply;
    };
    const tokens: number[] = [];
    const run = w.run('t', async ({ token }) => {
      tokens.push(token);
      if (tokens.length === 1) setTimeout(() => (faulty = false), 900);
      throw new Error('boom');
    });
    const outcome = await within(run, 8_000, 'run()');
    expect(outcome.state).toBe('failed');
    expect(outcome.error?.message).toBe('boom');
    // one execution per token: the failure was reported, not produced a second time
    expect(new Set(tokens).size).toBe(tokens.length);
    expect(tokens).toEqual([1]);
  });

  it('with replication, a grant WAIT refused and whose give-back failed never runs', async () => {
    const replica = await RedisServer.start({
      args: ['--replicaof', '127.0.0.1', String(pair.server.port)],
    });
    const probe = new Redis(replica.url);
    try {
      await until(async () => (await probe.info('replication')).includes('master_link_status:up'));
      await until(async () => (await admin.wait(1, 200)) >= 1, 10_000);
      const ns = pair.namespace('wait');
      const w = pair.worker(ns, 'a', {
        replication: { waitReplicas: 1, waitTimeoutMs: 500 },
        unavailableTimeoutMs: 1_500,
      });
      // a loaded machine may keep the replica's first acknowledgement past the wait
      for (let i = 0; ; i++) {
        try {
          await w.start();
          break;
        } catch (err) {
          if (i >= 4) throw err;
        }
      }
      replica.pause(); // from now on no write is acknowledged by a replica
      const store = storeOf(w);
      const realCall = store.call.bind(store);
      store.call = async (name, args) => {
        if (name === 'release') throw new RedisUnavailableError('injected: give-back lost');
        return realCall(name, args);
      };
      let ran = 0;
      const run = w.run('t', () => {
        ran += 1;
        return 'x';
      });
      await expect(within(run, 8_000, 'run()')).rejects.toThrow(/replica/);
      expect(ran).toBe(0);
    } finally {
      replica.resume();
      probe.disconnect();
      await pair.closeWorkers();
      await replica.stop();
    }
  });
});

describe('close with handover', () => {
  it('fires the signal and lets the handler return before the peer can claim', async () => {
    const ns = pair.namespace('handover');
    const a = pair.worker(ns, 'a');
    const b = pair.worker(ns, 'b');
    let aReturnedAt = 0;
    let bStartedAt = 0;
    const aStarted = new Promise<void>((resolve) => {
      void a
        .run('t', async (ctx) => {
          resolve();
          await abortable(ctx).catch(() => {});
          await sleep(150); // cleanup after the signal
          aReturnedAt = now();
          throw ctx.signal.reason;
        })
        .catch(() => {});
    });
    await aStarted;
    const bRun = b.run('t', () => {
      bStartedAt = now();
      return 'b';
    });
    await sleep(100);
    await a.close({ handover: true });
    const outcome = await within(bRun, 5_000, "the peer's run()");
    expect(outcome).toMatchObject({ state: 'done', result: 'b', role: 'took-over', token: 2 });
    expect(aReturnedAt).toBeGreaterThan(0);
    expect(bStartedAt).toBeGreaterThanOrEqual(aReturnedAt);
  });

  it('settles a result the handler returned within the grace instead of handing it over', async () => {
    const ns = pair.namespace('handover');
    const a = pair.worker(ns, 'a');
    const b = pair.worker(ns, 'b');
    const aStarted = new Promise<void>((resolve) => {
      void a
        .run('t', async (ctx) => {
          resolve();
          await abortable(ctx).catch(() => {});
          return 'finished by a';
        })
        .catch(() => {});
    });
    await aStarted;
    const bRun = b.run('t', () => 'b');
    await sleep(100);
    await a.close({ handover: true });
    const outcome = await within(bRun, 5_000, "the peer's run()");
    expect(outcome).toMatchObject({ state: 'done', result: 'finished by a', role: 'watched' });
  });

  it('releases a task whose handler ignores its signal once the grace has passed', async () => {
    const ns = pair.namespace('handover');
    const a = pair.worker(ns, 'a');
    const b = pair.worker(ns, 'b');
    const aStarted = new Promise<void>((resolve) => {
      void a
        .run('t', () => {
          resolve();
          return new Promise(() => {}); // never returns
        })
        .catch(() => {});
    });
    await aStarted;
    const bRun = b.run('t', () => 'b');
    await sleep(100);
    const closing = now();
    await a.close({ handover: true, graceMs: 300 });
    expect(now() - closing).toBeGreaterThanOrEqual(290);
    const outcome = await within(bRun, 5_000, "the peer's run()");
    expect(outcome).toMatchObject({ state: 'done', result: 'b', role: 'took-over' });
  });
});

describe('concurrency slots', () => {
  it('a paused worker that finds its own grant takes a slot for it', async () => {
    const ns = pair.namespace('slots');
    const proxy = await TcpProxy.start({ targetPort: pair.server.port });
    try {
      const w = pair.worker(ns, 'a', { redis: proxy.url, connectTimeoutMs: 300, concurrency: 1 });
      await w.start();
      let running = 0;
      let most = 0;
      const handler = async () => {
        running += 1;
        most = Math.max(most, running);
        await sleep(100);
        running -= 1;
        return 'ok';
      };
      proxy.setDelay(200); // the claim is applied; its reply comes after the 300 ms bound
      const lost = w.run('lost', handler);
      await until(async () => ((await admin.get(`pairlock:{${ns}}:t:lost`)) ?? '').includes('|R|'));
      w.pause(); // the retry is a dry run, and finds the grant is this worker's
      proxy.setDelay(0);
      await within(lost, 5_000, 'the lost-reply run()');
      w.resume();
      await Promise.all([w.run('x', handler), w.run('y', handler), w.run('z', handler)]);
      expect(most).toBe(1);
    } finally {
      await pair.closeWorkers();
      await proxy.close();
    }
  });
});

describe('a hung handler under long safety-net intervals', () => {
  it('is taken over soon after its deadline, not at the next safety-net check', async () => {
    const ns = pair.namespace('hung');
    // A standby re-checks a held task at the safety-net intervals; these are long enough
    // that the check after the deadline comes about a second late (today's defaults: 30 s).
    const timing = {
      sessionTtlMs: 1_000,
      taskTimeoutMs: 7_100,
      firstAttemptIntervalMs: 1_000,
      otherAttemptIntervalMs: 1_500,
    };
    const a = pair.worker(ns, 'a', timing);
    const b = pair.worker(ns, 'b', timing);
    const aStarted = new Promise<number>((resolve) => {
      void a
        .run('t', () => {
          resolve(now());
          return new Promise(() => {}); // ignores its signal: hung
        })
        .catch(() => {}); // closed at the end
    });
    const startedAt = await aStarted;
    let tookOverAt = 0;
    const outcome: Outcome = await within(
      b.run('t', () => {
        tookOverAt = now();
        return 'b';
      }),
      15_000,
      "the standby's run()",
    );
    expect(outcome).toMatchObject({ state: 'done', role: 'took-over', result: 'b' });
    expect(tookOverAt - startedAt).toBeGreaterThanOrEqual(timing.taskTimeoutMs - 50);
    expect(tookOverAt - startedAt).toBeLessThan(timing.taskTimeoutMs + 600);
    await a.close({ handover: true, graceMs: 10 });
  });
});

describe('fencing tokens never restart while a retry is pending', () => {
  it('refuses a backoff longer than the retention', () => {
    expect(
      () =>
        new PairedWorker({
          redis: pair.url,
          retentionMs: 1_000,
          failure: { backoffMs: 5_000 },
        }),
    ).toThrow(InvalidOptionError);
    expect(
      () =>
        new PairedWorker({
          redis: pair.url,
          retentionMs: 1_000,
          failure: { backoffMs: 5_000 },
        }),
    ).toThrow(/`failure.backoffMs`.*`retentionMs`/);
  });

  it('keeps a failed record until its retry plus the retention', async () => {
    const ns = pair.namespace('keep');
    const w = pair.worker(ns, 'a', { retentionMs: 1_000, failure: { backoffMs: 1_000 } });
    const outcome = w.run('t', () => {
      throw new Error('boom');
    });
    outcome.catch(() => {}); // closed before its retry
    await until(async () => ((await admin.get(`pairlock:{${ns}}:t:t`)) ?? '').includes('|F|'));
    const pttl = await admin.pttl(`pairlock:{${ns}}:t:t`);
    // retry at +1 s, then kept for the retention: about 2 s
    expect(pttl).toBeGreaterThan(1_500);
    await w.close();
    await outcome.catch(() => {});
  });
});
