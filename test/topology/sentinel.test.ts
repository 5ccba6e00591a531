/**
 * Sentinel: a master, replicas and three sentinels, all real processes. The master is
 * killed while a pair holds tasks; after the failover the work goes on and every task
 * reaches an outcome. Redis replication is asynchronous, so a failover can lose writes the
 * workers were already told about; `replication` (WAIT) makes a write count only once a
 * replica has it. The test counts what a failover lost, with and without WAIT.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { type Outcome, PairedWorker, type PairedWorkerOptions } from '../../src/index.js';
import { Keys } from '../../src/redis/keys.js';
import { type ClaimArgs, RedisStore, ReplicationError } from '../../src/redis/store.js';
import { RedisUnavailableError } from '../../src/shared/errors.js';
import { startReplicated } from '../../src/testing/index.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {});
});

describe('replication safety (WAIT)', () => {
  it('a grant, settle, renewal or outcome no replica acknowledged is not counted (reject), or is (accept)', async () => {
    const topo = await startReplicated({ replicas: 1, sentinels: 0 });
    cleanup.push(() => topo.close());
    const keys = new Keys('pairlock', 'wait');
    const store = (onTimeout: 'reject' | 'accept') => {
      const s = new RedisStore(topo.master.url, keys, 2_000, {
        // long enough for a loaded machine; a stalled replica makes each call wait this long
        replication: { waitReplicas: 1, waitTimeoutMs: 1_000, onTimeout },
      });
      cleanup.push(() => s.close());
      return s;
    };
    const reject = store('reject');
    const accept = store('accept');
    await reject.connect();
    await accept.connect();
    const session = 'w:1#1';
    const peer = 'w:2#1';
    expect(await reject.session('open', session, 30_000)).toMatchObject({ ok: true });
    expect(await reject.session('open', peer, 30_000)).toMatchObject({ ok: true });
    const args: ClaimArgs = {
      session,
      sessionTtlMs: 30_000,
      taskTimeoutMs: 30_000,
      retentionMs: 60_000,
      maxAttempts: 3,
      dryRun: false,
    };
    const t1 = keys.task('t1');
    expect(await reject.claim(t1, args)).toMatchObject({ type: 'granted', token: 1 });

    topo.replicas[0]!.pause();
    try {
      const t2 = keys.task('t2');
      const err = await reject.claim(t2, args).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ReplicationError);
      expect(err).toBeInstanceOf(RedisUnavailableError); // the worker retries it as such
      expect((err as ReplicationError).acked).toBe(0);
      // given back at once: whoever claims next gets it
      expect(await reject.inspect(t2)).toMatchObject({ found: true, state: 'released', token: 1 });
      const settle = {
        session,
        token: 1,
        state: 'D' as const,
        payload: '1',
        retentionMs: 60_000,
        backoffMs: 0,
      };
      await expect(reject.settle(t1, settle)).rejects.toBeInstanceOf(ReplicationError);
      // the peer reads that outcome from the master, but no replica has it: not reported
      // (a failover now would lose it), the peer asks again later
      await expect(reject.claim(t1, { ...args, session: peer })).rejects.toBeInstanceOf(
        ReplicationError,
      );
      expect(await accept.claim(t1, { ...args, session: peer })).toMatchObject({ type: 'done' });
      await expect(reject.session('renew', session, 30_000)).rejects.toBeInstanceOf(
        ReplicationError,
      );
      expect(await accept.claim(keys.task('t3'), args)).toMatchObject({
        type: 'granted',
        token: 1,
      });
      topo.replicas[0]!.resume();
      // the retried settle finds its own outcome and now counts; so does the peer's read
      expect(await reject.settle(t1, settle)).toMatchObject({ ok: true, token: 1 });
      expect(await reject.claim(t1, { ...args, session: peer })).toMatchObject({
        type: 'done',
        token: 1,
      });
    } finally {
      topo.replicas[0]!.resume();
    }
  });
});

interface Tally {
  tasks: number;
  /** Grants whose (task, token) was granted again later: the first grant was lost. */
  lostGrants: number;
  /**
   * Tasks whose reported settle the new master does not have (its record is not the done
   * record both workers were told about), or that were granted again after it.
   */
  lostSettles: number;
  /** Tasks whose handler ran more than once. */
  ranTwice: number;
  outcomes: [Outcome, Outcome][];
}

/**
 * A pair works through a stream of tasks; meanwhile replication breaks for 300 ms (what the
 * master writes then reaches no replica), the master is killed (SIGKILL) and the sentinels
 * fail over to a replica.
 */
