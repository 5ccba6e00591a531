/** Helpers of the Redis Cluster tests: a client as a worker would use it, and slot owners. */
import { Cluster, Redis } from 'ioredis';
import type { ClusterTopology } from '../../src/testing/index.js';

/**
 * An ioredis Cluster client from one startup node (it learns the slot map and follows
 * redirections), failing fast as pairlock expects; `cleanup` is given its disconnect.
 */
export function clusterClient(
  topo: ClusterTopology,
  cleanup: (fn: () => Promise<unknown>) => void,
): Cluster {
  const c = new Cluster([topo.startupNodes[0]!], {
    enableOfflineQueue: false,
    redisOptions: { maxRetriesPerRequest: 0 },
  });
  c.on('error', () => {});
  cleanup(async () => c.disconnect());
  return c;
}

/** The master port that owns `slot`. */
export async function ownerOf(topo: ClusterTopology, slot: number): Promise<number> {
  const r = new Redis(topo.startupNodes[0]!);
  try {
    const slots = (await r.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
    const range = slots.find(([lo, hi]) => slot >= lo && slot <= hi);
    if (!range) throw new Error(`slot ${slot} is not served`);
    return Number(range[2][1]);
  } finally {
    r.disconnect();
  }
}
