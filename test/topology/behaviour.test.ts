/**
 * The behavioural suite of a worker pair, run on every high-availability topology: the
 * same expectations as on a single Redis.
 */
import type { RedisOptions } from 'ioredis';
import { startCluster, startIndependent, startReplicated } from '../../src/testing/index.js';
import { defineBehaviourSuite } from '../behaviour/suite.js';

defineBehaviourSuite('quorum of 3 independent masters', async () => {
  const topo = await startIndependent(3);
  return {
    workerOptions: () => ({ nodes: topo.nodes.map((n) => n.url) }),
    close: () => topo.close(),
  };
});

defineBehaviourSuite('Sentinel (master, replica, 3 sentinels)', async () => {
  const topo = await startReplicated({ replicas: 1, sentinels: 3 });
  const redis: RedisOptions = { sentinels: topo.sentinelAddrs, name: topo.masterName };
  return { workerOptions: () => ({ redis }), close: () => topo.close() };
});

defineBehaviourSuite('Redis Cluster (3 masters)', async () => {
  const topo = await startCluster({ masters: 3 });
  const { Cluster } = await import('ioredis');
  const clients: InstanceType<typeof Cluster>[] = [];
  return {
    workerOptions: () => {
      const c = new Cluster(topo.startupNodes, {
        enableOfflineQueue: false,
        redisOptions: { maxRetriesPerRequest: 0 },
      });
      clients.push(c);
      return { redis: c };
    },
    close: async () => {
      for (const c of clients) c.disconnect();
      await topo.close();
    },
  };
});