async function failover(replication: PairedWorkerOptions['replication']): Promise<Tally> {
  const topo = await startReplicated({ replicas: 2, sentinels: 3 });
  cleanup.push(() => topo.close());
  const redis: RedisOptions = { sentinels: topo.sentinelAddrs, name: topo.masterName };
  const opts = (name: string): PairedWorkerOptions => ({
    redis,
    name,
    namespace: 'failover',
    // leases longer than the outage: a re-run can then only come from a lost write
    sessionTtlMs: 15_000,
    taskTimeoutMs: 10_000,
    firstAttemptIntervalMs: 500,
    otherAttemptIntervalMs: 1_000,
    connectTimeoutMs: 1_000,
    unavailableTimeoutMs: 60_000,
    failure: { backoffMs: 50 },
    ...(replication ? { replication } : {}),
  });
  const a = new PairedWorker(opts('a'));
  const b = new PairedWorker(opts('b'));
  cleanup.push(
    () => a.close(),
    () => b.close(),
  );
  let seq = 0;
  const grants: { task: string; token: number; seq: number }[] = [];
  const settles: { task: string; token: number; seq: number }[] = [];
  for (const w of [a, b]) {
    w.on('claimed', (e) => grants.push({ task: e.taskId, token: e.token, seq: ++seq }));
    w.on('took-over', (e) => grants.push({ task: e.taskId, token: e.token, seq: ++seq }));
    w.on('settled', (e) => {
      if (e.state === 'done') settles.push({ task: e.taskId, token: e.token, seq: ++seq });
    });
  }
  const runs = new Map<string, number>();
  const handler = async ({ taskId, token }: { taskId: string; token: number }) => {
    runs.set(taskId, (runs.get(taskId) ?? 0) + 1);
    await sleep(100 + (token % 3) * 100);
    return `${taskId}:${token}`;
  };
  const ids = Array.from({ length: 80 }, (_, i) => `t${i}`);
  let started = 0;
  const all = Promise.all(
    ids.map(async (id, i) => {
      await sleep(i * 25);
      started += 1;
      return Promise.all([a.run(id, handler), b.run(id, handler)]) as Promise<[Outcome, Outcome]>;
    }),
  );
  while (started < 30) await sleep(10);
  // Replication breaks: the replicas stall and the master drops their links, so what it
  // writes from now on exists on the master only. It goes on alone for 300 ms, then dies.
  for (const r of topo.replicas) r.pause();
  const admin = new Redis(topo.master.url);
  await admin.call('CLIENT', 'KILL', 'TYPE', 'replica');
  admin.disconnect();
  await sleep(300);
  await topo.master.kill();
  for (const r of topo.replicas) r.resume();
  await topo.waitForFailover(30_000);
  const outcomes = await all;

  const byToken = new Map<string, number>();
  for (const g of grants)
    byToken.set(`${g.task}:${g.token}`, (byToken.get(`${g.task}:${g.token}`) ?? 0) + 1);
  const lostGrants = [...byToken.values()].reduce((n, c) => n + c - 1, 0);
  const regranted = new Set(
    settles
      .filter((x) => grants.some((g) => g.task === x.task && g.seq > x.seq))
      .map((x) => x.task),
  );
  const records = await Promise.all(ids.map((id) => a.inspect(id)));
  const missing = ids.filter((_id, i) => {
    const [x] = outcomes[i]!;
    const rec = records[i];
    return x.state === 'done' && (rec?.state !== 'done' || rec.token < x.token);
  });
  const lostSettles = new Set([...regranted, ...missing]).size;
  const ranTwice = [...runs.values()].filter((c) => c > 1).length;
  return { tasks: ids.length, lostGrants, lostSettles, ranTwice, outcomes };
}

describe('Sentinel failover under load', () => {
  const report: string[] = [];

  it('without WAIT: work continues after the failover and every task reaches an outcome', async () => {
    const t = await failover(undefined);
    for (const [x, y] of t.outcomes) {
      expect(['done', 'failed']).toContain(x.state);
      expect(['done', 'failed']).toContain(y.state);
    }
    report.push(
      `without WAIT: ${t.tasks} tasks; lost grants ${t.lostGrants}, lost settles ${t.lostSettles}, tasks run twice ${t.ranTwice}`,
    );
  });

  it('with WAIT 1 replica (reject): nothing acknowledged is lost; both sides agree on every task', async () => {
    const t = await failover({ waitReplicas: 1, waitTimeoutMs: 100, onTimeout: 'reject' });
    for (const [x, y] of t.outcomes) {
      expect(x.state).toBe('done');
      expect(y).toMatchObject({
        state: 'done',
        token: x.token,
        result: x.result,
        worker: x.worker,
      });
    }
    expect(t.lostGrants).toBe(0);
    expect(t.lostSettles).toBe(0);
    // (a task may still run twice when a settle cannot reach a replica before its lease
    // runs out, e.g. a failover slower than sessionTtlMs: that is unavailability, not loss)
    report.push(
      `with WAIT:    ${t.tasks} tasks; lost grants ${t.lostGrants}, lost settles ${t.lostSettles}, tasks run twice ${t.ranTwice}`,
    );
    console.log(
      `Sentinel failover (replication cut for 300 ms, then the master killed):\n${report.join('\n')}`,
    );
  });
});
