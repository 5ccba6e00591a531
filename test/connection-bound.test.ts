/**
 * Connection-bound sessions on real redis-server processes: a crashed holder is taken over
 * on connection evidence, long before its session TTL; and every case where that evidence
 * is absent or not to be trusted falls back to the session TTL. Takeover times are
 * printed for the record; speed is measured by bench/, not asserted here.
 */
import { performance } from 'node:perf_hooks';
import { Cluster, Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type HandlerContext,
  type Logger,
  PairedWorker,
  type PairedWorkerOptions,
} from '../src/index.js';
import { Keys } from '../src/redis/keys.js';
import { Subscriber } from '../src/redis/liveness.js';
import {
  RedisServer,
  startCluster,
  startIndependent,
  startReplicated,
  TcpProxy,
} from '../src/testing/index.js';
import { type Child, spawnWorker } from './support/child-worker.js';

const now = () => performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const children: Child[] = [];
const workers: PairedWorker[] = [];
let n = 0;

afterEach(async () => {
  for (const c of children.splice(0)) c.reap();
  await Promise.allSettled(workers.splice(0).map((w) => w.close()));
});

function worker(
  url: string,
  ns: string,
  name: string,
  extra: Partial<PairedWorkerOptions> = {},
): PairedWorker {
  const w = new PairedWorker({ ...(url ? { redis: url } : {}), namespace: ns, name, ...extra });
  workers.push(w);
  return w;
}

/** A handler that holds its task until its signal fires, and records when. */
function holding() {
  const seen = { startedAt: 0, abortedAt: 0, reason: '' };
  const handler = ({ signal }: HandlerContext) =>
    new Promise<string>((resolve) => {
      seen.startedAt = now();
      signal.addEventListener('abort', () => {
        seen.abortedAt = now();
        seen.reason = (signal.reason as { reason?: string }).reason ?? '';
        resolve('aborted');
      });
    });
  return { seen, handler };
}

function capture(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (_o: object, msg?: string) => {
    if (msg) lines.push(msg);
  };
  return { lines, debug: keep, info: keep, warn: keep, error: keep };
}

async function until(ok: () => boolean, ms: number): Promise<void> {
  const deadline = now() + ms;
  while (!ok()) {
    if (now() > deadline) throw new Error(`not within ${ms} ms`);
    await sleep(10);
  }
}

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)];

