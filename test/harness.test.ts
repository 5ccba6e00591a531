import net from 'node:net';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type ClusterTopology,
  HarnessUnavailableError,
  pingOnce,
  RedisServer,
  RedisServerStartError,
  type ReplicatedTopology,
  redisServerAvailable,
  startCluster,
  startIndependent,
  startReplicated,
  TcpProxy,
} from '../src/testing/index.js';

/** Everything a test opens goes here and is torn down after it, pass or fail. */
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** A client that never reconnects or retries, so faults surface as errors instead of waits. */
function client(port: number, opts: RedisOptions = {}): Redis {
  const c = new Redis({
    host: '127.0.0.1',
    port,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    ...opts,
  });
  c.on('error', () => {});
  cleanups.push(() => c.disconnect());
  return c;
}

async function server(): Promise<RedisServer> {
  const s = await RedisServer.start();
  cleanups.push(() => s.stop());
  return s;
}

async function proxyTo(s: RedisServer): Promise<TcpProxy> {
  const p = await TcpProxy.start({ targetPort: s.port });
  cleanups.push(() => p.close());
  return p;
}

async function pingRtt(c: Redis): Promise<number> {
  const t0 = performance.now();
  expect(await c.ping()).toBe('PONG');
  return performance.now() - t0;
}

function until(what: string, check: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (check()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 10);
    };
    tick();
  });
}

it('the redis-server binary is available here', () => {
  // Every other test needs it; fail loudly rather than skip everything.
  expect(redisServerAvailable()).toBe(true);
});

describe('RedisServer', () => {
  it('starts on a free port, answers PING, stops idempotently', async () => {
    const s = await RedisServer.start();
    expect(s.kind).toBe('process');
    expect(s.host).toBe('127.0.0.1');
    expect(s.url).toBe(`redis://127.0.0.1:${s.port}`);
    expect(s.pid).toBeGreaterThan(0);
    const c = client(s.port);
    expect(await c.ping()).toBe('PONG');
    // the defaults we rely on: nothing persisted, loopback only
    expect(await c.config('GET', 'save')).toEqual(['save', '']);
    expect(await c.config('GET', 'bind')).toEqual(['bind', '127.0.0.1']);
    await s.stop();
    await s.stop();
    expect(s.pid).toBeUndefined();
    expect(s.running).toBe(false);
    expect(await pingOnce(s.host, s.port)).toBe(false);
  });

  it('kill() then restart() answers again on the same port', async () => {
    const s = await server();
    const port = s.port;
    const pid = s.pid;
    await s.kill();
    expect(s.running).toBe(false);
    expect(await pingOnce(s.host, port)).toBe(false);
    await s.restart();
    expect(s.port).toBe(port);
    expect(s.pid).toBeGreaterThan(0);
    expect(s.pid).not.toBe(pid);
    expect(await client(port).ping()).toBe('PONG');
  });

  it('pause() makes commands time out, resume() makes them answer', async () => {
    const s = await server();
    const c = client(s.port, { commandTimeout: 300 });
    expect(await c.ping()).toBe('PONG');
    s.pause();
    await expect(c.ping()).rejects.toThrow(/timed out/i);
    s.resume();
    expect(await c.ping()).toBe('PONG');
  });

  it('stop() works on a paused server', async () => {
    const s = await RedisServer.start();
    s.pause();
    const t0 = Date.now();
    await s.stop();
    expect(s.running).toBe(false);
    // SIGCONT lets it handle the SIGTERM; it must not need the 5 s SIGKILL fallback
    expect(Date.now() - t0).toBeLessThan(3_000);
  });

  it('a requested port that is taken fails with the server log', async () => {
    const s = await server();
    const err = await RedisServer.start({ port: s.port }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisServerStartError);
    expect((err as RedisServerStartError).portInUse).toBe(true);
    expect((err as Error).message).toMatch(/Address already in use/);
  });

  it('without a binary and without a container runtime: HarnessUnavailableError', async (ctx) => {
    const { getContainerRuntimeClient } = await import('testcontainers');
    const runtime = await getContainerRuntimeClient().then(
      () => true,
      () => false,
    );
    // with a runtime the harness would (correctly) pull redis:7 instead
    if (runtime) ctx.skip();
    const err = await RedisServer.start({ binary: '/nonexistent/redis-server' }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HarnessUnavailableError);
    expect((err as HarnessUnavailableError).code).toBe('ERR_HARNESS_UNAVAILABLE');
    expect((err as Error).message).toMatch(/apt-get install redis-server/);
  });
});

