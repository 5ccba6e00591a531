/**
 * Shared connection checks (lua/cover.lua's check record, src/worker/cover.ts): several standbys
 * covering one holder check its connection about once per interval in all, not once each;
 * and a crashed holder is still taken over on connection evidence, long before its session
 * TTL.
 */
import { performance } from 'node:perf_hooks';
import { Cluster, Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { PairedWorker } from '../src/index.js';
import { Keys, type TaskLocation } from '../src/redis/keys.js';
import type { HolderState } from '../src/redis/replies.js';
import { RedisStore } from '../src/redis/store.js';
import { RedisServer, startCluster } from '../src/testing/index.js';
import { Cover, type CoveredRun } from '../src/worker/cover.js';
import { type Child, spawnWorker } from './support/child-worker.js';

const now = () => performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CHECK_INTERVAL_MS = 40; // connectionCheckIntervalMs, the default

let server: RedisServer;
const children: Child[] = [];
const workers: PairedWorker[] = [];

beforeAll(async () => {
  server = await RedisServer.start();
});
afterEach(async () => {
  for (const c of children.splice(0)) c.reap();
  await Promise.allSettled(workers.splice(0).map((w) => w.close()));
});
afterAll(async () => {
  await server?.stop();
});

/** Calls of a command so far (INFO commandstats; commands inside scripts included). */
async function calls(admin: Redis, command: string): Promise<number> {
  const line = (await admin.info('commandstats'))
    .split(/\r?\n/)
    .find((l) => l.startsWith(`cmdstat_${command}:`));
  return Number(/calls=(\d+)/.exec(line ?? '')?.[1] ?? 0);
}

it('3 standbys covering one holder: its connection is checked about once per interval in all; SIGKILLed, it is still taken over on connection evidence', async () => {
  const ns = 'shared-checks';
  const a = await spawnWorker(server.url, ns, 'a', { PAIRLOCK_DEFAULTS: '1' });
  children.push(a);
  const ids = Array.from({ length: 5 }, (_, i) => `job-${i}`);
  for (const id of ids) a.run(id, 600_000);
  for (const id of ids) await a.waitFor((m) => m.ev === 'started' && m.taskId === id, id);

  const standbys = ['b', 'c', 'd'].map((name) => {
    const w = new PairedWorker({ redis: server.url, namespace: ns, name });
    workers.push(w);
    return w;
  });
  const started = new Map<string, number>();
  const took: { kind: string; from: string }[] = [];
  for (const w of standbys) w.on('took-over', (e) => took.push(e));
  const outcomes = standbys.flatMap((w) =>
    ids.map((id) =>
      w.run(id, async ({ token }) => {
        if (!started.has(id)) started.set(id, now());
        return token;
      }),
    ),
  );
  for (const o of outcomes) o.catch(() => {});
  await sleep(500); // every standby covers every task

  const admin = new Redis(server.url);
  try {
    // the holder's connection checks: every check reads NUMSUB once (one call for every
    // holder it checks), an answer from the check record reads none
    const n0 = await calls(admin, 'pubsub|numsub');
    const e0 = await calls(admin, 'evalsha');
    const t0 = now();
    await sleep(2_000);
    const n1 = await calls(admin, 'pubsub|numsub');
    const e1 = await calls(admin, 'evalsha');
    const intervals = (now() - t0) / CHECK_INTERVAL_MS;
    const checksPerInterval = (n1 - n0) / intervals;
    const callsPerInterval = (e1 - e0) / intervals;
    console.log(
      `3 standbys, 1 holder: ${checksPerInterval.toFixed(2)} connection checks and ${callsPerInterval.toFixed(2)} script calls per ${CHECK_INTERVAL_MS} ms interval (one check per standby would be 3)`,
    );
    // about one per interval in all (each standby checking would make 3)
    expect(checksPerInterval).toBeGreaterThan(0.5);
    expect(checksPerInterval).toBeLessThan(1.5);
    // the holder runs nothing in the meantime
    expect(started.size).toBe(0);

    const killedAt = now();
    a.proc.kill('SIGKILL');
    const results = await Promise.all(outcomes);
    // each task taken over once, on connection evidence, the others watched it
    for (const id of ids) {
      const rs = results.filter((_, i) => ids[i % ids.length] === id);
      expect(rs.filter((r) => r.role === 'took-over')).toHaveLength(1);
    }
    expect(took).toHaveLength(ids.length);
    expect(took.every((t) => t.kind === 'connection-lost' && t.from === a.id)).toBe(true);
    const ms = ids.map((id) => (started.get(id) as number) - killedAt);
    const max = Math.max(...ms);
    console.log(`SIGKILL, 3 standbys sharing checks: last task started ${max.toFixed(0)} ms after`);
    // the usual bound: a check interval to see it gone, the crash grace (140 ms), a claim;
    // generous for a loaded machine, and far below the session TTL (10 s)
    expect(max).toBeLessThan(1_500);
  } finally {
    admin.disconnect();
  }
});

it('a standby answered from the check record polls the holder every 4th tick at most, one whose call checked at every tick', async () => {
  const run: CoveredRun = {
    loc: { taskId: 'x', ref: 't:x', container: 'x', index: 'x', field: '' } as TaskLocation,
    finished: false,
    claiming: false,
    holder: undefined,
    known: { state: 'R', token: 1 },
  };
  let answer: HolderState = { pttl: -1, seq: 5, lostInMs: -1, shared: true };
  const seen = { cover: 0, peek: 0, shareMs: [] as number[] };
  const cover = new Cover<CoveredRun>({
    store: {
      cover: async (_holder, shareMs) => {
        seen.cover += 1;
        seen.shareMs.push(shareMs ?? 0);
        return answer;
      },
      peek: async (locs) => {
        seen.peek += 1;
        return locs.map(() => ({ state: 'R', token: 1, orphaned: false }));
      },
    },
    firstAttemptIntervalMs: 60_000,
    otherAttemptIntervalMs: 60_000,
    connectionCheckIntervalMs: 20,
    wake: () => {},
    peerFailed: () => {},
  });
  try {
    cover.watch(run, 'h#1', 10_000, 600_000, 5);
    await sleep(1_000); // 50 ticks: 1 + 2 + 4 + 4 + … ≈ 14 calls answered from the record
    const shared = seen.cover;
    expect(shared).toBeGreaterThanOrEqual(8);
    expect(shared).toBeLessThanOrEqual(18);
    expect(seen.peek).toBe(0);
    expect(seen.shareMs.every((ms) => ms === 15)).toBe(true);
    // the standby's own checks: every tick
    answer = { pttl: 10_000, seq: 5, lostInMs: -1 };
    await sleep(1_000);
    expect(seen.cover - shared).toBeGreaterThanOrEqual(35);
    expect(seen.peek).toBe(0);
  } finally {
    cover.clear();
  }
});

it('cover.lua: a check shared for the window (one NUMSUB for every holder), never for a holder seen gone; the lost age counts checks only', async () => {
  const redis = new Redis(server.url);
  const conns: Redis[] = [];
  try {
    const keys = new Keys('pairlock', 'shared-contract');
    const store = new RedisStore(redis, keys, 5_000);
    const bound = async (name: string) => {
      const id = `${name}:1#1`;
      expect((await store.session('open', id, 10_000)).ok).toBe(true);
      const conn = new Redis(server.url);
      conns.push(conn);
      await conn.subscribe(`${keys.livePrefix}${id}`);
      expect(await store.bind('bind', id, 1, 200)).toMatchObject({ ok: true });
      return { id, conn };
    };
    const [a, b] = [await bound('a'), await bound('b')];
    const numsub = () => calls(redis, 'pubsub|numsub');
    const n0 = await numsub();
    const exists0 = await calls(redis, 'exists');
    // a first call checks both: one EXISTS for both sessions (their time left is not read:
    // -1), one NUMSUB for both channels; a second within the window shares it
    const [x, y] = await Promise.all([store.cover(a.id, 500), store.cover(b.id, 500)]);
    expect(x).toEqual({ pttl: -1, seq: 0, lostInMs: -1 });
    expect(y).toEqual({ pttl: -1, seq: 0, lostInMs: -1 });
    expect((await numsub()) - n0).toBe(1);
    expect((await calls(redis, 'exists')) - exists0).toBe(1);
    expect(await store.cover(a.id, 500)).toEqual({ pttl: -1, seq: 0, lostInMs: -1, shared: true });
    expect((await numsub()) - n0).toBe(1);
    // without a window: checked, its time left read
    const own = await store.cover(a.id);
    expect(own.shared).toBeUndefined();
    expect(own.pttl).toBeGreaterThan(9_000);
    expect((await numsub()) - n0).toBe(2);
    // the record lives the window, by the server's expiry
    expect(await redis.pttl(keys.checks)).toBeGreaterThan(0);
    expect(await redis.pttl(keys.checks)).toBeLessThanOrEqual(500);
    // one holder checked alone: its time left is read; shared, it is that less the window
    await redis.del(keys.checks);
    const alone = await store.cover(a.id, 500);
    expect(alone.pttl).toBeGreaterThan(9_000);
    const later = await store.cover(a.id, 500);
    expect(later.shared).toBe(true);
    expect(later.pttl).toBeLessThanOrEqual(alone.pttl - 500);
    expect((await numsub()) - n0).toBe(3);

    // a's connection closes: the shared record still answers until it expires (no
    // sighting, no lost age from it) ...
    a.conn.disconnect();
    await sleep(20);
    expect(await store.cover(a.id, 500)).toMatchObject({ lostInMs: -1, shared: true });
    expect((await redis.get(keys.bind(a.id)))?.endsWith('|0|0')).toBe(true);
    // ... then a check sees it gone, and from then on every call checks it (no sharing)
    await redis.del(keys.checks);
    const seen = await store.cover(a.id, 500);
    expect(seen.shared).toBeUndefined();
    expect(seen.lostInMs).toBeGreaterThan(0);
    expect(seen.lostInMs).toBeLessThanOrEqual(200);
    await sleep(30);
    const again = await store.cover(a.id, 500);
    expect(again.shared).toBeUndefined();
    expect(again.lostInMs).toBeLessThan(seen.lostInMs);
    // b: its connection stands
    expect(await store.cover(b.id, 500)).toMatchObject({ lostInMs: -1 });
  } finally {
    for (const c of conns) c.disconnect();
    redis.disconnect();
  }
});

it('a Redis Cluster (sharded pub/sub): two standbys covering two holders share one check of both (one SHARDNUMSUB for both channels); a SIGKILLed holder is taken over on connection evidence, the other is not', async () => {
  const topo = await startCluster({ masters: 3 });
  const clients: Cluster[] = [];
  const admins = topo.masters.map((m) => new Redis(m.url));
  try {
    const ns = 'shared-cluster';
    const nodes = topo.startupNodes.map((x) => `${x.host}:${x.port}`).join(',');
    const a = await spawnWorker('', ns, 'a', { PAIRLOCK_CLUSTER: nodes, PAIRLOCK_DEFAULTS: '1' });
    children.push(a);
    a.run('t', 600_000);
    await a.waitFor((m) => m.ev === 'started', 'a started');
    const cluster = () => {
      const c = new Cluster([topo.startupNodes[0] as { host: string; port: number }]);
      c.on('error', () => {});
      clients.push(c);
      return c;
    };
    const h = new PairedWorker({ redis: cluster(), namespace: ns, name: 'h' });
    workers.push(h);
    let releaseH: () => void = () => {};
    const runH = h.run('u', () => new Promise<string>((r) => (releaseH = () => r('h'))));
    await sleep(200);
    const standbys = ['b', 'c'].map((name) => {
      const w = new PairedWorker({ redis: cluster(), namespace: ns, name });
      workers.push(w);
      return w;
    });
    const took: { kind: string; from: string }[] = [];
    for (const w of standbys) w.on('took-over', (e) => took.push(e));
    let startedAt = 0;
    const onT = standbys.map((w) =>
      w.run('t', async () => {
        startedAt ||= now();
        return w.id;
      }),
    );
    const onU = standbys.map((w) => w.run('u', async () => 'not h'));
    for (const o of [...onT, ...onU]) o.catch(() => {});
    await sleep(400);
    const shardNumsub = async () => {
      let sum = 0;
      for (const m of admins) sum += await calls(m, 'pubsub|shardnumsub');
      return sum;
    };
    const n0 = await shardNumsub();
    const t0 = now();
    await sleep(1_000);
    const perInterval = ((await shardNumsub()) - n0) / ((now() - t0) / CHECK_INTERVAL_MS);
    console.log(`Cluster, 2 standbys, 2 holders: ${perInterval.toFixed(2)} checks per interval`);
    expect(perInterval).toBeGreaterThan(0.5);
    expect(perInterval).toBeLessThan(1.5);

    const killedAt = now();
    a.proc.kill('SIGKILL');
    const results = await Promise.all(onT);
    expect(results.filter((r) => r.role === 'took-over')).toHaveLength(1);
    expect(took).toEqual([expect.objectContaining({ kind: 'connection-lost', from: a.id })]);
    console.log(`Cluster, SIGKILL: standby started after ${(startedAt - killedAt).toFixed(0)} ms`);
    expect(startedAt - killedAt).toBeLessThan(1_500);
    // h, alive, still holds its task
    await sleep(300);
    expect(took).toHaveLength(1);
    releaseH();
    expect(await runH).toMatchObject({ role: 'ran', result: 'h' });
    expect(await Promise.all(onU)).toMatchObject([
      { role: 'watched', result: 'h' },
      { role: 'watched', result: 'h' },
    ]);
  } finally {
    await Promise.allSettled(workers.splice(0).map((w) => w.close()));
    for (const c of clients) c.disconnect();
    for (const m of admins) m.disconnect();
    await topo.close();
  }
});
