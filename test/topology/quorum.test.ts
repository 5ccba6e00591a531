/**
 * Quorum mode on three independent Redis masters: the loss of one node goes unnoticed, the
 * loss of two is a clear NoQuorumError until one returns, a worker cut off from the majority
 * stops (its signal fires) while its peer takes over, and a far worker (two sites) keeps
 * the pair correct. Every node is a real redis-server; partitions go through TcpProxy.
 */
import { Redis } from 'ioredis';
import Redlock from 'redlock';
import { afterEach, describe, expect, it } from 'vitest';
import {
  LeaseLostError,
  NoQuorumError,
  type Outcome,
  PairedWorker,
  type PairedWorkerOptions,
  RedisUnavailableError,
} from '../../src/index.js';
import { Keys } from '../../src/redis/keys.js';
import { QuorumStore } from '../../src/redis/quorum.js';
import { type ClaimArgs, RedisStore, type Store } from '../../src/redis/store.js';
import { type IndependentTopology, startIndependent, TcpProxy } from '../../src/testing/index.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {});
});

async function topology(): Promise<IndependentTopology> {
  const topo = await startIndependent(3);
  cleanup.push(() => topo.close());
  return topo;
}

let nsCounter = 0;
function worker(
  nodes: string[],
  ns: string,
  name: string,
  extra: Partial<PairedWorkerOptions> = {},
) {
  const w = new PairedWorker({
    nodes,
    namespace: ns,
    name,
    sessionTtlMs: 1_000,
    firstAttemptIntervalMs: 300,
    otherAttemptIntervalMs: 600,
    connectTimeoutMs: 1_000,
    failure: { backoffMs: 20 },
    ...extra,
  });
  cleanup.push(() => w.close());
  return w;
}