describe('one Redis', () => {
  let server: RedisServer;

  /** Workers a and b on task 't': a runs it until release(), b covers it. */
  async function heldByA(ns: string) {
    const a = worker(server.url, ns, 'a');
    const b = worker(server.url, ns, 'b');
    let release: () => void = () => {};
    let reason = '';
    const runA = a.run('t', ({ signal }) => {
      signal.addEventListener('abort', () => {
        reason = String((signal.reason as { reason?: string }).reason);
      });
      return new Promise<string>((r) => {
        release = () => r('a');
      });
    });
    await sleep(100);
    const runB = b.run('t', async () => 'b');
    // awaited by the test; a failed assertion must not leave their rejections unhandled
    runA.catch(() => {});
    runB.catch(() => {});
    await sleep(100);
    return { a, runA, runB, release: () => release(), aborted: () => reason };
  }
  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('SIGKILL of a process holding 20 tasks, library defaults: every task is taken over on connection evidence', async () => {
    const ns = `kill-${++n}`;
    const a = await spawnWorker(server.url, ns, 'a', { PAIRLOCK_DEFAULTS: '1' });
    children.push(a);
    const b = worker(server.url, ns, 'b');
    const ids = Array.from({ length: 20 }, (_, i) => `job-${i}`);
    for (const id of ids) a.run(id, 600_000);
    for (const id of ids) await a.waitFor((m) => m.ev === 'started' && m.taskId === id, id);
    const started = new Map<string, number>();
    const took: { kind: string; from: string }[] = [];
    b.on('took-over', (e) => took.push(e));
    const outcomes = ids.map((id) =>
      b.run(id, async ({ token }) => {
        started.set(id, now());
        return token;
      }),
    );
    await sleep(200); // b covers every task
    const killedAt = now();
    a.proc.kill('SIGKILL');
    const results = await Promise.all(outcomes);
    expect(results.every((o) => o.role === 'took-over' && o.token === 2)).toBe(true);
    expect(took).toHaveLength(20);
    expect(took.every((t) => t.kind === 'connection-lost' && t.from === a.id)).toBe(true);
    const ms = ids.map((id) => (started.get(id) as number) - killedAt);
    console.log(
      `SIGKILL, 20 tasks, defaults: standby start p50 ${pct(ms, 50)?.toFixed(0)} ms, max ${Math.max(...ms).toFixed(0)} ms (session TTL 10000 ms)`,
    );
  });

  it("a holder whose links are cut (connections closed, process alive): its handlers' signals fire before the standby starts", async () => {
    const ns = `cut-${++n}`;
    const proxy = await TcpProxy.start({ targetPort: server.port });
    try {
      const a = worker(`redis://127.0.0.1:${proxy.port}`, ns, 'a');
      const b = worker(server.url, ns, 'b');
      const held = holding();
      const runA = a.run('t', held.handler).catch((e: Error) => e);
      while (!held.seen.startedAt) await sleep(5);
      let bStarted = 0;
      const runB = b.run('t', async () => {
        bStarted = now();
        return 'b';
      });
      await sleep(100);
      const cutAt = now();
      proxy.cut();
      expect(await runB).toMatchObject({ role: 'took-over', result: 'b' });
      expect(held.seen.reason).toBe('connection');
      expect(held.seen.abortedAt).toBeGreaterThan(0);
      expect(held.seen.abortedAt).toBeLessThan(bStarted);
      console.log(
        `links cut: holder aborted after ${(held.seen.abortedAt - cutAt).toFixed(0)} ms, standby started after ${(bStarted - cutAt).toFixed(0)} ms`,
      );
      // the grant revoked the holder's session: once back, it learns so and starts anew
      const admin = new Redis(server.url);
      const keys = new Keys('pairlock', ns);
      const oldSession = a.session;
      expect(await admin.exists(keys.session(oldSession))).toBe(0);
      const lost = new Promise((r) => a.once('renew-failed', (e) => r(e.sessionLost)));
      proxy.heal();
      expect(await lost).toBe(true);
      await runA;
      const until = now() + 3_000;
      while (
        (a.session === oldSession || !(await admin.exists(keys.bind(a.session)))) &&
        now() < until
      )
        await sleep(20);
      // bound again, never seen gone; with the configured grace, or (proofs slowed by a
      // loaded machine) a longer one
      const rebound = (await admin.get(keys.bind(a.session))) ?? '';
      expect(rebound).toMatch(/\|\d+\|0$/);
      expect(Number(rebound.split('|')[2])).toBeGreaterThanOrEqual(140);
      admin.disconnect();
    } finally {
      proxy.heal();
      await Promise.allSettled(workers.splice(0).map((w) => w.close()));
      await proxy.close();
    }
  });

  it('a holder 40 ms from Redis: bound with a longer grace, its handler is not aborted', async () => {
    const ns = `far-${++n}`;
    const proxy = await TcpProxy.start({ targetPort: server.port, delayMs: 20 });
    const admin = new Redis(server.url);
    try {
      const a = worker(`redis://127.0.0.1:${proxy.port}`, ns, 'a');
      let aborted = '';
      const out = await a.run('t', async ({ signal }) => {
        signal.addEventListener('abort', () => {
          aborted = String((signal.reason as { reason?: string }).reason);
        });
        await sleep(1_500);
        return 'a';
      });
      expect(out).toMatchObject({ role: 'ran', result: 'a' });
      expect(aborted).toBe('');
      const grace = Number(
        (await admin.get(new Keys('pairlock', ns).bind(a.session)))?.split('|')[2],
      );
      // 100 ms between proofs + two 40 ms round trips + 20 ms
      expect(grace).toBeGreaterThanOrEqual(200);
      console.log(`40 ms round trip: bound with a crash grace of ${grace} ms`);
    } finally {
      admin.disconnect();
      await Promise.allSettled(workers.splice(0).map((w) => w.close()));
      await proxy.close();
    }
  });

  it('a network partition of the holder (blackhole: no FIN): the session TTL decides', async () => {
    const ns = `hole-${++n}`;
    const proxy = await TcpProxy.start({ targetPort: server.port });
    try {
      const opts = { sessionTtlMs: 1_500 };
      const a = worker(`redis://127.0.0.1:${proxy.port}`, ns, 'a', opts);
      const b = worker(server.url, ns, 'b', opts);
      const held = holding();
      void a.run('t', held.handler).catch(() => {});
      while (!held.seen.startedAt) await sleep(5);
      let bStarted = 0;
      let kind = '';
      b.on('took-over', (e) => {
        kind = e.kind;
      });
      const runB = b.run('t', async () => {
        bStarted = now();
        return 'b';
      });
      await sleep(100);
      const holeAt = now();
      proxy.blackhole();
      expect(await runB).toMatchObject({ role: 'took-over' });
      expect(kind).toBe('session-expired');
      // no FIN: the connection stands as far as the holder knows, so its late proofs are
      // doubt, not loss; it gives up when its re-proof stays unanswered doubtMs (750 ms:
      // half the session TTL), long before the standby starts on the session TTL
      expect(held.seen.reason).toBe('connection');
      expect(held.seen.abortedAt).toBeLessThan(bStarted);
      console.log(
        `blackhole: takeover after ${(bStarted - holeAt).toFixed(0)} ms (session TTL 1500 ms)`,
      );
    } finally {
      proxy.heal();
      await Promise.allSettled(workers.splice(0).map((w) => w.close()));
      await proxy.close();
    }
  });

  it("the subscriber link dropped, the command link alive: unbound, re-bound, the holder's handler keeps running, no takeover", async () => {
    const ns = `sub-${++n}`;
    const admin = new Redis(server.url);
    try {
      const { a, runA, runB, release, aborted } = await heldByA(ns);
      const keys = new Keys('pairlock', ns);
      // still bound on this server run, never seen gone (a proof slowed by a loaded machine
      // may have made it bind again with a longer grace: a new epoch, not an unbinding)
      const runId = /run_id:(\w+)/.exec(await admin.info('server'))?.[1];
      expect(await admin.get(keys.bind(a.session))).toMatch(
        new RegExp(`^${runId}\\|\\d+\\|\\d+\\|0\\|0$`),
      );
      // the holder's subscriber: the one connection subscribed to its liveness channel
      const list = await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub');
      const subs = String(list)
        .split('\n')
        .filter((l) => / sub=2 /.test(l));
      const port = (a as unknown as { store: { liveLink(): { client: Redis } } }).store.liveLink()
        .client.stream.localPort;
      const line = subs.find((l) => l.includes(`addr=127.0.0.1:${port} `));
      const id = /id=(\d+)/.exec(line ?? '')?.[1];
      expect(id).toBeDefined();
      const epochOf = async () =>
        Number(/^\w+\|(\d+)\|/.exec((await admin.get(keys.bind(a.session))) ?? '')?.[1]);
      const before = await epochOf();
      await admin.client('KILL', 'ID', id as string);
      // well past the grace and several standby checks
      await sleep(600);
      // bound again, on a new epoch, never seen gone
      expect(await admin.get(keys.bind(a.session))).toMatch(
        new RegExp(`^${runId}\\|\\d+\\|\\d+\\|0\\|0$`),
      );
      expect(await epochOf()).toBeGreaterThan(before);
      expect(aborted()).toBe('');
      release();
      expect(await runA).toMatchObject({ role: 'ran', result: 'a' });
      expect(await runB).toMatchObject({ role: 'watched', result: 'a' });
    } finally {
      admin.disconnect();
    }
  });

  it('the subscriber dropped again before its channels were restored: no unhandled rejection (the process lives), and the next connect restores them', async () => {
    const proxy = await TcpProxy.start({ targetPort: server.port });
    const main = new Redis({ host: proxy.host, port: proxy.port, maxRetriesPerRequest: 0 });
    main.on('error', () => {});
    const got: string[] = [];
    const sub = new Subscriber(
      main,
      'events',
      'live:',
      2_000,
      (m) => got.push(m),
      () => {},
    );
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await sub.start();
      await sub.follow('s#1', '');
      let readies = 0;
      sub.on('ready', () => {
        readies += 1;
      });
      // the next connection's SUBSCRIBE replies are held back; the connection drops while
      // they are on their way (after 'ready', before the channels are restored)
      let connects = 0;
      sub.client.on('ready', () => {
        connects += 1;
        if (connects === 1) setTimeout(() => proxy.cut(), 100);
      });
      proxy.setReplyDelay(300);
      proxy.cut();
      proxy.heal();
      await until(() => connects >= 1, 5_000);
      await sleep(150);
      proxy.setReplyDelay(0);
      proxy.heal();
      await until(() => sub.ready, 5_000);
      expect(unhandled).toEqual([]);
      expect(readies).toBeGreaterThanOrEqual(1);
      const admin = new Redis(server.port);
      try {
        const counts = (await admin.call('PUBSUB', 'NUMSUB', 'events', 'live:s#1')) as unknown[];
        expect(counts).toEqual(['events', 1, 'live:s#1', 1]);
        await admin.publish('events', 'hello');
      } finally {
        admin.disconnect();
      }
      await until(() => got.includes('hello'), 2_000);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      sub.disconnect();
      main.disconnect();
      await proxy.close();
    }
  });

  it('the command link dropped, the subscriber alive: the binding stands, no takeover', async () => {
    const ns = `cmd-${++n}`;
    const admin = new Redis(server.url);
    try {
      const { a, runA, runB, release, aborted } = await heldByA(ns);
      const port = (a as unknown as { store: { client: Redis } }).store.client.stream.localPort;
      const line = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'normal'))
        .split('\n')
        .find((l) => l.includes(`addr=127.0.0.1:${port} `));
      await admin.client('KILL', 'ID', /id=(\d+)/.exec(line ?? '')?.[1] as string);
      await sleep(600);
      const keys = new Keys('pairlock', ns);
      // still bound on this server run, never seen gone (a proof slowed by a loaded machine
      // may have made it bind again with a longer grace: a new epoch, not an unbinding)
      const runId = /run_id:(\w+)/.exec(await admin.info('server'))?.[1];
      expect(await admin.get(keys.bind(a.session))).toMatch(
        new RegExp(`^${runId}\\|\\d+\\|\\d+\\|0\\|0$`),
      );
      expect(aborted()).toBe('');
      release();
      expect(await runA).toMatchObject({ role: 'ran' });
      expect(await runB).toMatchObject({ role: 'watched', result: 'a' });
    } finally {
      admin.disconnect();
    }
  });
});

