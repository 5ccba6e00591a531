/**
 * The worker's parts, each alone, without Redis: the coalescing of transitions, the
 * deadline queue, the covering of peers, the session lease and the concurrency slots
 * (against stores made of plain functions).
 */
import { describe, expect, it, vi } from 'vitest';
import { decodeEvent, formatEvent } from '../src/cli/watch.js';
import { Batcher } from '../src/redis/batcher.js';
import type { TaskLocation } from '../src/redis/keys.js';
import type { HolderState, PeekEntry } from '../src/redis/replies.js';
import { InvalidOptionError, RedisUnavailableError } from '../src/shared/errors.js';
import { resolveOptions } from '../src/shared/options.js';
import { Cover, type CoveredRun } from '../src/worker/cover.js';
import { DeadlineQueue } from '../src/worker/deadlines.js';
import { InFlight } from '../src/worker/latch.js';
import { Session } from '../src/worker/session.js';
import { Slots } from '../src/worker/slots.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Batcher', () => {
  it('joins the calls of one turn (promise continuations included) into one batch per key', async () => {
    const calls: [string, number[]][] = [];
    const b = new Batcher<string, number, number>(async (g, items) => {
      calls.push([g, [...items]]);
      return items.map((i) => i * 10);
    });
    const p1 = b.load('x', 'x', 1);
    const p2 = Promise.resolve().then(() => b.load('x', 'x', 2));
    const p3 = b.load('y', 'y', 3);
    expect(await Promise.all([p1, p2, p3])).toEqual([10, 20, 30]);
    expect(calls).toEqual([
      ['x', [1, 2]],
      ['y', [3]],
    ]);
    // a later turn is a new batch
    expect(await b.load('x', 'x', 4)).toBe(40);
    expect(calls).toHaveLength(3);
  });

  it('splits at the maximum size, fails one item on an Error, every item on a rejection', async () => {
    const sizes: number[] = [];
    const b = new Batcher<null, number, number>(async (_g, items) => {
      sizes.push(items.length);
      if (items.includes(-1)) throw new Error('batch down');
      return items.map((i) => (i === 13 ? new Error('bad item') : i));
    }, 2);
    const r = await Promise.allSettled([1, 13, 3, 4, 5].map((i) => b.load('', null, i)));
    expect(sizes).toEqual([2, 2, 1]);
    expect(r.map((x) => x.status)).toEqual([
      'fulfilled',
      'rejected',
      'fulfilled',
      'fulfilled',
      'fulfilled',
    ]);
    const down = await Promise.allSettled([b.load('', null, -1), b.load('', null, 7)]);
    expect(down.map((x) => x.status)).toEqual(['rejected', 'rejected']);
  });
});

describe('DeadlineQueue', () => {
  it('fires items in due order through one timer; moved and deleted items follow', async () => {
    const fired: string[] = [];
    const t0 = performance.now();
    const q = new DeadlineQueue<string>(
      (x) => fired.push(x),
      () => performance.now(),
    );
    q.set('c', t0 + 60);
    q.set('a', t0 + 20);
    q.set('b', t0 + 40);
    q.set('d', t0 + 30);
    q.set('d', t0 + 80); // moved later
    q.delete('b');
    expect(q.size).toBe(3);
    await vi.waitFor(() => expect(fired).toHaveLength(3), { timeout: 5_000, interval: 10 });
    expect(fired).toEqual(['a', 'c', 'd']);
    expect(q.size).toBe(0);
  });
});

