/**
 * Eviction. With `maxmemory` set and an evicting `maxmemory-policy` (volatile-*, allkeys-*),
 * a Redis that runs out of memory deletes keys to make room, pairlock's among them: a
 * worker's session key (sessions have the namespace's shortest TTLs: volatile-ttl takes them
 * first), after which the peer takes over tasks whose holder is alive and running them; or
 * a task record, after which the task's fencing token starts again at 1. Only `noeviction`
 * (writes fail with an OOM error instead) keeps them.
 *
 * At start every worker reads the policy of each node it coordinates through with
 * `INFO memory` (CONFIG may be denied by ACLs; INFO is granted already, docs/security.md)
 * and warns, refuses to start, or does nothing: option `evictionCheck`. The policy alone
 * decides, as in BullMQ: with `maxmemory 0` nothing is evicted yet, but a later
 * `CONFIG SET maxmemory` starts eviction at once, without restarting anyone.
 * `pairlock stats` and `pairlock verify` show the policy too.
 */
import { Cluster, type Redis } from 'ioredis';
import { EvictionPolicyError } from '../shared/errors.js';
import type { EvictionCheck, Logger } from '../shared/options.js';
import { describeClient, withTimeout } from './connection.js';
import type { Keys } from './keys.js';
import { QuorumStore } from './quorum.js';
import { RedisStore, type Store } from './store.js';
import { keySlot } from './topology-cluster.js';

export type { EvictionCheck } from '../shared/options.js';

/** The eviction settings of one Redis server, from `INFO memory`. */
export interface MemoryPolicy {
  /** `maxmemory_policy`, e.g. 'noeviction', 'volatile-ttl', 'allkeys-lru'. */
  policy: string;
  /** `maxmemory` in bytes; 0: no limit (nothing is evicted until one is set). */
  maxmemory: number;
}

/** The policy of one node, as the check found it. */
export interface NodePolicy extends MemoryPolicy {
  node: string;
}

/** Whether a policy lets Redis delete keys when memory runs out. */
export function evicts(policy: string): boolean {
  return policy !== 'noeviction';
}

/** `maxmemory_policy` and `maxmemory` of an INFO reply; undefined when the policy is absent. */
export function parseMemoryInfo(info: string): MemoryPolicy | undefined {
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim();
  const policy = field('maxmemory_policy');
  if (!policy) return undefined;
  return { policy, maxmemory: Number(field('maxmemory') ?? 0) || 0 };
}

/** `INFO memory` of one server, within `timeoutMs`. */
export async function readPolicy(
  client: Redis | Cluster,
  timeoutMs: number,
): Promise<MemoryPolicy> {
  const info = await withTimeout(
    client.info('memory'),
    timeoutMs,
    () => `${describeClient(client)} did not answer INFO within ${timeoutMs} ms`,
  );
  const p = parseMemoryInfo(info);
  if (!p) throw new Error('INFO memory has no maxmemory_policy field');
  return p;
}

/** e.g. `volatile-ttl (maxmemory 2097152 bytes)`, `noeviction (no maxmemory)`. */
export function formatPolicy(p: MemoryPolicy): string {
  return `${p.policy} (${p.maxmemory > 0 ? `maxmemory ${p.maxmemory} bytes` : 'no maxmemory'})`;
}

/** The flag `pairlock stats` and `pairlock verify` put after an evicting policy. */
export const EVICTING_FLAG =
  'EVICTING: when memory runs out Redis may delete sessions (a live holder is taken over) and task records (tokens start again at 1); set maxmemory-policy noeviction (docs/operations.md#eviction)';

/** The risk and the fix, for the warning and the error. */
function explain(found: readonly NodePolicy[]): string {
  const where = found
    .map(
      (p) =>
        `${p.node} has maxmemory-policy ${p.policy}${
          p.maxmemory > 0
            ? ` (maxmemory ${p.maxmemory} bytes)`
            : ' (maxmemory 0: nothing is evicted until a limit is set, and CONFIG SET maxmemory sets one at once)'
        }`,
    )
    .join('; ');
  return `${where}. When it runs out of memory, Redis may evict pairlock's keys: a worker's session key (sessions have the shortest TTLs), after which its peer takes over tasks whose holder is alive and still running them; or a task record, after which the task may run again with its fencing token back at 1. Set \`maxmemory-policy noeviction\` on a Redis dedicated to pairlock (another database number on the same server shares its memory and policy); see docs/operations.md#eviction.`;
}