describe('TcpProxy', () => {
  it('forwards commands both ways', async () => {
    const s = await server();
    const p = await proxyTo(s);
    expect(p.url).toBe(`redis://127.0.0.1:${p.port}`);
    const c = client(p.port);
    await c.set('k', 'via-proxy');
    expect(await client(s.port).get('k')).toBe('via-proxy');
    expect(await c.get('k')).toBe('via-proxy');
    expect(p.connections).toBe(1);
    c.disconnect();
    await until('the link to go away', () => p.connections === 0);
  });

  it('setDelay(20) adds ≥ 40 ms to a round trip', async () => {
    const s = await server();
    const p = await proxyTo(s);
    const c = client(p.port);
    await c.ping(); // connect outside the measurement
    expect(await pingRtt(c)).toBeLessThan(40);
    p.setDelay(20);
    expect(await pingRtt(c)).toBeGreaterThanOrEqual(40);
    p.setDelay(0);
    expect(await pingRtt(c)).toBeLessThan(40);
  });

  it('setReplyDelay(150): the command is applied at once, its reply comes late', async () => {
    const s = await server();
    const p = await proxyTo(s);
    const c = client(p.port);
    const direct = client(s.port);
    await c.ping();
    p.setReplyDelay(150);
    const t0 = performance.now();
    let replied = false;
    const reply = c.set('k', 'applied').then((r) => {
      replied = true;
      return r;
    });
    // the server has the write well before the client hears of it
    let seen: string | null = null;
    for (let i = 0; i < 20 && seen === null; i++) {
      seen = await direct.get('k');
      if (seen === null) await new Promise((r) => setTimeout(r, 5));
    }
    expect(seen).toBe('applied');
    expect(replied).toBe(false);
    expect(await reply).toBe('OK');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
    p.setReplyDelay(0);
    expect(await pingRtt(c)).toBeLessThan(40);
  });

  it('keeps byte order while the delay changes under a pipelined load', async () => {
    const s = await server();
    const p = await proxyTo(s);
    const c = client(p.port);
    await c.ping();
    const replies: Array<Promise<number>> = [];
    for (let i = 0; i < 60; i++) {
      // long delay, then none: a timer per chunk would let the later chunks overtake
      p.setDelay(i % 20 === 0 ? 40 : 0);
      replies.push(c.incr('n'));
      await new Promise((r) => setImmediate(r));
    }
    expect(await Promise.all(replies)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
  });

  it('cut() resets the client and refuses new connections; heal() lets them through', async () => {
    const s = await server();
    const p = await proxyTo(s);
    const c = client(p.port);
    expect(await c.ping()).toBe('PONG');
    let closed = false;
    c.on('close', () => {
      closed = true;
    });
    p.cut();
    await until('the client to see the link close', () => closed);
    expect(p.connections).toBe(0);
    // a new connection is accepted by the kernel, then reset before any reply
    expect(await pingOnce('127.0.0.1', p.port, 1_000)).toBe(false);
    expect(p.connections).toBe(0);
    p.heal();
    expect(await client(p.port).ping()).toBe('PONG');
  });

  it('blackhole() silently drops traffic (commands time out) until heal()', async () => {
    const s = await server();
    const p = await proxyTo(s);
    const c = client(p.port, { commandTimeout: 300 });
    expect(await c.ping()).toBe('PONG');
    let closed = false;
    c.on('close', () => {
      closed = true;
    });
    p.blackhole();
    await expect(c.set('lost', '1')).rejects.toThrow(/timed out/i);
    // a partition, not a reset: the connection is still up, and the write never arrived
    expect(closed).toBe(false);
    expect(p.connections).toBe(1);
    expect(await client(s.port).exists('lost')).toBe(0);
    p.heal();
    expect(await client(p.port).ping()).toBe('PONG');
  });

  it('blackhole({ hold: true }) delivers the held bytes on heal()', async () => {
    const s = await server();
    const p = await proxyTo(s);
    const c = client(p.port);
    expect(await c.ping()).toBe('PONG');
    p.blackhole({ hold: true });
    let answered = false;
    const reply = c.echo('held').then((v) => {
      answered = true;
      return v;
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(answered).toBe(false);
    p.heal();
    expect(await reply).toBe('held');
  });

  it('retarget() sends new connections to another server', async () => {
    const a = await server();
    const b = await server();
    await client(b.port).set('who', 'b');
    const p = await proxyTo(a);
    const old = client(p.port);
    expect(await old.get('who')).toBeNull();
    p.retarget(b.port);
    expect(await client(p.port).get('who')).toBe('b');
    expect(await old.get('who')).toBeNull(); // existing links stay put
  });

  it('an unreachable target resets the client', async () => {
    const s = await server();
    const p = await proxyTo(s);
    await s.kill();
    const c = client(p.port);
    await expect(c.ping()).rejects.toThrow();
  });
});

describe('startReplicated', () => {
  let topo: ReplicatedTopology;
  beforeAll(async () => {
    topo = await startReplicated({ replicas: 1, sentinels: 3 });
  });
  afterAll(async () => {
    await topo?.close();
  });

  it('replicates writes and the sentinels know the master', async () => {
    const [replica] = topo.replicas;
    expect(topo.sentinels).toHaveLength(3);
    expect(topo.sentinelAddrs.map((a) => a.port)).toEqual(topo.sentinels.map((s) => s.port));
    const m = client(topo.master.port);
    await m.set('replicated', 'yes');
    expect(await m.wait(1, 2_000)).toBe(1);
    expect(await client(replica!.port).get('replicated')).toBe('yes');
    for (const addr of topo.sentinelAddrs) {
      const reply = await client(addr.port).call(
        'SENTINEL',
        'GET-MASTER-ADDR-BY-NAME',
        topo.masterName,
      );
      expect(reply).toEqual(['127.0.0.1', String(topo.master.port)]);
    }
  });

  it('fails over to the replica after master.kill()', async () => {
    const [replica] = topo.replicas;
    const t0 = Date.now();
    await topo.master.kill();
    const addr = await topo.waitForFailover(20_000);
    console.info(`sentinel failover took ${Date.now() - t0} ms (down-after 1000 ms)`);
    expect(addr).toEqual({ host: '127.0.0.1', port: replica!.port });
    expect(topo.serverAt(addr)).toBe(replica);
    const info = await client(replica!.port).info('replication');
    expect(info).toMatch(/^role:master/m);
    expect(await client(replica!.port).get('replicated')).toBe('yes');
  });
});

describe('startCluster', () => {
  let topo: ClusterTopology;
  beforeAll(async () => {
    topo = await startCluster({ masters: 3 });
  });
  afterAll(async () => {
    await topo?.close();
  });

  it('is ok on every node with all slots assigned', async () => {
    expect(topo.nodes).toHaveLength(3);
    for (const node of topo.nodes) {
      const info = String(await client(node.port).cluster('INFO'));
      expect(info).toMatch(/^cluster_state:ok/m);
      expect(info).toMatch(/^cluster_slots_assigned:16384/m);
      expect(info).toMatch(/^cluster_known_nodes:3/m);
    }
  });

  it('an ioredis Cluster client writes and reads keys across slots', async () => {
    const cluster = new Cluster(topo.startupNodes, { redisOptions: { maxRetriesPerRequest: 1 } });
    cleanups.push(() => cluster.disconnect());
    const keys = Array.from({ length: 30 }, (_, i) => `key:${i}`);
    for (const k of keys) await cluster.set(k, k.toUpperCase());
    for (const k of keys) expect(await cluster.get(k)).toBe(k.toUpperCase());
    // the keys really are spread over the masters
    const perNode = await Promise.all(topo.nodes.map((n) => client(n.port).dbsize()));
    expect(perNode.filter((n) => n > 0).length).toBe(3);
    expect(perNode.reduce((a, b) => a + b, 0)).toBe(keys.length);
  });
});

describe('startIndependent', () => {
  it('starts three masters on distinct ports', async () => {
    const topo = await startIndependent(3);
    cleanups.push(() => topo.close());
    const ports = topo.nodes.map((n) => n.port);
    expect(new Set(ports).size).toBe(3);
    expect(topo.addrs.map((a) => a.port)).toEqual(ports);
    for (const port of ports) {
      const c = client(port);
      expect(await c.ping()).toBe('PONG');
      expect(await c.info('replication')).toMatch(/^role:master/m);
    }
  });
});

it('leaves no listener behind on the ports it used', async () => {
  const s = await RedisServer.start();
  const port = s.port;
  await s.stop();
  // the port can be bound again right away
  await new Promise<void>((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve()));
  });
});