it('a Redis restart: a binding made on the previous run gives no evidence; the session TTL decides', async () => {
  const server = await RedisServer.start({
    args: ['--appendonly', 'yes', '--appendfsync', 'always'],
  });
  try {
    const ns = `restart-${++n}`;
    const a = await spawnWorker(server.url, ns, 'a', { PAIRLOCK_SESSION_TTL_MS: '3000' });
    children.push(a);
    a.run('t', 600_000);
    await a.waitFor((m) => m.ev === 'started', 'a started');
    await sleep(200); // a bound its session
    const admin = new Redis(server.url);
    const bindKeys = await admin.keys(`pairlock:{${ns}}:b:*`);
    admin.disconnect();
    expect(bindKeys).toHaveLength(1);
    // the holder dies while the server is down: its binding outlives both (AOF)
    await server.kill();
    a.proc.kill('SIGKILL');
    await server.restart();
    const b = worker(server.url, ns, 'b', { sessionTtlMs: 3_000 });
    let kind = '';
    b.on('took-over', (e) => {
      kind = e.kind;
    });
    const startedAt = now();
    expect(await b.run('t', async () => 'b')).toMatchObject({ role: 'took-over' });
    expect(kind).toBe('session-expired');
    console.log(
      `after a restart: taken over in ${(now() - startedAt).toFixed(0)} ms (session TTL)`,
    );
  } finally {
    await Promise.allSettled(workers.splice(0).map((w) => w.close()));
    await server.stop();
  }
});

