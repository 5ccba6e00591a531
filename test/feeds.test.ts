import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { nextTick, parseInterval, schedule, tickTaskId } from '../src/feeds/schedule.js';
import { type StreamFeed, streamFeed } from '../src/feeds/stream.js';
import { TaskFailedError, wrap } from '../src/feeds/wrap.js';
import type { HandlerContext } from '../src/index.js';
import { useRedisPair } from './support/redis-pair.js';

const pair = useRedisPair();
const worker = pair.worker;
const ns = () => pair.namespace('feeds');
let redis: Redis;
let feeds: StreamFeed[] = [];

async function until(
  pred: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 30_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function pendingCount(stream: string, group: string): Promise<number> {
  const summary = (await redis.xpending(stream, group)) as [number, ...unknown[]];
  return Number(summary[0]);
}

beforeAll(() => {
  redis = new Redis(pair.url);
});

afterEach(async () => {
  await Promise.allSettled(feeds.map((f) => f.stop({ drain: false })));
  await pair.closeWorkers();
  feeds = [];
});

afterAll(() => {
  redis?.disconnect();
});

describe('streamFeed', () => {
  it('both groups see every entry; each entry runs once; all acknowledged after their outcomes', async () => {
    const namespace = ns();
    const stream = `${namespace}:orders`;
    const runs = new Map<string, number>();
    const handler = (entry: { id: string; fields: Record<string, string> }) => {
      runs.set(entry.id, (runs.get(entry.id) ?? 0) + 1);
      return { order: entry.fields.order };
    };
    const a = worker(namespace, 'site-a');
    const b = worker(namespace, 'site-b');
    const outcomes: { side: string; id: string; role: string; result: unknown }[] = [];
    const fa = streamFeed(a, {
      redis: pair.url,
      stream,
      startId: '0',
      handler,
      onOutcome: (o, e) => outcomes.push({ side: 'a', id: e.id, role: o.role, result: o.result }),
    });
    const fb = streamFeed(b, {
      redis,
      stream,
      startId: '0',
      count: 7,
      handler,
      onOutcome: (o, e) => outcomes.push({ side: 'b', id: e.id, role: o.role, result: o.result }),
    });
    feeds.push(fa, fb);
    expect(fa.group).toBe('pairlock:site-a');
    expect(fb.group).toBe('pairlock:site-b');
    const ids: string[] = [];
    for (let i = 0; i < 30; i++)
      ids.push((await redis.xadd(stream, '*', 'order', `o-${i}`)) as string);

    await until(
      () => fa.stats.acked === 30 && fb.stats.acked === 30,
      'both sides to acknowledge all entries',
    );
    expect([...runs.keys()].sort()).toEqual([...ids].sort());
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    for (const side of ['a', 'b']) {
      const mine = outcomes.filter((o) => o.side === side);
      expect(mine.map((o) => o.id).sort()).toEqual([...ids].sort());
    }
    // every entry ran on exactly one side, and both sides got its result
    for (const [i, id] of ids.entries()) {
      const both = outcomes.filter((o) => o.id === id);
      expect(both.filter((o) => o.role === 'ran')).toHaveLength(1);
      expect(both.map((o) => o.result)).toEqual([{ order: `o-${i}` }, { order: `o-${i}` }]);
    }
    expect(fa.stats.ran + fb.stats.ran).toBe(30);
    expect(await pendingCount(stream, fa.group)).toBe(0);
    expect(await pendingCount(stream, fb.group)).toBe(0);
    await fa.stop();
    await fb.stop();
  });

  it('acknowledges an entry only once its outcome is known', async () => {
    const namespace = ns();
    const stream = `${namespace}:jobs`;
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let started = 0;
    const handler = async () => {
      started += 1;
      await gate;
      return 'ok';
    };
    const a = worker(namespace, 'a');
    const b = worker(namespace, 'b');
    const fa = streamFeed(a, { redis, stream, startId: '0', handler });
    const fb = streamFeed(b, { redis, stream, startId: '0', handler });
    feeds.push(fa, fb);
    await redis.xadd(stream, '*', 'k', 'v');
    await until(
      () => started === 1 && fa.stats.read === 1 && fb.stats.read === 1,
      'the entry to be read by both',
    );
    // the runner is inside its handler and the standby covers it: neither has acknowledged
    expect(await pendingCount(stream, fa.group)).toBe(1);
    expect(await pendingCount(stream, fb.group)).toBe(1);
    release();
    await until(() => fa.stats.acked === 1 && fb.stats.acked === 1, 'both acknowledgements');
    expect(await pendingCount(stream, fa.group)).toBe(0);
    expect(await pendingCount(stream, fb.group)).toBe(0);
    expect(started).toBe(1);
  });

  it('reads the entries left pending by a stopped worker again when it comes back', async () => {
    const namespace = ns();
    const stream = `${namespace}:mail`;
    const ran: string[] = [];
    // first life: the handler hangs; the worker leaves with handover before an outcome
    const first = worker(namespace, 'mailer');
    let entered!: () => void;
    const enteredP = new Promise<void>((r) => {
      entered = r;
    });
    const f1 = streamFeed(first, {
      redis,
      stream,
      startId: '0',
      handler: (_e, { signal }: HandlerContext) => {
        entered();
        return new Promise((_, reject) =>
          signal.addEventListener('abort', () => reject(signal.reason)),
        );
      },
    });
    const id = (await redis.xadd(stream, '*', 'to', 'ann@example.com')) as string;
    await enteredP;
    await f1.stop({ drain: false });
    await first.close({ handover: true });
    expect(await pendingCount(stream, 'pairlock:mailer')).toBe(1);

    // a second entry whose task is already done, and which this consumer was given but
    // never acknowledged (a crash between the outcome and XACK)
    const id2 = (await redis.xadd(stream, '*', 'to', 'bob@example.com')) as string;
    await redis.xreadgroup(
      'GROUP',
      'pairlock:mailer',
      'mailer',
      'COUNT',
      10,
      'STREAMS',
      stream,
      '>',
    );
    const peer = worker(namespace, 'peer');
    await peer.run(`${stream}:${id2}`, () => 'sent by peer');
    expect(await pendingCount(stream, 'pairlock:mailer')).toBe(2);

    // second life, same name: same group and consumer
    const second = worker(namespace, 'mailer');
    const roles = new Map<string, string>();
    const f2 = streamFeed(second, {
      redis,
      stream,
      handler: (e) => {
        ran.push(e.id);
        return 'sent';
      },
      onOutcome: (o, e) => roles.set(e.id, `${o.role}:${String(o.result)}`),
    });
    feeds.push(f2);
    await until(() => f2.stats.acked === 2, 'both pending entries to be acknowledged');
    expect(ran).toEqual([id]);
    expect(roles.get(id)).toBe('took-over:sent');
    expect(roles.get(id2)).toBe('watched:sent by peer');
    expect(await pendingCount(stream, 'pairlock:mailer')).toBe(0);
    const rec = await second.inspect(`${stream}:${id}`);
    expect(rec).toMatchObject({ state: 'done', token: 2, attempt: 2 });
  });

  it('derives task ids from entries and skips entries deleted while pending', async () => {
    const namespace = ns();
    const stream = `${namespace}:ev`;
    const a = worker(namespace, 'a');
    await redis.xgroup('CREATE', stream, 'pairlock:a', '0', 'MKSTREAM');
    const gone = (await redis.xadd(stream, '*', 'key', 'gone')) as string;
    await redis.xreadgroup('GROUP', 'pairlock:a', 'a', 'COUNT', 10, 'STREAMS', stream, '>');
    await redis.xdel(stream, gone);
    await redis.xadd(stream, '*', 'key', 'user-1');
    const seen: string[] = [];
    const f = streamFeed(a, {
      redis,
      stream,
      taskId: (e) => `welcome:${e.fields.key}`,
      handler: (e) => {
        seen.push(e.fields.key as string);
      },
    });
    feeds.push(f);
    await until(() => f.stats.acked === 1, 'the live entry');
    await until(
      async () => (await pendingCount(stream, 'pairlock:a')) === 0,
      'the deleted entry to be dropped',
    );
    expect(seen).toEqual(['user-1']);
    expect(await a.inspect('welcome:user-1')).toMatchObject({ state: 'done' });
  });
});

describe('schedule', () => {
  it('parses intervals and aligns ticks to the wall clock', () => {
    expect(parseInterval('500ms')).toBe(500);
    expect(parseInterval('30s')).toBe(30_000);
    expect(parseInterval('5m')).toBe(300_000);
    expect(parseInterval('1h')).toBe(3_600_000);
    expect(parseInterval(250)).toBe(250);
    expect(() => parseInterval('soon')).toThrow(/every/);
    expect(nextTick(1_000_001, 1_000)).toBe(1_001_000);
    expect(nextTick(1_000_000, 1_000)).toBe(1_001_000);
    expect(nextTick(1_000_001, 1_000, 200)).toBe(1_000_200);
    expect(tickTaskId('report', Date.UTC(2030, 0, 1))).toBe('report:2030-01-01T00:00:00.000Z');
  });

  it('runs every tick exactly once across the pair, and keeps ticking with one side closed', async () => {
    const namespace = ns();
    const every = 500;
    const runs = new Map<string, string[]>();
    const outcomes = new Map<string, Set<string>>();
    const handler = (side: string) => (tick: { taskId: string; at: Date }) => {
      const list = runs.get(tick.taskId) ?? [];
      list.push(side);
      runs.set(tick.taskId, list);
      return tick.at.toISOString();
    };
    const a = worker(namespace, 'cron-a');
    const b = worker(namespace, 'cron-b');
    await Promise.all([a.start(), b.start()]);
    const record = (side: string) => (o: { taskId: string; result?: unknown }) => {
      const s = outcomes.get(o.taskId) ?? new Set();
      s.add(`${side}:${String(o.result)}`);
      outcomes.set(o.taskId, s);
    };
    const sa = schedule(a, { name: 'sweep', every, handler: handler('a'), onOutcome: record('a') });
    const sb = schedule(b, { name: 'sweep', every, handler: handler('b'), onOutcome: record('b') });
    await until(() => runs.size >= 5, 'five ticks');
    await sb.stop();
    await b.close({ handover: true });
    const afterClose = runs.size;
    await until(() => runs.size >= afterClose + 3, 'three more ticks with one side');
    await sa.stop();

    for (const [taskId, sides] of runs) {
      expect(sides, taskId).toHaveLength(1);
      const at = Date.parse(taskId.slice('sweep:'.length));
      expect(at % every).toBe(0);
    }
    const ticks = [...runs.keys()].sort();
    // the last ticks ran on the side still up
    for (const t of ticks.slice(afterClose + 1)) expect(runs.get(t)).toEqual(['a']);
    // while both were up, both learned each tick's outcome: the same result
    for (const t of ticks.slice(1, 4)) {
      const seen = outcomes.get(t);
      expect(seen, t).toEqual(new Set([`a:${t.slice(6)}`, `b:${t.slice(6)}`]));
    }
    expect(sa.nextTickAt).toBeUndefined();
  });

  it('rejects an offset outside the interval', () => {
    const a = worker(ns(), 'x');
    expect(() =>
      schedule(a, { name: 'n', every: '1s', offsetMs: 1_000, handler: () => 1 }),
    ).toThrow(/offsetMs/);
  });
});

describe('wrap', () => {
  it('runs concurrent calls with the same key once, on one side, and gives every caller the result', async () => {
    const namespace = ns();
    const a = worker(namespace, 'a');
    const b = worker(namespace, 'b');
    await Promise.all([a.start(), b.start()]);
    const calls: { orderId: string; token: number }[] = [];
    const charge = async (orderId: string, cents: number, ctx: HandlerContext) => {
      calls.push({ orderId, token: ctx.token });
      await new Promise((r) => setTimeout(r, 50));
      return { receipt: `r-${orderId}`, cents };
    };
    const opts = { key: (orderId: string) => `charge:${orderId}` };
    const chargeA = wrap(a, charge, opts);
    const chargeB = wrap(b, charge, opts);
    const results = await Promise.all([
      chargeA('o-1', 500),
      chargeB('o-1', 500),
      chargeA('o-1', 500),
      chargeB('o-1', 500),
      chargeA('o-2', 700),
      chargeB('o-2', 700),
    ]);
    expect(calls.filter((c) => c.orderId === 'o-1')).toHaveLength(1);
    expect(calls.filter((c) => c.orderId === 'o-2')).toHaveLength(1);
    expect(calls[0]?.token).toBe(1);
    expect(results.slice(0, 4)).toEqual(Array(4).fill({ receipt: 'r-o-1', cents: 500 }));
    expect(results.slice(4)).toEqual([
      { receipt: 'r-o-2', cents: 700 },
      { receipt: 'r-o-2', cents: 700 },
    ]);
    // settled keys are answered from the record while it is retained
    expect(await chargeB('o-1', 500)).toEqual({ receipt: 'r-o-1', cents: 500 });
    expect(calls).toHaveLength(2);
  });

  it('throws TaskFailedError with the error the running side reported', async () => {
    const namespace = ns();
    const a = worker(namespace, 'a', { failure: { policy: 'give-up' } });
    const b = worker(namespace, 'b', { failure: { policy: 'give-up' } });
    const boom = async (id: string) => {
      const err = new Error(`card declined for ${id}`) as Error & { code: string };
      err.code = 'E_DECLINED';
      throw err;
    };
    const fa = wrap(a, boom, { key: (id: string) => `pay:${id}` });
    const fb = wrap(b, boom, { key: (id: string) => `pay:${id}` });
    const errs = await Promise.all([
      fa('x').catch((e: unknown) => e),
      fb('x').catch((e: unknown) => e),
    ]);
    for (const e of errs) {
      expect(e).toBeInstanceOf(TaskFailedError);
      const f = e as TaskFailedError;
      expect(f.code).toBe('ERR_TASK_FAILED');
      expect(f.taskId).toBe('pay:x');
      expect(f.error).toEqual({
        name: 'Error',
        message: 'card declined for x',
        code: 'E_DECLINED',
      });
      expect(f.message).toContain('card declined for x');
    }
  });
});