/** Resolves when `fn` returns true; polls every 20 ms, at most `ms`. */
async function until(
  what: string,
  fn: () => boolean | Promise<boolean>,
  ms = 15_000,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if (await fn()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function percentile(values: number[], p: number): number {
  const s = [...values].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}

describe('quorum of 3 independent masters', () => {
  it('one node killed mid-run: no interruption, every task runs once, no lease lost', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const ns = `kill-one-${++nsCounter}`;
    // leases far longer than any hiccup of a loaded machine: only the node loss is tested
    const a = worker(urls, ns, 'a', { sessionTtlMs: 5_000 });
    const b = worker(urls, ns, 'b', { sessionTtlMs: 5_000 });
    const lost: string[] = [];
    for (const w of [a, b]) w.on('lease-lost', (e) => lost.push(`${e.taskId}:${e.reason}`));
    const renewFailures: string[] = [];
    for (const w of [a, b])
      w.on('renew-failed', (e) => renewFailures.push(`${e.sessionLost}: ${e.error.message}`));
    const runs = new Map<string, number>();
    const handler = async ({ taskId, token }: { taskId: string; token: number }) => {
      runs.set(taskId, (runs.get(taskId) ?? 0) + 1);
      await sleep(20 + (token % 3) * 20);
      return taskId;
    };
    const ids = Array.from({ length: 120 }, (_, i) => `t${i}`);
    let started = 0;
    const all = Promise.all(
      ids.map(async (id, i) => {
        await sleep(i * 10); // a steady stream of tasks across the kill
        started += 1;
        return Promise.all([a.run(id, handler), b.run(id, handler)]);
      }),
    );
    await until('a third of the tasks started', () => started >= 40);
    await topo.nodes[0]!.kill();
    const results = await all;
    for (const [x, y] of results) {
      expect(x.state).toBe('done');
      expect(y).toMatchObject({
        state: 'done',
        token: x.token,
        worker: x.worker,
        result: x.result,
      });
    }
    expect(runs.size).toBe(ids.length);
    for (const [id, count] of runs) expect(count, `runs of ${id}`).toBe(1);
    expect(lost, renewFailures.join('\n')).toEqual([]);
  });

  it('two nodes killed: NoQuorumError once unavailableTimeoutMs has passed (running handlers stop); one node back: work resumes', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const ns = `kill-two-${++nsCounter}`;
    const a = worker(urls, ns, 'a', { unavailableTimeoutMs: 1_500 });
    expect((await a.run('before', () => 'ok')).result).toBe('ok');

    let abortReason: unknown;
    let started!: () => void;
    const running = new Promise<void>((r) => {
      started = r;
    });
    const long = a.run('long', ({ signal }) => {
      started();
      return new Promise((_, reject) =>
        signal.addEventListener('abort', () => {
          abortReason = signal.reason;
          reject(signal.reason);
        }),
      );
    });
    long.catch(() => {});
    await running;
    await Promise.all([topo.nodes[1]!.kill(), topo.nodes[2]!.kill()]);

    // retried as an unavailable Redis is, then reported as what it is
    const during = await a.run('during', () => 'never').catch((e: unknown) => e);
    expect(during).toBeInstanceOf(NoQuorumError);
    expect(during).toBeInstanceOf(RedisUnavailableError);
    expect(during).toMatchObject({ code: 'ERR_NO_QUORUM' });
    // the session cannot be renewed on a majority: the handler's signal fires
    await until('the running handler to be aborted', () => abortReason !== undefined);
    expect(abortReason).toBeInstanceOf(LeaseLostError);
    expect((abortReason as LeaseLostError).reason).toBe('session');
    // its settle cannot reach a majority either: a clear error, not a silent success
    await expect(long).rejects.toMatchObject({ code: 'ERR_NO_QUORUM' });

    // one node returns (empty: no persistence); a majority again
    await topo.nodes[1]!.restart();
    let after: Outcome | undefined;
    await until('a run to succeed after the node returned', async () => {
      after = await a.run(`after-${performance.now()}`, () => 'back').catch(() => undefined);
      return after !== undefined;
    });
    expect(after).toMatchObject({ state: 'done', result: 'back', role: 'ran' });
  });

  it('a worker cut off from every node for a moment: a waiting run() and a settle go on once the links are back', async () => {
    const topo = await topology();
    const proxies = await Promise.all(
      topo.nodes.map((n) => TcpProxy.start({ targetPort: n.port })),
    );
    for (const p of proxies) cleanup.push(() => p.close());
    const a = worker(
      proxies.map((p) => p.url),
      `blip-${++nsCounter}`,
      'a',
      { sessionTtlMs: 3_000 },
    );
    await a.start();
    const cut = () => {
      for (const p of proxies) p.cut();
    };
    const heal = () => {
      for (const p of proxies) p.heal();
    };
    // a claim during the cut
    cut();
    const claimed = a.run('claimed-during-cut', () => 'ok');
    await sleep(300);
    heal();
    expect(await claimed).toMatchObject({ state: 'done', result: 'ok' });
    // a settle during the cut
    let calls = 0;
    const settled = await a.run('settled-during-cut', () => {
      calls += 1;
      cut();
      setTimeout(heal, 300);
      return 'ok';
    });
    expect(settled).toMatchObject({ state: 'done', result: 'ok' });
    expect(calls).toBe(1);
  });

  it('a worker cut off from the majority: its signal fires, the peer takes over, its late settle is rejected', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const proxies = await Promise.all(
      topo.nodes.map((n) => TcpProxy.start({ targetPort: n.port })),
    );
    for (const p of proxies) cleanup.push(() => p.close());
    const ns = `cut-${++nsCounter}`;
    const a = worker(
      proxies.map((p) => p.url),
      ns,
      'a',
    );
    const b = worker(urls, ns, 'b');
    const lost: string[] = [];
    a.on('lease-lost', (e) => lost.push(e.reason));

    let aborted: unknown;
    let finishA!: () => void;
    const gate = new Promise<void>((r) => {
      finishA = r;
    });
    const pa = a.run('job', async ({ signal, token }) => {
      signal.addEventListener('abort', () => {
        aborted = signal.reason;
      });
      await gate; // ignores its signal, like a handler stuck in a call
      return `a:${token}`;
    });
    pa.catch(() => {});
    await new Promise<void>((r) => a.once('claimed', () => r()));
    const pb = b.run('job', async ({ token }) => `b:${token}`);
    await new Promise<void>((r) => b.once('standby', () => r()));

    // a keeps node 0 only
    proxies[1]!.cut();
    proxies[2]!.cut();
    const ob = await pb;
    // a newer fencing token than a's (exactly 2, unless the nodes saw a's session expire at
    // different moments and b's partial takeovers spent numbers: tokens only go up)
    expect(ob).toMatchObject({ state: 'done', role: 'took-over', result: `b:${ob.token}` });
    expect(ob.token).toBeGreaterThan(1);
    await until('a to learn it lost the lease', () => aborted !== undefined);
    expect(aborted).toBeInstanceOf(LeaseLostError);
    expect((aborted as LeaseLostError).reason).toBe('session');

    // the partition heals; a's handler finally returns and tries to settle token 1
    proxies[1]!.heal();
    proxies[2]!.heal();
    await until('a to reach a majority again', async () => {
      const info = await a.inspect('job').catch(() => null);
      return info?.state === 'done';
    });
    finishA();
    const oa = await pa;
    expect(oa).toMatchObject({
      state: 'done',
      role: 'watched',
      token: ob.token,
      result: ob.result,
      worker: b.id,
    });
    expect(lost).toContain('session');
  });

  it('five nodes: two may fail, a third may not', async () => {
    const topo = await startIndependent(5);
    cleanup.push(() => topo.close());
    const urls = topo.nodes.map((n) => n.url);
    const ns = `five-${++nsCounter}`;
    const a = worker(urls, ns, 'a', { sessionTtlMs: 5_000, unavailableTimeoutMs: 1_500 });
    const b = worker(urls, ns, 'b', { sessionTtlMs: 5_000 });
    const pair = async (id: string) => {
      const [x, y] = await Promise.all([a.run(id, () => id), b.run(id, () => id)]);
      expect(y).toMatchObject({ state: 'done', token: x.token, worker: x.worker, result: id });
    };
    await pair('all-up');
    await Promise.all([topo.nodes[0]!.kill(), topo.nodes[3]!.kill()]);
    await pair('two-down');
    await topo.nodes[4]!.kill();
    await expect(a.run('three-down', () => 'never')).rejects.toBeInstanceOf(NoQuorumError);
  });

  it('two sites: a far worker (~40 ms RTT to every node) keeps the pair correct; claim latency', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const proxies = await Promise.all(
      topo.nodes.map((n) => TcpProxy.start({ targetPort: n.port, delayMs: 20 })),
    );
    for (const p of proxies) cleanup.push(() => p.close());
    const farUrls = proxies.map((p) => p.url);
    const ns = `sites-${++nsCounter}`;
    const near = worker(urls, ns, 'near', { sessionTtlMs: 5_000 });
    const far = worker(farUrls, ns, 'far', { sessionTtlMs: 5_000 });
    const runs = new Map<string, number>();
    const elapsed: Record<string, number[]> = { near: [], far: [] };
    near.on('outcome', (e) => elapsed.near!.push(e.elapsedMs));
    far.on('outcome', (e) => elapsed.far!.push(e.elapsedMs));
    const handler = async ({ taskId }: { taskId: string }) => {
      runs.set(taskId, (runs.get(taskId) ?? 0) + 1);
      await sleep(5);
      return taskId;
    };
    const ids = Array.from({ length: 150 }, (_, i) => `s${i}`);
    const results = await Promise.all(
      ids.map((id) => Promise.all([near.run(id, handler), far.run(id, handler)])),
    );
    for (const [x, y] of results) {
      expect(x.state).toBe('done');
      expect(y).toMatchObject({ state: 'done', token: x.token, worker: x.worker });
    }
    for (const [id, count] of runs) expect(count, `runs of ${id}`).toBe(1);
    const nearRan = results.filter(([x]) => x.worker === near.id).length;
    // the near worker is not starved by the far one (it wins most races, in fact)
    expect(nearRan).toBeGreaterThan(0);

    // claim latency, store level: fresh tasks, one at a time, near and far, quorum and single
    const keys = new Keys('pairlock', `latency-${++nsCounter}`);
    const stores: Record<string, Store> = {
      'quorum, near': new QuorumStore(urls, keys, 2_000),
      'quorum, far (40 ms RTT)': new QuorumStore(farUrls, keys, 2_000),
      'single Redis, near': new RedisStore(urls[0]!, keys, 2_000),
      'single Redis, far (40 ms RTT)': new RedisStore(farUrls[0]!, keys, 2_000),
    };
    const lines: string[] = [];
    for (const [label, store] of Object.entries(stores)) {
      cleanup.push(() => store.close());
      await store.connect();
      const session = `${label.replace(/\W+/g, '-')}#1`;
      expect((await store.session('open', session, 30_000)).ok).toBe(true);
      const args: ClaimArgs = {
        session,
        sessionTtlMs: 30_000,
        taskTimeoutMs: 30_000,
        retentionMs: 60_000,
        maxAttempts: 3,
        dryRun: false,
      };
      const times: number[] = [];
      for (let i = 0; i < 40; i++) {
        const t0 = performance.now();
        const reply = await store.claim(keys.task(`${session}-${i}`), args);
        times.push(performance.now() - t0);
        expect(reply.type).toBe('granted');
      }
      lines.push(
        `${label.padEnd(30)} claim p50 ${percentile(times, 50).toFixed(2)} ms, p95 ${percentile(times, 95).toFixed(2)} ms`,
      );
    }
    // the reference implementation of the algorithm, on the same nodes: lock and unlock
    for (const [label, addrs] of [
      ['redlock (acquire), near', urls],
      ['redlock (acquire), far (40 ms RTT)', farUrls],
    ] as const) {
      const clients = addrs.map((u) => new Redis(u));
      cleanup.push(async () => {
        for (const c of clients) c.disconnect();
      });
      const redlock = new Redlock(clients, { retryCount: 0 });
      const times: number[] = [];
      for (let i = 0; i < 40; i++) {
        const t0 = performance.now();
        const lock = await redlock.acquire([`redlock-${label}-${i}`], 30_000);
        times.push(performance.now() - t0);
        await lock.release();
      }
      lines.push(
        `${label.padEnd(30)} claim p50 ${percentile(times, 50).toFixed(2)} ms, p95 ${percentile(times, 95).toFixed(2)} ms`,
      );
    }
    const runLine = (side: 'near' | 'far') =>
      `run() to outcome, ${side} worker: p50 ${percentile(elapsed[side]!, 50).toFixed(1)} ms, p95 ${percentile(elapsed[side]!, 95).toFixed(1)} ms`;
    console.log(
      [
        `two sites, quorum of 3: near worker ran ${nearRan} of ${ids.length} tasks, far worker ${ids.length - nearRan}`,
        runLine('near'),
        runLine('far'),
        ...lines,
      ].join('\n'),
    );
  });
});

