import type { PairedWorkerOptions, ResolvedOptions } from '../shared/options.js';
import { missingConnectionError } from './connection.js';
import type { Keys } from './keys.js';
import { QuorumStore } from './quorum.js';
import { RedisStore, type Store } from './store.js';

/**
 * The store of a worker, by topology: `nodes` (quorum over independent masters) or `redis`
 * (one Redis, Sentinel-managed or not, or a Cluster).
 */
export function createStore(
  opts: PairedWorkerOptions,
  options: ResolvedOptions,
  keys: Keys,
): Store {
  if (opts.nodes !== undefined)
    return new QuorumStore(opts.nodes, keys, options.connectTimeoutMs, options.historyLength);
  if (opts.redis === undefined) throw missingConnectionError();
  return new RedisStore(opts.redis, keys, options.connectTimeoutMs, {
    ...(options.replication ? { replication: options.replication } : {}),
    pubsub: options.clusterPubSub,
    historyLength: options.historyLength,
  });
}