it('a server that cannot show a connection gone (PUBSUB refused to scripts): off, said once; the session TTL decides', async () => {
  const server = await RedisServer.start({ args: ['--rename-command', 'PUBSUB', ''] });
  try {
    const ns = `old-${++n}`;
    const log = capture();
    const proxy = await TcpProxy.start({ targetPort: server.port });
    try {
      const a = new PairedWorker({
        redis: `redis://127.0.0.1:${proxy.port}`,
        namespace: ns,
        name: 'a',
        sessionTtlMs: 1_500,
        logger: log,
      });
      workers.push(a);
      const b = worker(server.url, ns, 'b', { sessionTtlMs: 1_500 });
      const held = holding();
      void a.run('t', held.handler).catch(() => {});
      while (!held.seen.startedAt) await sleep(5);
      await sleep(300);
      expect(log.lines.filter((l) => l.includes('connection-bound sessions are off'))).toHaveLength(
        1,
      );
      let kind = '';
      b.on('took-over', (e) => {
        kind = e.kind;
      });
      const runB = b.run('t', async () => 'b');
      await sleep(100);
      proxy.cut();
      expect(await runB).toMatchObject({ role: 'took-over' });
      expect(kind).toBe('session-expired');
      expect(held.seen.reason).toBe('session');
    } finally {
      proxy.heal();
      await Promise.allSettled(workers.splice(0).map((w) => w.close()));
      await proxy.close();
    }
  } finally {
    await server.stop();
  }
});