/*
 * The store of quorum mode against real nodes, one interleaving at a time: what an undo
 * leaves behind, what a repair may overwrite, and what a node that answers after the
 * client's timeout keeps.
 */
describe('quorum store: undo, repair and late answers', () => {
  const args = (session: string, extra: Partial<ClaimArgs> = {}): ClaimArgs => ({
    session,
    sessionTtlMs: 30_000,
    taskTimeoutMs: 60_000,
    retentionMs: 60_000,
    maxAttempts: 3,
    dryRun: false,
    ...extra,
  });
  const done = (session: string, token: number) => ({
    session,
    token,
    state: 'D' as const,
    payload: '"result"',
    retentionMs: 60_000,
    backoffMs: 0,
  });

  /** A quorum store (through `urls`), opened and closed with the test. */
  async function quorumStore(urls: string[], keys: Keys, timeoutMs = 2_000) {
    const store = new QuorumStore(urls, keys, timeoutMs);
    cleanup.push(() => store.close());
    await store.connect();
    return store;
  }
  /** One store per node, straight to it: to set the stage and to look at each node alone. */
  async function nodeStores(urls: string[], keys: Keys): Promise<RedisStore[]> {
    return Promise.all(
      urls.map(async (u) => {
        const s = new RedisStore(u, keys, 2_000);
        cleanup.push(() => s.close());
        await s.connect();
        return s;
      }),
    );
  }
  /**
   * Every node behind a proxy of its own, one store per node straight to it, and a quorum
   * store through the proxies with session `one#1` open.
   */
  async function proxiedQuorum(name: string, timeoutMs: number) {
    const topo = await topology();
    const proxies = await Promise.all(topo.nodes.map((n) => delayedProxy(n.port)));
    const keys = new Keys('pairlock', `${name}-${++nsCounter}`);
    const node = await nodeStores(
      topo.nodes.map((n) => n.url),
      keys,
    );
    const q1 = await quorumStore(
      proxies.map((p) => p.url),
      keys,
      timeoutMs,
    );
    const s1 = 'one#1';
    expect((await q1.session('open', s1, 30_000)).ok).toBe(true);
    return { proxies, keys, node, q1, s1 };
  }
  async function delayedProxy(port: number): Promise<TcpProxy> {
    const p = await TcpProxy.start({ targetPort: port });
    cleanup.push(() => p.close());
    return p;
  }

  it("an undone takeover leaves the owner's record as it was, so its outcome reaches every node and survives the loss of one", async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const keys = new Keys('pairlock', `undo-repair-${++nsCounter}`);
    const q1 = await quorumStore(urls, keys);
    const q2 = await quorumStore(urls, keys);
    const node = await nodeStores(urls, keys);
    const [s1, s2] = ['one#1', 'two#1'];
    expect((await q1.session('open', s1, 30_000)).ok).toBe(true);
    expect((await q2.session('open', s2, 30_000)).ok).toBe(true);
    const loc = keys.task('job');
    expect(await q1.claim(loc, args(s1))).toMatchObject({ type: 'granted', token: 1 });
    // A and B decided the grant; C's part may still be on its way (a connection of its own,
    // which the session close below could overtake)
    await until('the grant on C', async () => (await node[2]!.inspect(loc)).found);

    // s1's session lapses on node C only; s2's takeover is granted there alone, and undone
    await node[2]!.session('close', s1, 0);
    expect(await q2.claim(loc, args(s2))).toMatchObject({ type: 'held', owner: s1, token: 1 });
    // A and B decided the claim: C's part may not even have been applied yet (it is
    // undone once its answer comes); give it time to arrive before looking
    await sleep(300);
    await until('the takeover on C to be undone', async () => {
      const rec = await node[2]!.inspect(loc);
      return rec.found && rec.session === s1;
    });
    // C holds s1's grant exactly as before the takeover
    expect(await node[2]!.inspect(loc)).toMatchObject({ state: 'running', session: s1, token: 1 });

    // s1 settles: A and B take it, C turns it away (the lease is gone there) and is repaired
    expect(await q1.settle(loc, done(s1, 1))).toMatchObject({ ok: true, token: 1 });
    await until('the outcome to reach C', async () => {
      const rec = await node[2]!.inspect(loc);
      return rec.found && rec.state === 'done';
    });

    // A is lost: B and C still make the outcome
    await topo.nodes[0]!.kill();
    expect(await q2.claim(loc, args(s2))).toMatchObject({
      type: 'done',
      owner: s1,
      token: 1,
      payload: '"result"',
    });
  });

  it('a settle refused on a majority because the session expired there is refused, and not written there', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const keys = new Keys('pairlock', `stale-session-${++nsCounter}`);
    const q1 = await quorumStore(urls, keys);
    const node = await nodeStores(urls, keys);
    const s1 = 'one#1';
    expect((await q1.session('open', s1, 30_000)).ok).toBe(true);
    const loc = keys.task('job');
    expect(await q1.claim(loc, args(s1))).toMatchObject({ type: 'granted', token: 1 });
    // the session lapses on B and C
    await node[1]!.session('close', s1, 0);
    await node[2]!.session('close', s1, 0);
    expect(await q1.settle(loc, done(s1, 1))).toEqual({ ok: false, reason: 'session-expired' });
    for (const n of [node[1]!, node[2]!]) {
      expect(await n.inspect(loc)).toMatchObject({ state: 'running', session: s1, token: 1 });
    }
  });

  it('a settle refused on a majority because the deadline passed there is refused, and not written there', async () => {
    const topo = await topology();
    const proxies = [
      await delayedProxy(topo.nodes[1]!.port),
      await delayedProxy(topo.nodes[2]!.port),
    ];
    const keys = new Keys('pairlock', `stale-deadline-${++nsCounter}`);
    const q1 = await quorumStore([topo.nodes[0]!.url, ...proxies.map((p) => p.url)], keys, 5_000);
    const node = await nodeStores(
      topo.nodes.map((n) => n.url),
      keys,
    );
    const s1 = 'one#1';
    expect((await q1.session('open', s1, 30_000)).ok).toBe(true);
    const loc = keys.task('job');
    const taskTimeoutMs = 1_000;
    expect(await q1.claim(loc, args(s1, { taskTimeoutMs }))).toMatchObject({
      type: 'granted',
      token: 1,
    });
    await sleep(500);
    // the settle reaches A half a second before the deadline, B and C 200 ms after it
    for (const p of proxies) p.setDelay(700);
    expect(await q1.settle(loc, done(s1, 1))).toEqual({ ok: false, reason: 'deadline-passed' });
    for (const p of proxies) p.setDelay(0);
    for (const n of [node[1]!, node[2]!]) {
      expect(await n.inspect(loc)).toMatchObject({ state: 'running', session: s1, token: 1 });
    }
  });

  it("a grant's kind is the majority's: a node that missed a settle does not make a retry a takeover", async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const keys = new Keys('pairlock', `kind-${++nsCounter}`);
    const nodes = await nodeStores(urls, keys);
    const q = await quorumStore(urls, keys);
    const s1 = `s1:${nsCounter}#1`;
    const s2 = `s2:${nsCounter}#1`;
    for (const n of nodes) {
      expect((await n.session('open', s1, 30_000)).ok).toBe(true);
      expect((await n.session('open', s2, 30_000)).ok).toBe(true);
    }
    const loc = keys.task('t');
    // every node granted s1 token 1 with a short deadline; two of them then took its
    // failure (a retry may follow at once), the first missed the settle and still holds
    // the running record, whose deadline passes
    for (const n of nodes) await n.claim(loc, args(s1, { taskTimeoutMs: 200 }));
    for (const n of nodes.slice(1)) {
      await n.settle(loc, { ...done(s1, 1), state: 'F', payload: '{}', maxAttempts: 3 });
    }
    await sleep(250);
    const reply = await q.claim(loc, args(s2));
    expect(reply).toMatchObject({ type: 'granted', token: 2, kind: 'retry' });
  });

  it('our own grant on a majority is resumed (as one Redis answers a claim whose reply was lost), not granted anew', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const keys = new Keys('pairlock', `resumed-${++nsCounter}`);
    const q1 = await quorumStore(urls, keys);
    const node = await nodeStores(urls, keys);
    const s1 = 'one#1';
    expect((await q1.session('open', s1, 30_000)).ok).toBe(true);
    const loc = keys.task('job');
    expect(await q1.claim(loc, args(s1, { taskTimeoutMs: 20_000 }))).toMatchObject({
      type: 'granted',
      token: 1,
      kind: 'fresh',
    });
    for (const dryRun of [false, true]) {
      const again = await q1.claim(loc, args(s1, { dryRun }));
      expect(again).toMatchObject({ type: 'resumed', token: 1, attempt: 1, kind: 'fresh' });
      if (again.type !== 'resumed') throw new Error('not resumed');
      expect(again.deadlineInMs).toBeGreaterThan(0);
      expect(again.deadlineInMs).toBeLessThanOrEqual(20_000);
    }
    for (const n of node) {
      expect(await n.inspect(loc)).toMatchObject({ state: 'running', session: s1, token: 1 });
    }
  });

  it('our own grant left on a minority by an earlier claim is undone when a new grant wins', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const keys = new Keys('pairlock', `leftover-${++nsCounter}`);
    const q1 = await quorumStore(urls, keys);
    const node = await nodeStores(urls, keys);
    const s1 = 'one#1';
    expect((await q1.session('open', s1, 30_000)).ok).toBe(true);
    const loc = keys.task('job');
    // an earlier claim of s1 that only node C granted, never undone
    expect(await node[2]!.claimAtLeast(loc, args(s1), 0)).toMatchObject({ type: 'granted' });
    expect(await q1.claim(loc, args(s1))).toMatchObject({ type: 'granted', token: 1 });
    await until('the leftover on C to be undone', async () => !(await node[2]!.inspect(loc)).found);
    for (const n of [node[0]!, node[1]!]) {
      expect(await n.inspect(loc)).toMatchObject({ state: 'running', session: s1, token: 1 });
    }
  });

  it('a grant made by a node that answered after the timeout is undone', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const proxy = await delayedProxy(topo.nodes[2]!.port);
    const keys = new Keys('pairlock', `late-node-${++nsCounter}`);
    const node = await nodeStores(urls, keys);
    // s1 holds the task on A and B; C has no record of it
    const s1 = 'one#1';
    for (const n of [node[0]!, node[1]!]) {
      expect((await n.session('open', s1, 30_000)).ok).toBe(true);
      expect(await n.claim(keys.task('job'), args(s1))).toMatchObject({ type: 'granted' });
    }
    const q2 = await quorumStore([urls[0]!, urls[1]!, proxy.url], keys, 400);
    const s2 = 'two#1';
    expect((await q2.session('open', s2, 30_000)).ok).toBe(true);
    // C applies s2's claim 300 ms after it is sent, and its answer comes after the 400 ms bound
    proxy.setDelay(300);
    expect(await q2.claim(keys.task('job'), args(s2))).toMatchObject({ type: 'held', owner: s1 });
    let granted = false;
    await until(
      'the grant on C to be made, then undone',
      async () => {
        const rec = await node[2]!.inspect(keys.task('job'));
        if (rec.found && rec.session === s2) granted = true;
        return granted && !rec.found;
      },
      3_000,
    );
  });

  it('grants made by nodes that all answered after the timeout are undone on every node', async () => {
    const { proxies, keys, node, q1, s1 } = await proxiedQuorum('late-all', 400);
    for (const p of proxies) p.setDelay(300);
    const granted = new Set<number>();
    const watch = setInterval(() => {
      node.forEach((n, i) => {
        n.inspect(keys.task('job')).then(
          (r) => r.found && r.session === s1 && granted.add(i),
          () => {},
        );
      });
    }, 20);
    cleanup.push(async () => clearInterval(watch));
    await expect(q1.claim(keys.task('job'), args(s1))).rejects.toBeInstanceOf(NoQuorumError);
    for (const p of proxies) p.setDelay(0);
    await until(
      'every grant to be undone',
      async () => {
        const recs = await Promise.all(node.map((n) => n.inspect(keys.task('job'))));
        return recs.every((r) => !r.found);
      },
      3_000,
    );
    clearInterval(watch);
    // every node did grant, after the claimer had stopped waiting for it
    expect([...granted].sort()).toEqual([0, 1, 2]);
  });

  it('a claim of a task its session already holds, whose answers never come, leaves that grant on every node (no blind undo takes it back)', async () => {
    const { proxies, keys, node, q1, s1 } = await proxiedQuorum('kept-grant', 400);
    const loc = keys.task('job');
    // s1 wins token 1 and runs it; its settle cannot be sent, so it claims the task again
    // (as a worker does): every answer comes after the claimer stopped waiting
    expect(await q1.claim(loc, args(s1))).toMatchObject({ type: 'granted', token: 1 });
    for (const p of proxies) p.setDelay(300);
    await expect(q1.claim(loc, args(s1))).rejects.toBeInstanceOf(NoQuorumError);
    // one node answers, two stay silent: the answer is our own grant, resumed on a minority
    proxies[0]!.setDelay(0);
    await expect(q1.claim(loc, args(s1))).rejects.toBeInstanceOf(NoQuorumError);
    for (const p of proxies) p.setDelay(0);
    // every undo sent meanwhile has arrived by now (a 300 ms delay each way)
    await sleep(1_000);
    for (const n of node) {
      expect(await n.inspect(loc)).toMatchObject({ state: 'running', session: s1, token: 1 });
    }
    // so no other session is granted token 1 again: the running grant is held
    const s2 = 'two#1';
    expect((await q1.session('open', s2, 30_000)).ok).toBe(true);
    expect(await q1.claim(loc, args(s2))).toMatchObject({ type: 'held', owner: s1, token: 1 });
    // and the outcome is taken
    expect(await q1.settle(loc, done(s1, 1))).toMatchObject({ ok: true, token: 1 });
  });

  it('a grant handed out stays protected when a later claim is answered by a split (held by another on a minority)', async () => {
    const topo = await topology();
    const proxy = await delayedProxy(topo.nodes[1]!.port);
    const urls = [topo.nodes[0]!.url, proxy.url, topo.nodes[2]!.url];
    const keys = new Keys('pairlock', `split-held-${++nsCounter}`);
    const node = await nodeStores(
      topo.nodes.map((n) => n.url),
      keys,
    );
    const q1 = await quorumStore(urls, keys, 400);
    const s1 = `s1:${nsCounter}#1`;
    const s3 = `s3:${nsCounter}#1`;
    const loc = keys.task('t');
    expect((await q1.session('open', s1, 30_000)).ok).toBe(true);
    expect(await q1.claim(loc, args(s1))).toMatchObject({ type: 'granted', token: 1 });
    // C lost the task and another session holds it there; B is cut off
    const c = new Redis(topo.nodes[2]!.port);
    try {
      await c.del(loc.container);
    } finally {
      c.disconnect();
    }
    expect((await node[2]!.session('open', s3, 30_000)).ok).toBe(true);
    expect(await node[2]!.claim(loc, args(s3))).toMatchObject({ type: 'granted', token: 1 });
    proxy.cut();
    // two claims of s1 (its settle could not be sent, say): A answers with s1's own grant,
    // C held by s3, B silent: no majority for anything, answered as held by s3
    for (let i = 0; i < 2; i++) {
      await q1.claim(loc, args(s1)).then(
        (r) => expect(r).toMatchObject({ type: 'held', owner: s3 }),
        (err) => expect(err).toBeInstanceOf(NoQuorumError),
      );
    }
    proxy.heal();
    await sleep(300);
    for (const n of [node[0]!, node[1]!]) {
      expect(await n.inspect(loc)).toMatchObject({ state: 'running', session: s1, token: 1 });
    }
  });

  it("a settle short of a majority waits for another claimer's minority grant to be undone, as long as that claimer's own round may take (one node silent meanwhile)", async () => {
    // the stage of "one node killed mid-run": s1 won on A and B, s3's claim got C and waits
    // for A, which is gone, before it can undo its minority grant there
    const topo = await topology();
    const proxy = await delayedProxy(topo.nodes[0]!.port);
    const urls = [proxy.url, topo.nodes[1]!.url, topo.nodes[2]!.url];
    const keys = new Keys('pairlock', `settle-waits-${++nsCounter}`);
    const node = await nodeStores(
      topo.nodes.map((n) => n.url),
      keys,
    );
    const q1 = await quorumStore(urls, keys, 1_000);
    const s1 = `s1:${nsCounter}#1`;
    const s3 = `s3:${nsCounter}#1`;
    const loc = keys.task('t');
    expect((await q1.session('open', s1, 30_000)).ok).toBe(true);
    expect(await q1.claim(loc, args(s1))).toMatchObject({ type: 'granted', token: 1 });
    const c = new Redis(topo.nodes[2]!.port);
    try {
      await c.del(loc.container);
      expect((await node[2]!.session('open', s3, 30_000)).ok).toBe(true);
      expect(await node[2]!.claim(loc, args(s3))).toMatchObject({ type: 'granted' });
      proxy.cut(); // A gone
      // s3's round ends within its command timeout (1 s here), and it undoes its grant on C
      const undone = sleep(600).then(() => c.del(loc.container));
      const settled = await q1.settle(loc, done(s1, 1));
      await undone;
      expect(settled).toMatchObject({ ok: true, token: 1 });
      expect(await node[1]!.inspect(loc)).toMatchObject({ state: 'done', token: 1 });
      expect(await node[2]!.inspect(loc)).toMatchObject({ state: 'done', token: 1 });
    } finally {
      c.disconnect();
      proxy.heal();
    }
  });

  it("an earlier claim's answer that comes too late does not take back the grant of a later claim of the same task on that node", async () => {
    const topo = await topology();
    const proxy = await delayedProxy(topo.nodes[2]!.port);
    const urls = [topo.nodes[0]!.url, topo.nodes[1]!.url, proxy.url];
    const keys = new Keys('pairlock', `late-undo-${++nsCounter}`);
    const node = await nodeStores(
      topo.nodes.map((n) => n.url),
      keys,
    );
    const q1 = await quorumStore(urls, keys, 1_000);
    const s1 = `s1:${nsCounter}#1`;
    const s2 = `s2:${nsCounter}#1`;
    const loc = keys.task('t');
    for (const n of node) {
      expect((await n.session('open', s2, 30_000)).ok).toBe(true);
      expect(await n.claim(loc, args(s2))).toMatchObject({ type: 'granted', token: 1 });
    }
    expect((await q1.session('open', s1, 30_000)).ok).toBe(true);
    // claim 1: held by s2 everywhere; C applies it at once, its answer comes 100 ms after
    // the 1 s timeout
    proxy.setReplyDelay(1_100);
    const sent = performance.now();
    expect(await q1.claim(loc, args(s1))).toMatchObject({ type: 'held', owner: s2 });
    await sleep(30); // C's answer is on its way, delayed
    proxy.setReplyDelay(0);
    // s2's session lapses on A and C; claim 2, 200 ms after claim 1, is granted on both and
    // waits for C's answer, queued behind claim 1's: meanwhile claim 1 gives up on C (and,
    // blind, would undo whatever grant of s1 C holds by then: claim 2's)
    await node[0]!.session('close', s2, 0);
    await node[2]!.session('close', s2, 0);
    await sleep(200 - (performance.now() - sent));
    expect(await q1.claim(loc, args(s1))).toMatchObject({ type: 'granted', token: 2 });
    await sleep(300);
    for (const n of [node[0]!, node[2]!]) {
      expect(await n.inspect(loc)).toMatchObject({ state: 'running', session: s1, token: 2 });
    }
  });

  it('a holder whose session lapsed only on the node it cannot reach keeps its task: a takeover needs its session gone on a majority', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const keys = new Keys('pairlock', `live-holder-${++nsCounter}`);
    const node = await nodeStores(urls, keys);
    const q = await quorumStore(urls, keys);
    const s1 = `s1:${nsCounter}#1`;
    const loc = keys.task('t');
    // s1 won the task on A and B (C answered too late to count and has no record); then s1
    // was cut off from B: its session lapsed there, while it renews on A and C
    for (const n of node) expect((await n.session('open', s1, 30_000)).ok).toBe(true);
    for (const n of [node[0]!, node[1]!]) {
      expect(await n.claim(loc, args(s1))).toMatchObject({ type: 'granted', token: 1 });
    }
    await node[1]!.session('close', s1, 0);
    // B would grant a takeover, C a fresh grant: a majority of grants, but s1 is alive
    const s2 = `s2:${nsCounter}#1`;
    expect((await q.session('open', s2, 30_000)).ok).toBe(true);
    expect(await q.claim(loc, args(s2))).toMatchObject({ type: 'held', owner: s1 });
    // the grants were taken back: s1 still holds the task where it did, C has nothing
    await until('the grants to be undone', async () => !(await node[2]!.inspect(loc)).found);
    for (const n of [node[0]!, node[1]!]) {
      expect(await n.inspect(loc)).toMatchObject({ state: 'running', session: s1, token: 1 });
    }
    // once s1's session is gone on a majority, the takeover is granted
    await node[2]!.session('close', s1, 0);
    expect(await q.claim(loc, args(s2))).toMatchObject({
      type: 'granted',
      token: 2,
      kind: 'session-expired',
      from: s1,
    });
  });

  it('a node that missed some grants counts the attempts the quorum reported once it takes the settle: a final failure is final on every node', async () => {
    const topo = await topology();
    const urls = topo.nodes.map((n) => n.url);
    const keys = new Keys('pairlock', `attempts-${++nsCounter}`);
    const node = await nodeStores(urls, keys);
    const q = await quorumStore(urls, keys);
    const s1 = `s1:${nsCounter}#1`;
    for (const n of node) expect((await n.session('open', s1, 30_000)).ok).toBe(true);
    const loc = keys.task('t');
    const failed = (token: number) => ({
      ...done(s1, token),
      state: 'F' as const,
      payload: '{}',
      backoffMs: 0,
      maxAttempts: 3,
    });
    // A saw every grant: attempts 1, 2 (failed) and 3 (token 3, running). B missed the
    // second: its grant of token 3 (the quorum's minimum) is only its second attempt.
    // C is away.
    for (let t = 1; t <= 2; t++) {
      expect(await node[0]!.claim(loc, args(s1))).toMatchObject({ type: 'granted', token: t });
      expect(await node[0]!.settle(loc, failed(t))).toMatchObject({ ok: true });
    }
    expect(await node[0]!.claim(loc, args(s1))).toMatchObject({ token: 3, attempt: 3 });
    expect(await node[1]!.claim(loc, args(s1))).toMatchObject({ token: 1, attempt: 1 });
    expect(await node[1]!.settle(loc, failed(1))).toMatchObject({ ok: true });
    expect(await node[1]!.claimAtLeast(loc, args(s1), 3)).toMatchObject({ token: 3, attempt: 2 });
    await topo.nodes[2]!.kill();

    // the quorum's grant was attempt 3: its failure is final, on A and on B
    expect(await q.settle(loc, { ...failed(3), attempt: 3 })).toMatchObject({
      ok: true,
      token: 3,
      attempt: 3,
      final: true,
    });
    for (const n of [node[0]!, node[1]!]) {
      expect(await n.inspect(loc)).toMatchObject({ state: 'failed', token: 3, attempt: 3 });
    }
    // C comes back empty-handed: another session is told the task failed, not granted it
    await topo.nodes[2]!.restart();
    const s2 = `s2:${nsCounter}#1`;
    expect((await q.session('open', s2, 30_000)).ok).toBe(true);
    expect(await q.claim(loc, args(s2))).toMatchObject({
      type: 'failed',
      token: 3,
      terminal: true,
    });
  });
});