interface Target {
  label: string;
  client: Redis | Cluster;
  /** Whether this worker sends INFO there anyway (see checkEviction). */
  sendsInfo: boolean;
  /** Skip it unless connected (a quorum node that is away must not delay the start). */
  connected: boolean;
}

/** The server of a Cluster that serves the namespace's slot (any master if unknown). */
function slotOwner(cluster: Cluster, keys: Keys): { label: string; client: Redis } | undefined {
  const slot = keySlot(keys.channel);
  const owner = cluster.slots[slot]?.[0];
  const masters = cluster.nodes('master');
  const node = masters.find((n) => `${n.options.host}:${n.options.port}` === owner) ?? masters[0];
  if (!node) return undefined;
  return {
    label: `Redis at ${node.options.host}:${node.options.port} (slot ${slot})`,
    client: node,
  };
}

function targetsOf(store: RedisStore, keys: Keys, bound: boolean): Target[] {
  const c = store.client;
  if (c instanceof Cluster) {
    const owner = slotOwner(c, keys);
    if (!owner) return [];
    const sendsInfo = owner.client.options.enableReadyCheck !== false || bound;
    return [{ ...owner, sendsInfo, connected: true }];
  }
  return [
    {
      label: describeClient(c),
      client: c,
      sendsInfo: c.options.enableReadyCheck !== false || bound,
      connected: c.status === 'ready',
    },
  ];
}

/**
 * Read the policy of every node the worker coordinates through: one Redis (on Sentinel,
 * the master it is connected to now), on a Cluster the master of the namespace's slot, in
 * quorum mode each connected node. An evicting policy is logged as a warning (`warn`) or
 * refused with EvictionPolicyError (`refuse`). A node whose policy cannot be read (INFO
 * denied, no answer) is named once at info level and the start goes on.
 *
 * INFO is sent only where the worker already relies on it: ioredis' ready check
 * (`enableReadyCheck`, on by default) or connection-bound sessions, whose scripts read
 * INFO. A client set up to send no INFO at all (docs/security.md: a user without `+info`)
 * is not checked, so that its ACL log stays clean.
 */
export async function checkEviction(ctx: {
  store: Store;
  keys: Keys;
  mode: EvictionCheck;
  connectionBound: boolean;
  timeoutMs: number;
  logger: Logger;
}): Promise<void> {
  const { store, keys, mode, timeoutMs, logger } = ctx;
  if (mode === 'off') return;
  const targets =
    store instanceof QuorumStore
      ? store.nodes.flatMap((n) => targetsOf(n, keys, false))
      : store instanceof RedisStore
        ? targetsOf(store, keys, ctx.connectionBound)
        : [];
  const found: NodePolicy[] = [];
  const unread: string[] = [];
  await Promise.all(
    targets.map(async (t) => {
      if (!t.sendsInfo) {
        unread.push(
          `${t.label} (enableReadyCheck: false and no connection-bound sessions: INFO is not sent)`,
        );
        return;
      }
      if (!t.connected) {
        unread.push(`${t.label} (not connected)`);
        return;
      }
      try {
        found.push({ node: t.label, ...(await readPolicy(t.client, timeoutMs)) });
      } catch (err) {
        unread.push(`${t.label} (${(err as Error)?.message ?? String(err)})`);
      }
    }),
  );
  if (unread.length > 0) {
    logger.info(
      { nodes: unread },
      `pairlock: could not read maxmemory-policy (INFO memory) of ${unread.join(', ')}; eviction is not checked there (docs/operations.md#eviction)`,
    );
  }
  const evicting = found.filter((p) => evicts(p.policy));
  if (evicting.length === 0) return;
  const text = explain(evicting);
  if (mode === 'refuse') {
    throw new EvictionPolicyError(
      `refusing to start (option \`evictionCheck: 'refuse'\`): ${text}`,
      evicting,
    );
  }
  logger.warn(
    { nodes: evicting },
    `pairlock: ${text} Option \`evictionCheck\`: 'refuse' refuses to start on such a Redis, 'off' skips this check.`,
  );
}
