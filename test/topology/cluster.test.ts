/**
 * Redis Cluster: a namespace is one hash slot (every key, the sessions built inside Lua
 * included, carries the namespace as its hash tag), namespaces spread over the shards, and
 * namespace events travel by sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7) in the shard
 * that owns the slot. A slot that moves to another shard (MOVED/ASK) takes its workers and
 * their event subscription with it.
 */
import { type Cluster, Redis } from 'ioredis';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type Outcome, PairedWorker, type PairedWorkerOptions } from '../../src/index.js';
import { Keys } from '../../src/redis/keys.js';
import { keySlot } from '../../src/redis/topology-cluster.js';
import { type ClusterTopology, startCluster } from '../../src/testing/index.js';
import { clusterClient, ownerOf } from '../support/cluster.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {});
});

async function cluster(): Promise<ClusterTopology> {
  const topo = await startCluster({ masters: 3 });
  cleanup.push(() => topo.close());
  return topo;
}

function client(topo: ClusterTopology): Cluster {
  return clusterClient(topo, (fn) => cleanup.push(fn));
}

function worker(
  topo: ClusterTopology,
  ns: string,
  name: string,
  extra: Partial<PairedWorkerOptions> = {},
) {
  const w = new PairedWorker({
    redis: client(topo),
    namespace: ns,
    name,
    sessionTtlMs: 1_000,
    firstAttemptIntervalMs: 5_000,
    otherAttemptIntervalMs: 5_000,
    ...extra,
  });
  cleanup.push(() => w.close());
  return w;
}

async function nodeId(port: number): Promise<string> {
  const r = new Redis({ port, host: '127.0.0.1' });
  try {
    return String(await r.call('CLUSTER', 'MYID'));
  } finally {
    r.disconnect();
  }
}

/** Namespaces whose slots are owned by distinct masters, one per master. */
async function namespacesOnEveryShard(topo: ClusterTopology): Promise<string[]> {
  const byOwner = new Map<number, string>();
  for (let i = 0; byOwner.size < topo.nodes.length && i < 1_000; i++) {
    const ns = `shard-${i}`;
    const owner = await ownerOf(topo, keySlot(`{${ns}}`));
    if (!byOwner.has(owner)) byOwner.set(owner, ns);
  }
  return [...byOwner.values()];
}

/** Both workers run `n` tasks; task i starts after i * spacingMs. */
async function pairRun(a: PairedWorker, b: PairedWorker, n: number, prefix: string, spacingMs = 0) {
  const runs = new Map<string, number>();
  const handler = async ({ taskId, token }: { taskId: string; token: number }) => {
    runs.set(taskId, (runs.get(taskId) ?? 0) + 1);
    await sleep(1);
    return { taskId, token };
  };
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  const results = await Promise.all(
    ids.map(async (id, i) => {
      if (spacingMs > 0) await sleep(i * spacingMs);
      return Promise.all([a.run(id, handler), b.run(id, handler)]) as Promise<[Outcome, Outcome]>;
    }),
  );
  for (const [x, y] of results) {
    expect(x.state).toBe('done');
    expect(y).toMatchObject({ state: 'done', token: x.token, worker: x.worker, result: x.result });
    expect([x.role, y.role].sort()).toEqual(['ran', 'watched']);
  }
  expect(runs.size).toBe(n);
  for (const [id, count] of runs) expect(count, `runs of ${id}`).toBe(1);
}

