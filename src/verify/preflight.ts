/**
 * What `pairlock verify` checks before it runs, and how it cleans up after: each node is
 * reachable and near enough for the run's short leases, the Redis user may run every command
 * the workers and the run send, and the namespace holds no key the run did not write. At the
 * end every key of the namespace (all written by the run) is deleted.
 */

import { Redis } from 'ioredis';
import { EVICTING_FLAG, evicts, formatPolicy, readPolicy } from '../redis/eviction.js';
import { loadScripts } from '../redis/scripts.js';
import { connectClient } from '../redis/store.js';
import type { CoordNode } from './run.js';

/** Why verify cannot run; `kind` decides the exit code (unreachable: 2, otherwise 1). */
export class VerifyError extends Error {
  constructor(
    message: string,
    readonly kind: 'unreachable' | 'acl' | 'namespace' | 'too-far' | 'input',
  ) {
    super(message);
    this.name = 'VerifyError';
  }
}

/** A connection that fails fast: the preflight must answer, not wait. */
export async function open(node: CoordNode, timeoutMs: number): Promise<Redis> {
  let last: Error | undefined;
  const client = new Redis({
    ...node.options,
    host: node.host,
    port: node.port,
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: (times) => (times > 2 ? null : 100 * times),
  });
  client.on('error', (err: Error) => {
    last = err;
  });
  try {
    await connectClient(client, timeoutMs);
  } catch (err) {
    client.disconnect();
    const reason = last?.message ?? (err as Error).message;
    if (/WRONGPASS|NOAUTH|NOPERM/.test(reason)) {
      throw new VerifyError(
        `pairlock verify: Redis at ${node.label} refused the credentials (${reason})`,
        'unreachable',
      );
    }
    throw new VerifyError(
      `pairlock verify: cannot reach Redis at ${node.label} (${reason})`,
      'unreachable',
    );
  }
  return client;
}

/** An error reply that says the user lacks a right: names the command (or key, channel). */
function denied(err: unknown, command: string, base: string): VerifyError | undefined {
  const msg = (err as Error)?.message ?? '';
  if (!/NOPERM|NOAUTH|WRONGPASS/.test(msg)) return undefined;
  const named = /run the '([^']+)' command/.exec(msg)?.[1]?.toUpperCase() ?? command;
  const what = /access a key|access one of the keys/i.test(msg)
    ? `${named} on the keys ${base}*`
    : /channel/i.test(msg)
      ? `${named} on the channel ${base}events`
      : named;
  return new VerifyError(
    `pairlock verify: the Redis user may not run ${what} (${msg.trim()}). verify needs every command the workers send (docs/security.md) and ${VERIFY_EXTRA.join(', ')}.`,
    'acl',
  );
}

/** Commands the workers send, scripts included: the ACL line of docs/security.md. */
export const WORKER_COMMANDS = [
  'EVALSHA',
  'EVAL',
  'SUBSCRIBE',
  'INFO',
  'TIME',
  'GET',
  'SET',
  'INCR',
  'DEL',
  'PEXPIRE',
  'PTTL',
  'EXISTS',
  'TYPE',
  'HGET',
  'HSET',
  'HDEL',
  'ZADD',
  'ZREM',
  'ZRANGEBYSCORE',
  'ZSCORE',
  'PUBLISH',
  'PING',
  'PUBSUB|NUMSUB',
  'XADD',
] as const;

/** Commands the run sends on top of the workers' own (the sink, its dump, the cleanup). */
export const VERIFY_EXTRA = ['SCAN', 'MULTI', 'EXEC', 'RPUSH', 'LRANGE', 'HMGET'] as const;

/**
 * Run each command the workers and the run send, on probe keys of the namespace (`base`),
 * and report the first the user may not run. Commands a script calls are checked against
 * the same ACL, so each is probed directly.
 */
