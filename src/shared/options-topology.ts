import { checkConnection } from '../redis/connection.js';
import { InvalidOptionError } from './errors.js';
import { describe, number } from './option-values.js';
import {
  defaults,
  type PairedWorkerOptions,
  type ReplicationOptions,
  type ResolvedOptions,
} from './options.js';

/** Where Redis is and how it is written to: `redis` xor `nodes`, and their options. */
export function resolveTopology(
  opts: PairedWorkerOptions,
): Pick<ResolvedOptions, 'replication' | 'clusterPubSub'> {
  if (opts.redis !== undefined && opts.nodes !== undefined) {
    throw new InvalidOptionError(
      'Expected either `redis` (one Redis, Sentinel or Cluster) or `nodes` (quorum mode), not both',
    );
  }
  if (opts.redis !== undefined) checkConnection('redis', opts.redis);
  if (opts.nodes !== undefined) {
    const nodes: unknown = opts.nodes;
    if (!Array.isArray(nodes) || nodes.length < 3 || nodes.length % 2 === 0) {
      const got = Array.isArray(nodes) ? `${nodes.length} node(s)` : describe(nodes);
      throw new InvalidOptionError(
        `Expected \`nodes\` to be an array of an odd number (3 or more; 3 or 5 in practice) of independent Redis masters, got ${got}`,
      );
    }
    nodes.forEach((n: unknown, i) => {
      if (typeof n === 'string' ? n.length === 0 : typeof n !== 'object' || n === null) {
        throw new InvalidOptionError(
          `Expected \`nodes[${i}]\` to be an ioredis client, a URL or ioredis options, got ${describe(n)}`,
        );
      }
      checkConnection(`nodes[${i}]`, n);
    });
    if (opts.replication !== undefined) {
      throw new InvalidOptionError(
        '`replication` applies to `redis` (a replicated Redis); quorum `nodes` are independent masters without replicas to wait for',
      );
    }
  }
  let replication: ResolvedOptions['replication'];
  if (opts.replication !== undefined) {
    const r: unknown = opts.replication;
    if (typeof r !== 'object' || r === null)
      throw new InvalidOptionError('Expected `replication` to be an object');
    const ro = r as ReplicationOptions;
    const onTimeout = ro.onTimeout ?? defaults.replication.onTimeout;
    if (onTimeout !== 'reject' && onTimeout !== 'accept') {
      throw new InvalidOptionError(
        `Expected \`replication.onTimeout\` to be 'reject' or 'accept', got ${describe(onTimeout)}`,
      );
    }
    replication = {
      waitReplicas: number('replication.waitReplicas', ro.waitReplicas, { min: 1 }),
      waitTimeoutMs: number(
        'replication.waitTimeoutMs',
        ro.waitTimeoutMs ?? defaults.replication.waitTimeoutMs,
        {
          min: 1,
        },
      ),
      onTimeout,
    };
  }
  const clusterPubSub = opts.clusterPubSub ?? defaults.clusterPubSub;
  if (clusterPubSub !== 'auto' && clusterPubSub !== 'sharded' && clusterPubSub !== 'classic') {
    throw new InvalidOptionError(
      `Expected \`clusterPubSub\` to be 'auto', 'sharded' or 'classic', got ${describe(clusterPubSub)}`,
    );
  }
  return { replication, clusterPubSub };
}
