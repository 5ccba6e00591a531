/**
 * The chaos run's Cluster faults (src/verify/cluster-faults.ts) on a cluster of 3 masters
 * with a replica each: a migration moves the namespaces' slot, keys and all, to another
 * master; a failover hands it to the master's replica; both are logged with their windows.
 */
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keys } from '../../src/redis/keys.js';
import { keySlot } from '../../src/redis/topology-cluster.js';
import { type ClusterTopology, startCluster } from '../../src/testing/index.js';
import { ClusterAdmin, namespaceInSlot } from '../../src/verify/cluster-admin.js';
import { ClusterFaults } from '../../src/verify/cluster-faults.js';
import {
  clusterOnlyFaults,
  connectionFaults,
  defaultFaults,
  type FaultPlan,
  type ParentEntry,
  planFaults,
} from '../../src/verify/common.js';

describe('chaos faults on a Redis Cluster', () => {
  let topo: ClusterTopology;
  let admin: ClusterAdmin;
  let client: Cluster;
  const slot = keySlot(new Keys('pairlock', 'chaos-p0').channel);
  beforeAll(async () => {
    topo = await startCluster({ masters: 3, replicas: 1 });
    admin = new ClusterAdmin(topo.nodes, slot);
    client = new Cluster(topo.startupNodes, { redisOptions: { maxRetriesPerRequest: 3 } });
    client.on('error', () => {});
  });
  afterAll(async () => {
    client?.disconnect();
    admin?.close();
    await topo?.close();
  });

  it('the schedule: migrate and failover only on a cluster, which leaves out restarts', () => {
    const kinds = defaultFaults(1, true, true);
    for (const k of clusterOnlyFaults) {
      expect(kinds).toContain(k);
      expect(connectionFaults).toContain(k);
      expect(defaultFaults(1)).not.toContain(k);
      expect(defaultFaults(3)).not.toContain(k);
      expect(defaultFaults(1, false, true)).not.toContain(k);
    }
    for (const k of ['redis-restart', 'node-loss', 'cut-node', 'slow-minority'] as const)
      expect(kinds).not.toContain(k);
    // a minute at the default gap: several of each
    const plan = planFaults(1, 60_000, 700, kinds, 1);
    expect(plan.filter((f) => f.kind === 'migrate').length).toBeGreaterThanOrEqual(5);
    expect(plan.filter((f) => f.kind === 'failover').length).toBeGreaterThanOrEqual(2);
    expect(keySlot(`{${namespaceInSlot('chaos-p1', slot)}}`)).toBe(slot);
  });

  it('3 masters with a replica each', async () => {
    expect(topo.masters).toHaveLength(3);
    expect(topo.replicas).toHaveLength(3);
    const states = await admin.states();
    expect(states.filter((s) => s.master)).toHaveLength(3);
    const replicas = states.filter((s) => !s.master);
    expect(new Set(replicas.map((r) => r.masterId)).size).toBe(3);
  });

  it('migrate moves the slot with its keys to another master; failover hands it to the replica', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `pairlock:{chaos-p0}:t:k${i}`);
    for (const k of keys) await client.set(k, k);
    const logged: ParentEntry[] = [];
    const skipped: string[] = [];
    let done = 0;
    let busy = false;
    const inFlight: Promise<void>[] = [];
    const faults = new ClusterFaults({
      cluster: admin,
      seed: 5,
      log: (line) => logged.push(line),
      track: (p) => inFlight.push(p),
      nodeBusy: () => busy,
      setNodeBusy: (b) => {
        busy = b;
      },
    });
    const inject = async (f: FaultPlan) => {
      expect(
        faults.start(
          f,
          () => done++,
          (why) => skipped.push(why),
        ),
      ).toBeUndefined();
      // one node fault at a time
      expect(
        faults.start(
          f,
          () => done++,
          (why) => skipped.push(why),
        ),
      ).toMatch(/another/);
      await Promise.all(inFlight.splice(0));
    };

    const before = await admin.owner();
    await inject({ atMs: 1, kind: 'migrate', slot: 0, durationMs: 100 });
    const moved = await admin.owner();
    expect(moved.id).not.toBe(before.id);
    for (const k of keys) expect(await client.get(k)).toBe(k);

    await inject({ atMs: 2, kind: 'failover', slot: 0, durationMs: 10_000 });
    const promoted = await admin.owner();
    expect(promoted.masterId).toBeUndefined();
    expect(promoted.id).not.toBe(moved.id);
    expect((await admin.states()).find((s) => s.id === moved.id)?.master).toBe(false);
    for (const k of keys) expect(await client.get(k)).toBe(k);

    expect(skipped).toEqual([]);
    expect(done).toBe(2);
    const lines = logged.map((l) => (l.ev === 'fault' ? `${l.kind} ${l.phase}` : l.ev));
    expect(lines).toEqual(['migrate start', 'migrate end', 'failover start', 'failover end']);
    const ends = logged.flatMap((l) => (l.ev === 'fault' && l.phase === 'end' ? [l] : []));
    expect(ends[0]?.detail).toMatch(/^moved \d+ keys in \d+ ms/);
    expect(ends[1]?.detail).toMatch(/is master after \d+ ms/);
    // start and end name the same node (the checker pairs them by it)
    expect(logged[0]?.ev === 'fault' && logged[0].node).toBe(
      logged[1]?.ev === 'fault' && logged[1].node,
    );
  });
});
