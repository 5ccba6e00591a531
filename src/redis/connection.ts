/** Connections to Redis: clients pairlock creates, bounded waits, and faults as unavailability. */
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import {
  InvalidOptionError,
  RedisAuthError,
  RedisOutOfMemoryError,
  RedisUnavailableError,
} from '../shared/errors.js';
import type { RedisConnection } from '../shared/options.js';
export type Client = Redis | Cluster;

export function isClient(c: unknown): c is Client {
  return c instanceof Redis || c instanceof Cluster;
}

const PASS_REDIS =
  "pass `redis: 'redis://127.0.0.1:6379'` (a URL, ioredis options or an ioredis client)";

/**
 * Neither `redis` nor `nodes`: pairlock has no default address (ioredis would connect to
 * 127.0.0.1:6379 and write there). Raised where the store is made (src/redis/topology.ts), so
 * that resolveOptions() alone still resolves the other options.
 */
export function missingConnectionError(): InvalidOptionError {
  return new InvalidOptionError(
    `Expected \`redis\` (where Redis is) or \`nodes\` (quorum mode: independent Redis masters), got neither; there is no default address: ${PASS_REDIS}. \`redis: process.env.REDIS_URL\` with REDIS_URL unset is undefined`,
  );
}

/**
 * A connection that names no server is refused rather than taken for ioredis's default,
 * 127.0.0.1:6379: an empty string, a URL without a host, options without `host`, `port`,
 * `path` or `sentinels`, anything but a string or an object.
 */
export function checkConnection(name: string, conn: unknown): void {
  const fail = (why: string) =>
    new InvalidOptionError(
      `Expected \`${name}\` to name a Redis server, but it ${why}; ${PASS_REDIS}`,
    );
  if (typeof conn === 'string') {
    if (conn.trim() === '') throw fail('is empty');
    if (/^rediss?:\/\/(?:[^@/?#]*@)?(?:[/?#]|$)/i.test(conn.trim()))
      throw fail('is a URL that names no host');
    return;
  }
  if (typeof conn !== 'object' || conn === null)
    throw fail(`is \`${String(conn)}\` (${typeof conn})`);
  if (isClient(conn)) return;
  const o = conn as RedisOptions;
  const given = (v: unknown) => v !== undefined && v !== null && v !== '';
  if (!given(o.host) && !given(o.port) && !given(o.path) && !given(o.sentinels))
    throw fail('names no server (no `host`, `port`, `path` or `sentinels`)');
}

/**
 * A client pairlock creates itself. No offline queue and no per-request retries: a
 * command sent while Redis is away fails at once instead of running late (a late claim
 * could grant a lease nobody is waiting for); pairlock retries at its own level.
 */
export function createClient(
  conn: Exclude<RedisConnection, Client>,
  connectTimeoutMs: number,
): Redis {
  const base: RedisOptions = {
    lazyConnect: true,
    connectTimeout: connectTimeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
  };
  const client = typeof conn === 'string' ? new Redis(conn, base) : new Redis({ ...base, ...conn });
  // Connection errors surface as typed errors of the calls that meet them (and the
  // connection is retried); without a listener ioredis would print each one.
  client.on('error', () => {});
  return client;
}

export function describeClient(client: Client): string {
  if (client instanceof Cluster) return 'the Redis Cluster';
  const o = client.options;
  if (o.path) return `Redis at ${o.path}`;
  if (o.sentinels?.length) return `Redis (sentinel master ${o.name ?? ''})`;
  return `Redis at ${o.host ?? '127.0.0.1'}:${o.port ?? 6379}`;
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RedisUnavailableError(what())), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * Redis's reply when it refuses credentials, or undefined for any other error: WRONGPASS
 * (a wrong password, or user and password that do not pair), NOAUTH (none given where one
 * is required; ioredis reports it as "Ready check failed: NOAUTH …"), and NOPERM in answer
 * to AUTH itself. ioredis keeps reconnecting after these, as after a refused connection;
 * only the message tells them apart. The reply never carries the password (the error's
 * `command.args` do, so the error itself is not passed on).
 */
export function authRefusal(err: unknown): string | undefined {
  const e = err as (Error & { command?: { name?: string } }) | undefined;
  const message = typeof e?.message === 'string' ? e.message : '';
  const reply = message.replace(/^Ready check failed: /, '');
  if (/^(WRONGPASS|NOAUTH)\b|invalid username-password pair|invalid password/i.test(reply))
    return reply;
  if (/^NOPERM\b/.test(reply) && e?.command?.name?.toLowerCase() === 'auth') return reply;
  return undefined;
}

function refused(where: string, reply: string): RedisAuthError {
  return new RedisAuthError(
    `${where} refused the credentials (${reply}); check the user and password given in \`redis\` (or \`nodes\`): the URL's user:password, or the \`username\` and \`password\` options`,
  );
}

/**
 * Wait until the client is ready, at most `ms`. Credentials Redis refuses end the wait at
 * once with RedisAuthError: retrying cannot fix them.
 */
export async function connectClient(client: Client, ms: number): Promise<void> {
  if (client.status === 'ready') return;
  let cleanup = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    const onReady = () => {
      cleanup();
      resolve();
    };
    const onEnd = () => {
      cleanup();
      reject(new RedisUnavailableError(`the connection to ${describeClient(client)} was closed`));
    };
    const onError = (err: unknown) => {
      // a Cluster reports a failed start as 'Failed to refresh slots cache.', with the
      // error of the last node it asked as `lastNodeError`
      const reply =
        authRefusal(err) ?? authRefusal((err as { lastNodeError?: unknown })?.lastNodeError);
      if (reply === undefined) return;
      cleanup();
      reject(refused(describeClient(client), reply));
    };
    const onNodeError = (err: unknown, address: unknown) => {
      const reply = authRefusal(err);
      if (reply === undefined) return;
      cleanup();
      reject(refused(`${describeClient(client)} (node ${String(address)})`, reply));
    };
    cleanup = () => {
      client.off('ready', onReady);
      client.off('end', onEnd);
      client.off('error', onError);
      client.off('node error', onNodeError);
    };
    client.on('ready', onReady);
    client.on('end', onEnd);
    client.on('error', onError);
    if (client instanceof Cluster) client.on('node error', onNodeError);
  });
  // the promise of connect() may reject on its own; readiness is what we wait for
  if (client.status === 'wait') client.connect().catch(() => {});
  await withTimeout(
    ready,
    ms,
    () =>
      `could not reach ${describeClient(client)} within ${ms} ms (option \`connectTimeoutMs\`); is it running and reachable?`,
  ).finally(() => cleanup());
}

/** A connection fault, not a script error, is reported as unavailability. */
export function asUnavailable(err: unknown, client: Client): unknown {
  if (err instanceof RedisUnavailableError) return err;
  const e = err as Error;
  if (
    /Connection|ECONNREFUSED|ECONNRESET|EPIPE|closed|offline|Stream isn't writeable|max retries/i.test(
      e?.message ?? '',
    )
  ) {
    return new RedisUnavailableError(`${describeClient(client)} is unavailable: ${e.message}`, {
      cause: e,
    });
  }
  if (/^OOM /.test(e?.message ?? '')) {
    return new RedisOutOfMemoryError(
      `${describeClient(client)} is out of memory (maxmemory reached; nothing was written): ${e.message}`,
      { cause: e },
    );
  }
  if (MIGRATING.test(e?.message ?? '')) {
    // A Cluster moving the namespace's slot (or failing over its shard) answers every
    // script whose keys are not all on one node with ASK, TRYAGAIN or CLUSTERDOWN until
    // the move ends; ioredis gives up after a few redirections. Nothing was run: the
    // caller retries, as while Redis is unavailable (`unavailableTimeoutMs`). A script
    // stopped part-way (which declared keys prevent) is retried the same way: its outcome
    // is unknown, and the transitions are idempotent for their caller (a claim retried is
    // answered 'resumed', a settle 'repeated' and published again).
    return new RedisUnavailableError(
      `${describeClient(client)}: the namespace's slot is moving between nodes (${e.message})`,
      { cause: e },
    );
  }
  return err;
}