export async function checkAcl(client: Redis, base: string): Promise<void> {
  const k = `${base}probe`;
  const h = `${base}probe-h`;
  const z = `${base}probe-z`;
  const l = `${base}probe-l`;
  const n = `${base}probe-n`;
  // a shipped script, harmless with no keys (every EVAL pairlock sends is one of its own)
  const def = loadScripts().cover;
  const probes: [string, () => Promise<unknown>][] = [
    ['TIME', () => client.time()],
    ['INFO', () => client.info('server')],
    ['EVAL', () => client.eval(def.lua, 0)],
    ['EVALSHA', () => client.evalsha(def.sha1, 0)],
    ['SET', () => client.set(k, '1', 'PX', 60_000)],
    ['GET', () => client.get(k)],
    ['EXISTS', () => client.exists(k)],
    ['TYPE', () => client.type(k)],
    ['PEXPIRE', () => client.pexpire(k, 60_000)],
    ['PTTL', () => client.pttl(k)],
    ['INCR', () => client.incr(n)],
    ['HSET', () => client.hset(h, 'f', '1')],
    ['HGET', () => client.hget(h, 'f')],
    ['HMGET', () => client.hmget(h, 'f')],
    ['HDEL', () => client.hdel(h, 'f')],
    ['ZADD', () => client.zadd(z, 1, 'm')],
    ['ZSCORE', () => client.zscore(z, 'm')],
    ['ZRANGEBYSCORE', () => client.zrangebyscore(z, 0, 1)],
    ['ZREM', () => client.zrem(z, 'm')],
    ['RPUSH', () => client.rpush(l, 'x')],
    ['LRANGE', () => client.lrange(l, 0, -1)],
    [
      'MULTI',
      async () => {
        const res = await client.multi().get(k).exec();
        const err = res?.find(([e]) => e)?.[0];
        if (err) throw err;
      },
    ],
    ['PUBLISH', () => client.publish(`${base}events`, 'probe')],
    ['XADD', () => client.xadd(`${base}probe-x`, 'MAXLEN', '1', '*', 'f', 'v')],
    ['PING', () => client.ping()],
    ['PUBSUB|NUMSUB', () => client.pubsub('NUMSUB', `${base}events`)],
    ['SCAN', () => client.scan('0', 'MATCH', `${base}*`, 'COUNT', 10)],
    ['DEL', () => client.del(k, h, z, l, n, `${base}probe-x`)],
    [
      'SUBSCRIBE',
      async () => {
        const sub = client.duplicate();
        sub.on('error', () => {});
        try {
          await connectClient(sub, 5_000);
          await sub.subscribe(`${base}events`);
          await sub.unsubscribe();
        } finally {
          sub.disconnect();
        }
      },
    ],
  ];
  const probed = new Set(probes.map(([name]) => name));
  const missing = [...WORKER_COMMANDS, ...VERIFY_EXTRA].filter(
    (c) => !probed.has(c) && c !== 'EXEC',
  );
  if (missing.length > 0) throw new Error(`preflight: no probe for ${missing.join(', ')}`);
  for (const [name, probe] of probes) {
    try {
      await probe();
    } catch (err) {
      throw denied(err, name, base) ?? err;
    }
  }
}

/**
 * The node's `maxmemory-policy` (INFO memory), for the preflight's output: flagged when it
 * is not `noeviction` (Redis may then evict sessions and records; src/redis/eviction.ts).
 */
export async function evictionLine(client: Redis, node: CoordNode): Promise<string> {
  try {
    const p = await readPolicy(client, 5_000);
    return `${node.label}: maxmemory-policy ${formatPolicy(p)}${evicts(p.policy) ? ` — ${EVICTING_FLAG}` : ''}`;
  } catch (err) {
    return `${node.label}: maxmemory-policy unknown (${(err as Error).message})`;
  }
}

/** The median round trip of a few TIME calls, in ms. */
export async function roundTrip(client: Redis): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await client.time();
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[2] ?? 0;
}

/** Keys of the namespace (`base*`), page by page with SCAN (never KEYS). */
async function* keysOf(client: Redis, base: string): AsyncGenerator<string[]> {
  const pattern = `${base.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}*`;
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) yield keys;
  } while (cursor !== '0');
}

/** Refuse a namespace that holds keys: the run deletes every key of it at the end. */
export async function checkEmpty(
  client: Redis,
  node: CoordNode,
  base: string,
  namespace: string,
): Promise<void> {
  try {
    for await (const keys of keysOf(client, base)) {
      throw new VerifyError(
        `pairlock verify: the namespace ${JSON.stringify(namespace)} already holds keys on ${node.label} (${keys
          .slice(0, 3)
          .map((key) => JSON.stringify(key))
          .join(
            ', ',
          )}${keys.length > 3 ? ', …' : ''}). verify deletes every key of its namespace when it ends, so it runs only in an empty one: pass another --namespace, or none for a fresh pairlock-verify-<random>.`,
        'namespace',
      );
    }
  } catch (err) {
    throw denied(err, 'SCAN', base) ?? err;
  }
}

/** Delete every key of the namespace; returns how many were deleted and how many are left. */
export async function deleteAll(
  client: Redis,
  base: string,
): Promise<{ deleted: number; left: number }> {
  let deleted = 0;
  for (let round = 0; round < 3; round++) {
    for await (const keys of keysOf(client, base)) deleted += await client.del(...keys);
    let left = 0;
    for await (const keys of keysOf(client, base)) left += keys.length;
    if (left === 0 || round === 2) return { deleted, left };
  }
  return { deleted, left: 0 };
}