describe('Redis Cluster (3 masters)', () => {
  it('pairs in namespaces on every shard: each task runs once, both sides agree; events by sharded pub/sub', async () => {
    const topo = await cluster();
    const namespaces = await namespacesOnEveryShard(topo);
    expect(namespaces).toHaveLength(3);
    const events = new Map<string, number>();
    const pairs = namespaces.map((ns) => {
      const a = worker(topo, ns, 'a');
      const b = worker(topo, ns, 'b');
      for (const w of [a, b])
        w.on('namespace-event', () => events.set(ns, (events.get(ns) ?? 0) + 1));
      return { ns, a, b };
    });
    // every worker subscribed before the first task (see the 'classic' test below)
    await Promise.all(pairs.flatMap(({ a, b }) => [a.start(), b.start()]));
    await Promise.all(pairs.map(({ ns, a, b }) => pairRun(a, b, 150, ns)));

    const owners = await Promise.all(namespaces.map((ns) => ownerOf(topo, keySlot(`{${ns}}`))));
    expect(new Set(owners).size).toBe(3); // three namespaces, three shards
    for (const [i, ns] of namespaces.entries()) {
      const keys = new Keys('pairlock', ns);
      const owner = new Redis({ host: '127.0.0.1', port: owners[i]! });
      try {
        // the records and the sessions (built inside Lua) are all in the namespace's slot
        expect(
          Number(await owner.call('CLUSTER', 'COUNTKEYSINSLOT', keySlot(keys.channel))),
        ).toBeGreaterThan(150);
        expect(await owner.exists(keys.task(`${ns}-0`).container)).toBe(1);
        // both workers listen on the owning shard (sharded subscription)
        const [, subscribers] = (await owner.call('PUBSUB', 'SHARDNUMSUB', keys.channel)) as [
          string,
          number,
        ];
        expect(Number(subscribers)).toBe(2);
      } finally {
        owner.disconnect();
      }
      // events cross the cluster bus after the scripts' replies: wait for them, boundedly
      await vi.waitFor(
        () => expect(events.get(ns) ?? 0, `events seen in ${ns}`).toBeGreaterThan(0),
        { timeout: 5_000, interval: 20 },
      );
    }
  });

  it("clusterPubSub 'classic': events by PUBLISH, which every node relays", async () => {
    const topo = await cluster();
    const [ns] = await namespacesOnEveryShard(topo);
    const a = worker(topo, ns!, 'a', { clusterPubSub: 'classic' });
    const b = worker(topo, ns!, 'b', { clusterPubSub: 'classic' });
    let seen = 0;
    b.on('namespace-event', () => {
      seen += 1;
    });
    // subscribed before the first task: otherwise a may settle every task before b listens
    await Promise.all([a.start(), b.start()]);
    await pairRun(a, b, 50, 'classic');
    // a PUBLISH inside a script reaches the subscriber's node over the cluster bus, after
    // the script's reply
    await vi.waitFor(() => expect(seen).toBeGreaterThan(0), { timeout: 5_000, interval: 20 });
  });

  it('the slot of a namespace moves to another shard mid-run (ASK, then MOVED): work and events follow it', async () => {
    const topo = await cluster();
    const [ns] = await namespacesOnEveryShard(topo);
    const keys = new Keys('pairlock', ns!);
    const slot = keySlot(keys.channel);
    const a = worker(topo, ns!, 'a');
    const b = worker(topo, ns!, 'b');
    await pairRun(a, b, 30, 'before');

    const srcPort = await ownerOf(topo, slot);
    const dstPort = topo.nodes.find((n) => n.port !== srcPort)!.port;
    const [srcId, dstId] = await Promise.all([nodeId(srcPort), nodeId(dstPort)]);
    const src = new Redis({ host: '127.0.0.1', port: srcPort });
    const dst = new Redis({ host: '127.0.0.1', port: dstPort });
    cleanup.push(async () => {
      src.disconnect();
      dst.disconnect();
    });
    // the resharding protocol of redis-cli --cluster, for one slot, while the pair works on
    const during = pairRun(a, b, 60, 'during', 15);
    await sleep(150);
    await dst.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', srcId);
    await src.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dstId);
    for (let round = 0; round < 100; round++) {
      const batch = (await src.call('CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[];
      if (batch.length === 0) break;
      await src.call('MIGRATE', '127.0.0.1', dstPort, '', 0, 5_000, 'REPLACE', 'KEYS', ...batch);
    }
    for (const n of topo.nodes) {
      const r = new Redis({ host: '127.0.0.1', port: n.port });
      await r.call('CLUSTER', 'SETSLOT', slot, 'NODE', dstId);
      r.disconnect();
    }
    await during;
    expect(await ownerOf(topo, slot)).toBe(dstPort);

    // after the move: the subscriptions followed the slot, and events arrive from the new owner
    let seen = 0;
    b.on('namespace-event', () => {
      seen += 1;
    });
    for (let i = 0; i < 200; i++) {
      const [, subscribers] = (await dst.call('PUBSUB', 'SHARDNUMSUB', keys.channel)) as [
        string,
        number,
      ];
      if (Number(subscribers) === 2) break;
      await sleep(25);
    }
    const [, subscribers] = (await dst.call('PUBSUB', 'SHARDNUMSUB', keys.channel)) as [
      string,
      number,
    ];
    expect(Number(subscribers)).toBe(2);
    await pairRun(a, b, 30, 'after');
    expect(seen).toBeGreaterThan(0);
  });
});