describe('DeadlineQueue timer', () => {
  it('keeps one timer while the items ending first are the earliest (no re-arm per item), and still fires a later head', async () => {
    const fired: string[] = [];
    const t0 = performance.now();
    const q = new DeadlineQueue<string>(
      (x) => fired.push(x),
      () => performance.now(),
    );
    const spy = vi.spyOn(globalThis, 'setTimeout');
    try {
      for (let i = 0; i < 50; i++) q.set(`t${i}`, t0 + 1_000 + i);
      // tasks end in the order they started: the head moves later each time
      for (let i = 0; i < 49; i++) q.delete(`t${i}`);
      expect(spy).toHaveBeenCalledTimes(1);
      q.set('soon', t0 + 30); // earlier than the timer: armed again, earlier
      expect(spy).toHaveBeenCalledTimes(2);
      q.delete('soon');
      // the timer set for 'soon' fires early for t49, finds nothing due, and arms for it
      q.set('t49', performance.now() + 60);
      // waited for, not slept on: a loaded machine may fire the early timer late
      await vi.waitFor(() => expect(fired).toEqual(['t49']), { timeout: 5_000, interval: 10 });
    } finally {
      spy.mockRestore();
      q.clear();
    }
  });
});

describe('InFlight', () => {
  it('idle() resolves when the count is back to 0, whatever order the work ends in', async () => {
    const f = new InFlight();
    await f.idle(); // nothing in flight: at once
    let endA!: () => void;
    let failB!: (e: Error) => void;
    const a = f.track(new Promise<string>((r) => (endA = () => r('a'))));
    const b = f.track(new Promise<string>((_, j) => (failB = j)));
    expect(f.size).toBe(2);
    let idle = false;
    void f.idle().then(() => {
      idle = true;
    });
    failB(new Error('b'));
    await expect(b).rejects.toThrow('b');
    expect(idle).toBe(false);
    endA();
    expect(await a).toBe('a');
    await sleep(0);
    expect(idle).toBe(true);
    expect(f.size).toBe(0);
  });
});

