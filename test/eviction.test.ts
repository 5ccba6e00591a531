/**
 * Eviction (src/redis/eviction.ts) on a real redis-server: a worker reads `maxmemory-policy` at
 * start and warns (or refuses, option `evictionCheck`) when Redis may evict its keys;
 * `pairlock stats` and the verify preflight show the policy; and with `noeviction` and a
 * full memory, a run() fails at once (ERR_REDIS_OOM), before anything is granted.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Cluster, Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/program.js';
import {
  EvictionPolicyError,
  InvalidOptionError,
  type Logger,
  PairedWorker,
  type PairedWorkerOptions,
  RedisOutOfMemoryError,
} from '../src/index.js';
import { parseMemoryInfo } from '../src/redis/eviction.js';
import { Keys } from '../src/redis/keys.js';
import { keySlot } from '../src/redis/topology-cluster.js';
import { RedisServer, startCluster, startIndependent } from '../src/testing/index.js';
import { evictionLine } from '../src/verify/preflight.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let server: RedisServer;
let admin: Redis;
let seq = 0;
const workers: PairedWorker[] = [];

beforeAll(async () => {
  server = await RedisServer.start({
    args: ['--maxmemory', '2mb', '--maxmemory-policy', 'volatile-ttl'],
  });
  admin = new Redis(server.url);
});
afterEach(async () => {
  await Promise.allSettled(workers.splice(0).map((w) => w.close()));
  await admin.config('SET', 'maxmemory', '2mb');
  await admin.config('SET', 'maxmemory-policy', 'volatile-ttl');
  await admin.flushall();
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

function capture(): Logger & { lines: { level: string; msg: string; obj: object }[] } {
  const lines: { level: string; msg: string; obj: object }[] = [];
  const at =
    (level: string) =>
    (obj: object, msg = '') =>
      lines.push({ level, msg, obj });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

function worker(extra: Partial<PairedWorkerOptions> = {}): PairedWorker {
  const w = new PairedWorker({
    redis: server.url,
    namespace: `ev-${++seq}`,
    name: 'w',
    sessionTtlMs: 2_000,
    connectTimeoutMs: 2_000,
    unavailableTimeoutMs: 3_000,
    ...extra,
  });
  workers.push(w);
  return w;
}

async function until(ok: () => boolean, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms`);
    await sleep(10);
  }
}

const evictionLines = (log: ReturnType<typeof capture>) =>
  log.lines.filter((l) => /maxmemory-policy/.test(l.msg));

describe('the check at start', () => {
  it('an evicting policy: one warning naming the policy, the risk and the fix', async () => {
    const log = capture();
    const w = worker({ logger: log });
    await w.start();
    await until(() => evictionLines(log).length > 0);
    const [line] = evictionLines(log);
    expect(line?.level).toBe('warn');
    expect(line?.msg).toContain(
      `Redis at 127.0.0.1:${server.port} has maxmemory-policy volatile-ttl`,
    );
    expect(line?.msg).toContain('maxmemory 2097152 bytes');
    expect(line?.msg).toMatch(/session key/);
    expect(line?.msg).toMatch(/peer takes over tasks whose holder is alive/);
    expect(line?.msg).toMatch(/fencing token back at 1/);
    expect(line?.msg).toContain('`maxmemory-policy noeviction`');
    expect(line?.msg).toMatch(/dedicated to pairlock/);
    expect(line?.obj).toEqual({
      nodes: [
        {
          node: `Redis at 127.0.0.1:${server.port}`,
          policy: 'volatile-ttl',
          maxmemory: 2097152,
        },
      ],
    });
    // the worker works, and says it once per start
    expect(await w.run('t', () => 1)).toMatchObject({ state: 'done', result: 1 });
    await sleep(50);
    expect(evictionLines(log)).toHaveLength(1);
  });

  it('the policy alone decides: with maxmemory 0 it warns too, and says why', async () => {
    await admin.config('SET', 'maxmemory', '0');
    await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
    const log = capture();
    await worker({ logger: log }).start();
    await until(() => evictionLines(log).length > 0);
    expect(evictionLines(log)[0]?.level).toBe('warn');
    expect(evictionLines(log)[0]?.msg).toMatch(
      /allkeys-lru \(maxmemory 0: nothing is evicted until a limit is set, and CONFIG SET maxmemory sets one at once\)/,
    );
  });

  it("evictionCheck 'refuse': start() and run() reject with EvictionPolicyError, and nothing is written", async () => {
    const log = capture();
    const w = worker({ logger: log, evictionCheck: 'refuse' });
    const err = await w.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EvictionPolicyError);
    expect((err as EvictionPolicyError).code).toBe('ERR_EVICTION_POLICY');
    expect((err as EvictionPolicyError).message).toMatch(
      /^refusing to start \(option `evictionCheck: 'refuse'`\): Redis at .* has maxmemory-policy volatile-ttl/,
    );
    expect((err as EvictionPolicyError).nodes).toEqual([
      expect.objectContaining({ policy: 'volatile-ttl', maxmemory: 2097152 }),
    ]);
    await expect(w.run('t', () => 1)).rejects.toBeInstanceOf(EvictionPolicyError);
    // no session was opened
    expect(await admin.keys(`pairlock:{${w.options.namespace}}:*`)).toEqual([]);
    // and once the server is fixed, the same worker starts
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    expect(await w.run('t', () => 2)).toMatchObject({ state: 'done', result: 2 });
    expect(evictionLines(log)).toEqual([]);
  });

  it("noeviction: no warning; evictionCheck 'off': no INFO sent at all", async () => {
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    const log = capture();
    const w = worker({ logger: log });
    await w.start();
    expect(await w.run('t', () => 1)).toMatchObject({ state: 'done' });
    expect(evictionLines(log)).toEqual([]);

    await admin.config('SET', 'maxmemory-policy', 'volatile-lru');
    await admin.config('RESETSTAT');
    const off = capture();
    const quiet = worker({ logger: off, evictionCheck: 'off', connectionBound: false });
    await quiet.start();
    expect(await quiet.run('t', () => 1)).toMatchObject({ state: 'done' });
    expect(evictionLines(off)).toEqual([]);
    // ioredis' ready check sends INFO without a section; the eviction check sends INFO memory
    const stats = await admin.info('commandstats');
    const infoCalls = Number(/cmdstat_info:calls=(\d+)/.exec(stats)?.[1] ?? 0);
    expect(infoCalls).toBeLessThanOrEqual(2); // the worker's two connections' ready checks
  });

  it('the option is validated like the others', () => {
    expect(() => worker({ evictionCheck: 'never' as 'off' })).toThrow(InvalidOptionError);
    expect(() => worker({ evictionCheck: 'never' as 'off' })).toThrow(
      "Expected `evictionCheck` to be 'warn', 'refuse' or 'off', got `never` (string)",
    );
    expect(worker().options.evictionCheck).toBe('warn');
  });

  it('parses INFO memory', () => {
    expect(
      parseMemoryInfo(
        '# Memory\r\nused_memory:1\r\nmaxmemory:100\r\nmaxmemory_policy:allkeys-lfu\r\n',
      ),
    ).toEqual({ policy: 'allkeys-lfu', maxmemory: 100 });
    expect(parseMemoryInfo('# Memory\r\nused_memory:1\r\n')).toBeUndefined();
  });
});

describe('every node the worker coordinates through', () => {
  it('quorum mode: each node; the warning names only the evicting one', async () => {
    const topo = await startIndependent(3);
    try {
      const evicting = topo.nodes[1] as RedisServer;
      const c = new Redis(evicting.url);
      await c.config('SET', 'maxmemory-policy', 'allkeys-lfu');
      c.disconnect();
      const log = capture();
      const w = worker({ redis: undefined, nodes: topo.nodes.map((n) => n.url), logger: log });
      expect(await w.run('t', () => 1)).toMatchObject({ state: 'done' });
      await until(() => evictionLines(log).length > 0);
      const lines = evictionLines(log);
      expect(lines).toHaveLength(1);
      expect(lines[0]?.msg).toMatch(
        new RegExp(
          `^pairlock: Redis at 127\\.0\\.0\\.1:${evicting.port} has maxmemory-policy allkeys-lfu \\(maxmemory 0`,
        ),
      );
      expect(lines[0]?.obj).toEqual({
        nodes: [expect.objectContaining({ policy: 'allkeys-lfu' })],
      });
      await w.close();
    } finally {
      await topo.close();
    }
  });

  it("a Cluster: the master of the namespace's slot", async () => {
    const topo = await startCluster({ masters: 3 });
    const cluster = new Cluster([topo.startupNodes[0] as { host: string; port: number }]);
    cluster.on('error', () => {});
    try {
      const ns = `ev-cluster-${++seq}`;
      const log = capture();
      const w = worker({ redis: cluster, namespace: ns, logger: log, evictionCheck: 'refuse' });
      // every other master evicts: the namespace's own master decides
      await cluster.info(); // slots known
      const slot = keySlot(`{${ns}}`);
      const owner = cluster.slots[slot]?.[0];
      for (const n of cluster.nodes('master'))
        if (`${n.options.host}:${n.options.port}` !== owner)
          await n.config('SET', 'maxmemory-policy', 'volatile-ttl');
      expect(await w.run('t', () => 1)).toMatchObject({ state: 'done' });
      expect(evictionLines(log)).toEqual([]);
      // and when it evicts, that master is named
      const own = cluster
        .nodes('master')
        .find((n) => `${n.options.host}:${n.options.port}` === owner);
      await own?.config('SET', 'maxmemory-policy', 'volatile-ttl');
      const other = worker({ redis: cluster, namespace: ns, name: 'x', evictionCheck: 'refuse' });
      const err = (await other.start().catch((e: unknown) => e)) as EvictionPolicyError;
      expect(err).toBeInstanceOf(EvictionPolicyError);
      expect(err.nodes).toEqual([
        { node: `Redis at ${owner} (slot ${slot})`, policy: 'volatile-ttl', maxmemory: 0 },
      ]);
      await Promise.allSettled([w.close(), other.close()]);
    } finally {
      cluster.disconnect();
      await topo.close();
    }
  }, 60_000);
});

describe('a Redis user without INFO (docs/security.md)', () => {
  const doc = readFileSync(path.join(root, 'docs/security.md'), 'utf8');
  const line = /^ACL SETUSER pairlock (.+)$/m.exec(doc)?.[1] ?? '';
  const rules = line.split(/\s+/).filter((r) => r !== '' && !r.startsWith('>') && r !== '+info');

  it('the policy cannot be read: said once at info level, and the worker runs', async () => {
    await admin.acl('SETUSER', 'ev-no-info', 'reset', '>secret', ...rules);
    const conn = {
      host: server.host,
      port: server.port,
      username: 'ev-no-info',
      password: 'secret',
    };
    const warn = console.warn;
    console.warn = () => {}; // ioredis: "Skipping the ready check because INFO command fails"
    try {
      const log = capture();
      const w = worker({ redis: conn, logger: log, evictionCheck: 'refuse' });
      expect(await w.run('t', () => 1)).toMatchObject({ state: 'done' });
      const lines = evictionLines(log);
      expect(lines).toHaveLength(1);
      expect(lines[0]?.level).toBe('info');
      expect(lines[0]?.msg).toMatch(/could not read maxmemory-policy .*NOPERM/);

      // set up to send no INFO at all: the check sends none either (a clean ACL log)
      await admin.acl('LOG', 'RESET');
      const quiet = capture();
      const q = worker({
        redis: { ...conn, enableReadyCheck: false },
        logger: quiet,
        connectionBound: false,
      });
      expect(await q.run('t', () => 1)).toMatchObject({ state: 'done' });
      expect(evictionLines(quiet)[0]?.msg).toMatch(/enableReadyCheck: false .* INFO is not sent/);
      const denied = (await admin.acl('LOG')) as unknown[][];
      expect(denied.map((e) => String(e[e.indexOf('object') + 1]))).not.toContain('info');
    } finally {
      console.warn = warn;
    }
  });
});

describe('pairlock stats and the verify preflight show the policy', () => {
  async function stats(ns: string): Promise<{ out: string[]; err: string[]; code: number }> {
    const out: string[] = [];
    const err: string[] = [];
    const argv = ['node', 'pairlock', '--redis', server.url, '--namespace', ns, 'stats'];
    const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
    const json: string[] = [];
    await main([...argv, '--json'], { out: (l) => json.push(l), err: (l) => err.push(l) });
    return { out: [...out, ...json], err, code };
  }

  it('flagged when it is not noeviction', async () => {
    const s = await stats('ev-stats');
    expect(s.code).toBe(0);
    expect(s.out).toContain(
      'maxmemory-policy: volatile-ttl (maxmemory 2097152 bytes) — EVICTING: when memory runs out Redis may delete sessions (a live holder is taken over) and task records (tokens start again at 1); set maxmemory-policy noeviction (docs/operations.md#eviction)',
    );
    const json = JSON.parse(s.out.at(-1) ?? '{}') as { eviction: unknown };
    expect(json.eviction).toEqual([
      {
        node: `127.0.0.1:${server.port}`,
        policy: 'volatile-ttl',
        maxmemory: 2097152,
        evicting: true,
      },
    ]);

    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '0');
    const ok = await stats('ev-stats');
    expect(ok.out).toContain('maxmemory-policy: noeviction (no maxmemory)');
  });

  it('verify: a line per node', async () => {
    const client = new Redis(server.url);
    try {
      const node = {
        label: `127.0.0.1:${server.port}`,
        host: server.host,
        port: server.port,
        options: {},
      };
      expect(await evictionLine(client, node)).toMatch(
        new RegExp(
          `^127\\.0\\.0\\.1:${server.port}: maxmemory-policy volatile-ttl \\(maxmemory 2097152 bytes\\) — EVICTING: `,
        ),
      );
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      expect(await evictionLine(client, node)).toBe(
        `127.0.0.1:${server.port}: maxmemory-policy noeviction (maxmemory 2097152 bytes)`,
      );
    } finally {
      client.disconnect();
    }
  });
});

describe('noeviction with a full memory', () => {
  /**
   * Other data (a shared Redis), and a limit below what is used now: every write that may
   * grow memory is refused.
   */
  async function memoryFull(): Promise<void> {
    await admin.config('SET', 'maxmemory', '0');
    for (let i = 0; i < 100; i++) await admin.set(`app:fill:${i}`, 'x'.repeat(10_000));
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
    await admin.config('SET', 'maxmemory', String(Math.floor(used / 2)));
    await expect(admin.set('app:one-more', 'x')).rejects.toThrow(/^OOM/);
  }

  it('run() fails at once with ERR_REDIS_OOM before granting: the handler never runs, nothing is written, nothing retried', async () => {
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    const log = capture();
    // not connection-bound: a rebind of the binding (its grace grown on a loaded machine)
    // would be refused for memory too, retried on its own (the test below); this one
    // counts the claim's refusals alone
    const opts = {
      logger: log,
      taskTimeoutMs: 1_500,
      firstAttemptIntervalMs: 200,
      connectionBound: false,
    };
    const a = worker({ ...opts, name: 'a' });
    expect(await a.run('before', () => 'kept')).toMatchObject({ state: 'done', token: 1 });
    await memoryFull();
    const errors = async () =>
      Number(/errorstat_OOM:count=(\d+)/.exec(await admin.info('errorstats'))?.[1] ?? 0);
    const oomBefore = await errors();
    let ran = 0;
    const t0 = Date.now();
    const err = await a
      .run('after', () => {
        ran += 1;
        return 'lost';
      })
      .catch((e: unknown) => e);
    // the claim is refused whole at its first write (the session's refresh, a SET, which
    // Redis checks against maxmemory): nothing granted, the handler never ran
    expect(err).toBeInstanceOf(RedisOutOfMemoryError);
    expect(err).toMatchObject({ code: 'ERR_REDIS_OOM' });
    expect((err as Error).message).toMatch(/out of memory .*OOM command not allowed/);
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(ran).toBe(0);
    // no retry loop: Redis refuses nothing more
    const oomAfter = await errors();
    expect(oomAfter).toBeGreaterThan(oomBefore);
    await sleep(500);
    expect(await errors()).toBe(oomAfter);
    // nothing half-written: the settled record is intact, and no grant was left behind
    expect(await a.inspect('before')).toMatchObject({ state: 'done', token: 1, result: 'kept' });
    expect(await a.inspect('after')).toBeNull();

    // memory back: the task runs at once, from token 1
    await admin.config('SET', 'maxmemory', '0');
    const b = worker({ ...opts, name: 'b', namespace: a.options.namespace });
    expect(await b.run('after', () => 'done')).toMatchObject({
      state: 'done',
      role: 'ran',
      result: 'done',
      token: 1,
    });
  });

  it('a rebind refused for memory keeps connection-bound sessions on: retried, and bound again once memory is back', async () => {
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '0');
    const log = capture();
    const a = worker({ logger: log, name: 'a' });
    await a.start();
    const keys = new Keys('pairlock', a.options.namespace);
    const epochOf = async () =>
      Number(/^\w+\|(\d+)\|/.exec((await admin.get(keys.bind(a.session))) ?? '')?.[1] ?? 0);
    await vi.waitFor(async () => expect(await epochOf()).toBeGreaterThan(0), { timeout: 5_000 });
    const before = await epochOf();
    await memoryFull();
    // the subscriber's connection closes: unbound (a DEL, allowed), then bound again on the
    // new connection, which Redis refuses for memory
    await admin.client('KILL', 'TYPE', 'pubsub');
    const said = (text: string) => log.lines.filter((l) => l.msg.includes(text));
    await vi.waitFor(
      () => expect(said('connection binding failed; retrying').length).toBeGreaterThan(0),
      { timeout: 5_000 },
    );
    expect(await admin.exists(keys.bind(a.session))).toBe(0);
    // memory back: bound again, on a newer epoch; never said to be off
    await admin.config('SET', 'maxmemory', '0');
    await vi.waitFor(async () => expect(await epochOf()).toBeGreaterThan(before), {
      timeout: 5_000,
    });
    expect(said('connection-bound sessions are off')).toEqual([]);
  });
});