it('a Sentinel failover: the binding replicated from the old master is no evidence on the new one; the session TTL decides', async () => {
  const topo = await startReplicated({ replicas: 1, sentinels: 3 });
  try {
    const ns = `failover-${++n}`;
    const sentinels = topo.sentinelAddrs.map((a) => `${a.host}:${a.port}`).join(',');
    const a = await spawnWorker('', ns, 'a', {
      PAIRLOCK_SENTINEL: sentinels,
      PAIRLOCK_MASTER: topo.masterName,
      PAIRLOCK_SESSION_TTL_MS: '10000',
    });
    children.push(a);
    a.run('t', 600_000);
    await a.waitFor((m) => m.ev === 'started', 'a started');
    await sleep(300);
    // the binding reached the replica that will be promoted
    const replica = new Redis(topo.replicas[0]?.url as string);
    const bound = await replica.keys(`pairlock:{${ns}}:b:*`);
    replica.disconnect();
    expect(bound).toHaveLength(1);
    const b = worker('', ns, 'b', {
      redis: { sentinels: topo.sentinelAddrs, name: topo.masterName },
      sessionTtlMs: 10_000,
      connectTimeoutMs: 1_000,
    });
    let kind = '';
    b.on('took-over', (e) => {
      kind = e.kind;
    });
    const runB = b.run('t', async () => 'b');
    await sleep(300);
    // the holder and the master die together: on the new master the holder's liveness
    // channel has no subscriber, but its binding names the old master's run
    a.proc.kill('SIGKILL');
    await topo.master.kill();
    await topo.waitForFailover(30_000);
    expect(await runB).toMatchObject({ role: 'took-over', result: 'b' });
    expect(kind).toBe('session-expired');
  } finally {
    await Promise.allSettled(workers.splice(0).map((w) => w.close()));
    await topo.close();
  }
});

it('quorum mode: sessions are not bound; a crashed holder is taken over when its session expires', async () => {
  const topo = await startIndependent(3);
  try {
    const ns = `quorum-${++n}`;
    const urls = topo.nodes.map((s) => s.url);
    const a = await spawnWorker('', ns, 'a', { PAIRLOCK_NODES: urls.join(',') });
    children.push(a);
    a.run('t', 600_000);
    await a.waitFor((m) => m.ev === 'started', 'a started');
    const b = worker('', ns, 'b', { nodes: urls, sessionTtlMs: 1_000 });
    let kind = '';
    b.on('took-over', (e) => {
      kind = e.kind;
    });
    const runB = b.run('t', async () => 'b');
    await sleep(300);
    a.proc.kill('SIGKILL');
    expect(await runB).toMatchObject({ role: 'took-over', result: 'b' });
    expect(kind).toBe('session-expired');
    for (const node of topo.nodes) {
      const admin = new Redis(node.url);
      expect(await admin.keys(`pairlock:{${ns}}:b:*`)).toEqual([]);
      admin.disconnect();
    }
  } finally {
    await Promise.allSettled(workers.splice(0).map((w) => w.close()));
    await topo.close();
  }
});

it('a Redis Cluster: a crashed holder is taken over on the evidence of the shard that owns the namespace', async () => {
  const topo = await startCluster({ masters: 3 });
  const clients: Cluster[] = [];
  try {
    const ns = `cluster-${++n}`;
    const nodes = topo.startupNodes.map((a) => `${a.host}:${a.port}`).join(',');
    const a = await spawnWorker('', ns, 'a', { PAIRLOCK_CLUSTER: nodes, PAIRLOCK_DEFAULTS: '1' });
    children.push(a);
    a.run('t', 600_000);
    await a.waitFor((m) => m.ev === 'started', 'a started');
    const cluster = new Cluster([topo.startupNodes[0] as { host: string; port: number }]);
    cluster.on('error', () => {});
    clients.push(cluster);
    const b = worker('', ns, 'b', { redis: cluster });
    let kind = '';
    b.on('took-over', (e) => {
      kind = e.kind;
    });
    let startedAt = 0;
    const runB = b.run('t', async () => {
      startedAt = now();
      return 'b';
    });
    await sleep(300);
    const killedAt = now();
    a.proc.kill('SIGKILL');
    expect(await runB).toMatchObject({ role: 'took-over', result: 'b' });
    expect(kind).toBe('connection-lost');
    console.log(`Cluster, SIGKILL: standby started after ${(startedAt - killedAt).toFixed(0)} ms`);
  } finally {
    await Promise.allSettled(workers.splice(0).map((w) => w.close()));
    for (const c of clients) c.disconnect();
    await topo.close();
  }
});