describe('Cover', () => {
  interface Run extends CoveredRun {
    woken: number;
  }
  const run = (id: string): Run => ({
    loc: { taskId: id, ref: `t:${id}`, container: id, index: id, field: '' } as TaskLocation,
    finished: false,
    claiming: false,
    holder: undefined,
    known: { state: 'R', token: 1 },
    woken: 0,
  });
  function setup(state: HolderState, entries: (loc: TaskLocation) => PeekEntry) {
    const calls = { cover: 0, peek: 0, failed: [] as string[] };
    const cover = new Cover<Run>({
      store: {
        cover: async () => {
          calls.cover += 1;
          return state;
        },
        peek: async (locs) => {
          calls.peek += 1;
          return locs.map(entries);
        },
      },
      firstAttemptIntervalMs: 30,
      otherAttemptIntervalMs: 30,
      connectionCheckIntervalMs: 0,
      wake: (r) => {
        r.woken += 1;
      },
      peerFailed: (h) => calls.failed.push(h),
    });
    return { cover, calls, state };
  }
  const unchanged = (): PeekEntry => ({ state: 'R', token: 1, orphaned: false });

  it('a healthy holder whose events arrive costs one cover call per check and no peek', async () => {
    const { cover, calls } = setup({ pttl: 10_000, seq: 4, lostInMs: -1 }, unchanged);
    const runs = Array.from({ length: 100 }, (_, i) => run(`t${i}`));
    for (const r of runs) cover.watch(r, 'h#1', 10_000, 60_000, 4);
    expect(cover.holders).toBe(1);
    await sleep(100);
    expect(calls.cover).toBeGreaterThanOrEqual(2);
    expect(calls.peek).toBe(0);
    expect(runs.every((r) => r.woken === 0)).toBe(true);
    cover.clear();
  });

  it('a sequence past the last event seen re-reads the group, and wakes only what changed', async () => {
    const { cover, calls } = setup({ pttl: 10_000, seq: 5, lostInMs: -1 }, (loc) =>
      loc.taskId === 't1' ? { state: 'D', token: 1, orphaned: false } : unchanged(),
    );
    const [r0, r1] = [run('t0'), run('t1')];
    cover.watch(r0, 'h#1', 10_000, 60_000, 4);
    cover.watch(r1, 'h#1', 10_000, 60_000, 4);
    await sleep(50);
    expect(calls.peek).toBe(1);
    expect([r0.woken, r1.woken]).toEqual([0, 1]);
    // seen is now 5: the next check reads nothing
    await sleep(40);
    expect(calls.peek).toBe(1);
    cover.clear();
  });

  it('an event that arrives keeps the sequence; a gap checks at once', async () => {
    const { cover, calls } = setup({ pttl: 10_000, seq: 7, lostInMs: -1 }, unchanged);
    const r = run('t');
    cover.watch(r, 'h#1', 10_000, 60_000, 5);
    cover.onEvent({ e: 'settled', r: 't:x', s: 'D', k: 1, a: 1, o: 'h#1', q: 6 });
    expect(calls.cover).toBe(0);
    cover.onEvent({ e: 'settled', r: 't:y', s: 'D', k: 1, a: 1, o: 'h#1', q: 8 }); // 7 missed
    await sleep(10);
    expect(calls.cover).toBe(1);
    expect(calls.peek).toBe(1);
    cover.clear();
  });

  it('a holder whose session is gone: every covered task is woken', async () => {
    const { cover, calls } = setup({ pttl: 0, seq: 0, lostInMs: -1 }, unchanged);
    const runs = [run('a'), run('b')];
    for (const r of runs) cover.watch(r, 'h#1', 5, 60_000, 0);
    await sleep(30);
    expect(calls.failed).toEqual(['h#1']);
    expect(runs.map((r) => r.woken)).toEqual([1, 1]);
    expect(cover.holders).toBe(0);
  });

  it('a cover call that fails wakes the covered tasks, whose own retries take over', async () => {
    const woken: string[] = [];
    const cover = new Cover<Run>({
      store: {
        cover: async () => {
          throw new Error('Redis away');
        },
        peek: async () => [],
      },
      firstAttemptIntervalMs: 10,
      otherAttemptIntervalMs: 10,
      connectionCheckIntervalMs: 0,
      wake: (r) => woken.push(r.loc.taskId),
      peerFailed: () => {},
    });
    for (const id of ['a', 'b']) cover.watch(run(id), 'h#1', 10_000, 60_000, 0);
    await sleep(30);
    expect(woken).toEqual(['a', 'b']);
    expect(cover.holders).toBe(0);
    cover.clear();
  });

  it("a task's deadline wakes it, whatever the holder", async () => {
    const { cover } = setup({ pttl: 10_000, seq: 0, lostInMs: -1 }, unchanged);
    const r = run('t');
    cover.watch(r, 'h#1', 10_000, 15, 0);
    await sleep(40);
    expect(r.woken).toBe(1);
    cover.uncover(r);
    expect(cover.holders).toBe(0);
    cover.clear();
  });

  it('connection checks: one call per interval for every holder; a connection seen gone wakes the tasks when a claim may act on it', async () => {
    const states = new Map<string, HolderState>([
      ['h#1', { pttl: 10_000, seq: 0, lostInMs: -1 }],
      ['h#2', { pttl: 10_000, seq: 0, lostInMs: -1 }],
    ]);
    let calls = 0;
    let batches = 0;
    let goneAt = 0;
    let pendingTurn = false;
    const failed: string[] = [];
    const cover = new Cover<Run>({
      store: {
        cover: async (holder) => {
          calls += 1;
          // calls made in one turn count as one batch (the store coalesces them)
          if (!pendingTurn) {
            pendingTurn = true;
            batches += 1;
            queueMicrotask(() => {
              pendingTurn = false;
            });
          }
          const st = states.get(holder) as HolderState;
          // as the server answers: the time left shrinks from the first sighting
          if (holder === 'h#1' && goneAt > 0)
            return { ...st, lostInMs: Math.max(0, 60 - Math.round(performance.now() - goneAt)) };
          return st;
        },
        peek: async () => [],
      },
      firstAttemptIntervalMs: 10_000,
      otherAttemptIntervalMs: 10_000,
      connectionCheckIntervalMs: 20,
      wake: (r) => {
        r.woken += 1;
      },
      peerFailed: (h) => failed.push(h),
    });
    const [r1, r2] = [run('a'), run('b')];
    cover.watch(r1, 'h#1', 10_000, 60_000, 0);
    cover.watch(r2, 'h#2', 10_000, 60_000, 0);
    await sleep(110);
    expect(batches).toBeGreaterThanOrEqual(3);
    expect(batches).toBeLessThanOrEqual(6);
    expect(calls).toBe(2 * batches);
    expect([r1.woken, r2.woken]).toEqual([0, 0]);
    // h#1's connection is seen gone: its task is claimed once the grace has passed
    goneAt = performance.now();
    const seenAt = goneAt;
    while (r1.woken === 0 && performance.now() - seenAt < 1_000) await sleep(2);
    expect(r1.woken).toBe(1);
    expect(performance.now() - seenAt).toBeGreaterThanOrEqual(55);
    expect(failed).toEqual(['h#1']);
    expect(r2.woken).toBe(0);
    expect(cover.holders).toBe(1);
    cover.clear();
  });
});