/** Errors of a slot in migration or a shard in failover: nothing ran, try again later. */
const MIGRATING =
  /^(TRYAGAIN|CLUSTERDOWN|MOVED|ASK|LOADING|MASTERDOWN)\b|Too many Cluster redirections|Script attempted to access (a non local key|keys that do not hash)/;

/**
 * Replication safety (option `replication` with `onTimeout: 'reject'`): fewer replicas than
 * asked acknowledged a grant, a settle or a session renewal in time. A grant is given back
 * and not used; the worker retries as when Redis is unavailable, so the failure surfaces
 * (as this error, code ERR_REDIS_UNAVAILABLE) only after `unavailableTimeoutMs`.
 */
export class ReplicationError extends RedisUnavailableError {
  readonly acked: number;
  constructor(message: string, acked: number) {
    super(message);
    this.acked = acked;
  }
}

/** How a RedisStore writes and listens, beyond where Redis is. */
export interface RedisStoreOptions {
  /** After every grant, settle and session write: `WAIT waitReplicas waitTimeoutMs`. */
  readonly replication?: {
    readonly waitReplicas: number;
    readonly waitTimeoutMs: number;
    readonly onTimeout: 'reject' | 'accept';
  };
  /**
   * Namespace events on a Cluster: 'sharded' (SPUBLISH/SSUBSCRIBE, Redis 7: the message
   * stays in the shard of the namespace's slot), 'classic' (PUBLISH: every node of the
   * cluster receives every message), 'auto' (sharded on a Cluster of Redis 7 or newer).
   * A single Redis always uses classic pub/sub.
   */
  readonly pubsub?: 'auto' | 'sharded' | 'classic';
  /** Entries the task history keeps (0: none). @default 10000 */
  readonly historyLength?: number;
}