describe('Cover: holders not bound to a connection', () => {
  it('are checked at every 25th connection interval only', async () => {
    let calls = 0;
    const cover = new Cover<CoveredRun & { woken: number }>({
      store: {
        cover: async () => {
          calls += 1;
          return { pttl: 10_000, seq: 0, lostInMs: -2 };
        },
        peek: async () => [],
      },
      firstAttemptIntervalMs: 10_000,
      otherAttemptIntervalMs: 10_000,
      connectionCheckIntervalMs: 20,
      wake: () => {},
      peerFailed: () => {},
    });
    const r = {
      loc: { taskId: 't', ref: 't:t', container: 't', index: 't', field: '' },
      finished: false,
      claiming: false,
      holder: undefined,
      known: { state: 'R', token: 1 },
      woken: 0,
    };
    cover.watch(r, 'h#1', 10_000, 60_000, 0);
    await sleep(150);
    expect(calls).toBe(1);
    await sleep(550); // 25 ticks of 20 ms after the first (the 50th comes later)
    expect(calls).toBe(2);
    cover.clear();
  });
});

describe('pairlock watch', () => {
  it('shows a takeover on connection evidence with its kind', () => {
    const w = decodeEvent(
      { e: 'claimed', r: 't:job', s: 'R', k: 2, a: 2, o: 'b:1#1', kind: 5, from: 'a:2#1' },
      0,
    );
    expect(w).toMatchObject({ event: 'took-over', kind: 'connection-lost', from: 'a:2' });
    expect(formatEvent(w)).toContain('from a:2 (connection-lost)');
  });

  it("shows a worker taking its own task back as 'reclaimed', not as a takeover", () => {
    const w = decodeEvent(
      { e: 'claimed', r: 't:job', s: 'R', k: 3, a: 1, o: 'a:2#1', kind: 6, from: 'a:2#1' },
      0,
    );
    expect(w).toMatchObject({ event: 'reclaimed', kind: 'reclaimed', worker: 'a:2' });
    expect(formatEvent(w)).toMatch(/reclaimed\s+job\s+token 3\s+attempt 1/);
    expect(formatEvent(w)).not.toContain('took-over');
  });
});

describe('options of connection-bound sessions', () => {
  const base = { redis: 'redis://127.0.0.1:1' };
  it('defaults: on, crashGraceMs 140, doubtMs 1000, a check every 40 ms; off where the session TTL is as short', () => {
    expect(resolveOptions(base)).toMatchObject({
      connectionBound: true,
      crashGraceMs: 140,
      doubtMs: 1_000,
      connectionCheckIntervalMs: 40,
    });
    // at most half the session TTL, by default too
    expect(resolveOptions({ ...base, sessionTtlMs: 1_501 }).doubtMs).toBe(750);
    expect(resolveOptions({ ...base, doubtMs: 0 }).doubtMs).toBe(0);
    expect(resolveOptions({ ...base, sessionTtlMs: 140 }).connectionBound).toBe(false);
    expect(resolveOptions({ ...base, connectionBound: false }).connectionBound).toBe(false);
  });

  it('bad values are refused with the option named', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ connectionBound: 'yes' }, /`connectionBound` to be a boolean/],
      [{ crashGraceMs: 50 }, /`crashGraceMs`/],
      [{ connectionCheckIntervalMs: 5 }, /`connectionCheckIntervalMs`/],
      [{ doubtMs: -1 }, /`doubtMs` to be an integer from 0 to 5000/],
      [{ doubtMs: 6_000 }, /`doubtMs` to be an integer from 0 to 5000/],
      [{ doubtMs: 1.5 }, /`doubtMs`/],
      [{ crashGraceMs: 200, connectionCheckIntervalMs: 300 }, /`connectionCheckIntervalMs`/],
      [
        { connectionBound: true, sessionTtlMs: 100, heartbeatIntervalMs: 30 },
        /`crashGraceMs` \(140\) to be below `sessionTtlMs` \(100\)/,
      ],
    ];
    for (const [opts, message] of bad) {
      expect(() => resolveOptions({ ...base, ...opts } as never)).toThrow(InvalidOptionError);
      expect(() => resolveOptions({ ...base, ...opts } as never)).toThrow(message);
    }
  });
});

describe('Session', () => {
  function setup(answers: ('ok' | 'expired' | 'away')[]) {
    const log: string[] = [];
    let i = 0;
    const session = new Session({
      workerId: 'w:1',
      store: {
        session: async (op, id) => {
          log.push(`${op} ${id}`);
          if (op === 'open') return { ok: true, serverNow: 0, pttl: 100 };
          const a = answers[Math.min(i++, answers.length - 1)];
          if (a === 'ok') return { ok: true, serverNow: 0, pttl: 100 };
          if (a === 'expired') return { ok: false, reason: 'session-expired' };
          throw new RedisUnavailableError('away');
        },
      },
      sessionTtlMs: 100,
      heartbeatIntervalMs: 20,
      logger: { debug() {}, info() {}, warn() {}, error() {} },
      onLapse: (id) => log.push(`lapse ${id}`),
      onReopened: () => log.push('reopened'),
      renewFailed: (id, _e, lost) => log.push(`renew-failed ${id} ${lost}`),
      fault: (e) => log.push(`fault ${e.message}`),
    });
    return { session, log };
  }

  it('renews by heartbeat and believes its lease until ttl − drift after the last renewal sent', async () => {
    const { session, log } = setup(['ok']);
    await session.open();
    expect(session.id).toBe('w:1#1');
    session.start();
    await sleep(70);
    expect(log.filter((l) => l.startsWith('renew')).length).toBeGreaterThanOrEqual(2);
    expect(session.valid).toBe(true);
    await session.stop();
  });

  it('lapses when renewals fail (Redis away), and opens a new epoch when the server let it expire', async () => {
    const away = setup(['away']);
    await away.session.open();
    away.session.start();
    await sleep(150);
    expect(away.log).toContain('lapse w:1#1');
    expect(away.log).toContain('renew-failed w:1#1 false');
    expect(away.session.valid).toBe(false);
    await away.session.stop();

    const expired = setup(['expired', 'ok']);
    await expired.session.open();
    expired.session.start();
    await sleep(60);
    expect(expired.log).toContain('renew-failed w:1#1 true');
    expect(expired.log).toContain('open w:1#2');
    expect(expired.log).toContain('reopened');
    expect(expired.session.id).toBe('w:1#2');
    await expired.session.stop();
  });
});

describe('Slots', () => {
  it('never lets more than the limit run, and hands a freed slot to the first waiter', async () => {
    const slots = new Slots(2);
    const order: number[] = [];
    await slots.acquire();
    await slots.acquire();
    const third = slots.acquire().then(() => order.push(3));
    const fourth = slots.acquire().then(() => order.push(4));
    await sleep(5);
    expect(order).toEqual([]);
    slots.release();
    await third;
    expect(order).toEqual([3]);
    slots.release();
    await fourth;
    expect(order).toEqual([3, 4]);
  });
});
