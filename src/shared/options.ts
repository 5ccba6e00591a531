import { hostname } from 'node:os';
import type { Cluster, Redis, RedisOptions } from 'ioredis';
import { InvalidOptionError } from './errors.js';
import { describe, MAX_RETENTION_MS, number } from './option-values.js';
import { resolveTopology } from './options-topology.js';

export { MAX_TIMER_MS } from './option-values.js';

/** A pino-compatible logger: `logger.warn({ fields }, 'message')`. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export type FailurePolicy = 'takeover' | 'give-up';

/** What a worker does at start about a Redis that may evict its keys (src/redis/eviction.ts). */
export type EvictionCheck = 'warn' | 'refuse' | 'off';

export interface FailureOptions {
  /**
   * What happens when a holder reports failure. `takeover`: the task may be claimed again
   * (the standby first), until `maxAttempts` grants have been made. `give-up`: a reported
   * failure is the outcome.
   * @default 'takeover'
   */
  readonly policy?: FailurePolicy;
  /**
   * Grants a task may receive (first run, takeovers and retries all count) before a
   * reported failure is final.
   * @default 3
   */
  readonly maxAttempts?: number;
  /**
   * Wait after a reported failure before the task may be claimed again. At most
   * `retentionMs` (the failed record is kept until the retry time plus the retention).
   * @default 1000
   */
  readonly backoffMs?: number;
}

/** Where Redis is: a client, a URL, or ioredis options. */
export type RedisConnection = Redis | Cluster | string | RedisOptions;

/**
 * Replication safety for a replicated Redis (Sentinel, or a Cluster's replicas): after
 * every grant, settle and session write, `WAIT waitReplicas waitTimeoutMs` on the same
 * connection. Redis replication is asynchronous; without this, a failover may lose a
 * grant that was already reported, and the peer may run the task a second time.
 */
export interface ReplicationOptions {
  /** Replicas that must acknowledge a write before it counts. */
  readonly waitReplicas: number;
  /** How long to wait for them. @default 500 */
  readonly waitTimeoutMs?: number;
  /**
   * When fewer replicas acknowledged in time. `reject`: the grant is given back and not
   * run (a settle or renewal is retried), and the failure is reported as
   * ReplicationError (code ERR_REDIS_UNAVAILABLE) once `unavailableTimeoutMs` has passed.
   * `accept`: carry on as if all had acknowledged.
   * @default 'reject'
   */
  readonly onTimeout?: 'reject' | 'accept';
}

export interface PairedWorkerOptions {
  /** The Redis to coordinate through: an ioredis client (Redis or Cluster), a URL, or options. */
  readonly redis?: RedisConnection;
  /**
   * Quorum mode: N independent Redis masters (an odd number, 3 or more; 3 or 5 in
   * practice); every transition runs on all of them and a majority decides. Survives the
   * loss or partition of a minority of them. Give either `redis` or `nodes`.
   */
  readonly nodes?: readonly RedisConnection[];
  /** WAIT for replicas after grants, settles and session writes (`redis` only). @default none */
  readonly replication?: ReplicationOptions;
  /**
   * Namespace events on a Redis Cluster: `sharded` (SSUBSCRIBE/SPUBLISH, Redis 7: each
   * message stays in the shard of the namespace's slot), `classic` (PUBLISH: every node of
   * the cluster receives every message), `auto` (sharded when the cluster runs Redis 7 or
   * newer). A single Redis and quorum nodes always use classic pub/sub.
   * @default 'auto'
   */
  readonly clusterPubSub?: 'auto' | 'sharded' | 'classic';
  /** A set of tasks and workers. All its keys share one Cluster hash tag. @default 'default' */
  readonly namespace?: string;
  /** This worker's name; the worker id is `<name>:<random>`. @default os.hostname() */
  readonly name?: string;
  /** Prefix of every key. @default 'pairlock' */
  readonly keyPrefix?: string;
  /**
   * The worker's liveness lease on the Redis server. A crashed worker's tasks are taken
   * over this long after its last heartbeat.
   * @default 10000
   */
  readonly sessionTtlMs?: number;
  /** How often the session is renewed. Must be below half of `sessionTtlMs`. @default sessionTtlMs / 3 */
  readonly heartbeatIntervalMs?: number;
  /**
   * Bind the session to this worker's subscriber connection (one Redis, Sentinel or
   * Cluster, Redis 7 or newer; not in quorum mode): a process that dies — its sockets closed by the OS — is
   * taken over about `crashGraceMs` after a standby sees that connection gone, instead of
   * `sessionTtlMs` after its last heartbeat. The holder proves its connection at most
   * 10 times a second; when its connection closes and it cannot unbind it, or its proofs
   * stay unanswered past `doubtMs` on a connection that stands, it aborts its handlers
   * (reason `connection`); a late proof alone aborts nothing. Where
   * the evidence is absent or untrustworthy (a host gone without closing its sockets, a
   * partition, a Redis restart or failover, Redis before 7, quorum mode), the
   * session TTL decides, as without it.
   * @default true
   */
  readonly connectionBound?: boolean;
  /**
   * Connection-bound sessions: a holder is certain of its leases only this long after the
   * last proof of its connection (then it is in doubt, see `doubtMs`); a standby takes
   * over only once it has seen that connection gone this long. At least 120 (a proof is
   * sent every 100 ms). A worker with a slower link binds with more: 100 ms + 2 × its
   * round trip + 20 ms, up to sessionTtlMs / 2.
   * @default 140
   */
  readonly crashGraceMs?: number;
  /**
   * Connection-bound sessions: a holder whose proofs are late on a connection that has
   * not closed (a pause of its own, or of Redis) is in doubt, not lost: it sends a proof
   * at once and keeps its handlers running; only if that proof stays unanswered this
   * long does it give its leases up (reason `connection`). Nobody can take its tasks over
   * on connection evidence while the connection stands; the bound limits what could
   * overlap if the server closed it unseen (a partition at that moment). 0: give up as
   * soon as the proofs are late. At most sessionTtlMs / 2.
   * @default 1000
   */
  readonly doubtMs?: number;
  /**
   * Connection-bound sessions: how often a standby checks the connections of the holders
   * it covers (one call for all of them). At most `crashGraceMs`.
   * @default 40
   */
  readonly connectionCheckIntervalMs?: number;
  /** Time-to-run of one grant: past it the task counts as hung and may be taken over. @default 300000 */
  readonly taskTimeoutMs?: number;
  readonly failure?: FailureOptions;
  /** Safety-net re-check of a watched task after this long (pub/sub is at-most-once). @default 10000 */
  readonly firstAttemptIntervalMs?: number;
  /** Later safety-net re-checks. @default 30000 */
  readonly otherAttemptIntervalMs?: number;
  /**
   * How long a settled record is kept, so that a peer whose feed lags still sees the
   * outcome instead of running the task again.
   * @default 3600000 (one hour)
   */
  readonly retentionMs?: number;
  /** Largest result (serialised JSON, bytes) a task may report. @default 262144 */
  readonly maxResultBytes?: number;
  /** Largest task id, in UTF-8 bytes. @default 1024 */
  readonly maxTaskIdBytes?: number;
  /** Handlers running at once on this worker; a worker at its limit does not claim. @default Infinity */
  readonly concurrency?: number;
  /** Bound on connecting, and on any single Redis command. @default 5000 */
  readonly connectTimeoutMs?: number;
  /** A waiting run() gives up with RedisUnavailableError after Redis failed for this long. @default 30000 */
  readonly unavailableTimeoutMs?: number;
  /**
   * At start, read each coordination node's `maxmemory-policy` (`INFO memory`). Any policy
   * but `noeviction` lets Redis evict a session (the peer takes over a live holder) or a
   * task record (its fencing token starts again at 1). `warn`: log a warning; `refuse`:
   * start() rejects with EvictionPolicyError (code ERR_EVICTION_POLICY); `off`: no check.
   * @default 'warn'
   */
  readonly evictionCheck?: EvictionCheck;
  /**
   * Entries the namespace's task history keeps (a Redis Stream, `pairlock history`): one
   * entry per script call that made transitions (a batch), trimmed approximately (MAXLEN
   * ~). 0 writes no history.
   * @default 10000
   */
  readonly historyLength?: number;
  readonly logger?: Logger;
}

export interface ResolvedOptions {
  readonly namespace: string;
  readonly name: string;
  readonly keyPrefix: string;
  readonly sessionTtlMs: number;
  readonly heartbeatIntervalMs: number;
  readonly connectionBound: boolean;
  readonly crashGraceMs: number;
  readonly doubtMs: number;
  readonly connectionCheckIntervalMs: number;
  readonly taskTimeoutMs: number;
  readonly failure: Required<FailureOptions>;
  readonly firstAttemptIntervalMs: number;
  readonly otherAttemptIntervalMs: number;
  readonly retentionMs: number;
  readonly maxResultBytes: number;
  readonly maxTaskIdBytes: number;
  readonly concurrency: number;
  readonly connectTimeoutMs: number;
  readonly unavailableTimeoutMs: number;
  readonly replication: Required<ReplicationOptions> | undefined;
  readonly clusterPubSub: 'auto' | 'sharded' | 'classic';
  readonly evictionCheck: EvictionCheck;
  readonly historyLength: number;
}

export const defaults = {
  namespace: 'default',
  keyPrefix: 'pairlock',
  sessionTtlMs: 10_000,
  connectionBound: true,
  crashGraceMs: 140,
  doubtMs: 1_000,
  connectionCheckIntervalMs: 40,
  taskTimeoutMs: 300_000,
  failure: { policy: 'takeover', maxAttempts: 3, backoffMs: 1_000 },
  firstAttemptIntervalMs: 10_000,
  otherAttemptIntervalMs: 30_000,
  retentionMs: 3_600_000,
  maxResultBytes: 262_144,
  maxTaskIdBytes: 1_024,
  concurrency: Number.POSITIVE_INFINITY,
  connectTimeoutMs: 5_000,
  unavailableTimeoutMs: 30_000,
  replication: { waitTimeoutMs: 500, onTimeout: 'reject' },
  clusterPubSub: 'auto',
  evictionCheck: 'warn',
  historyLength: 10_000,
} as const;

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/** Defaults first, then validation; every message names the option to change. */
export function resolveOptions(opts: PairedWorkerOptions): ResolvedOptions {
  if (typeof opts !== 'object' || opts === null) {
    throw new InvalidOptionError('Expected options to be an object');
  }
  const namespace = opts.namespace ?? defaults.namespace;
  if (typeof namespace !== 'string' || !NAME_RE.test(namespace)) {
    throw new InvalidOptionError(
      `Expected \`namespace\` to match ${NAME_RE} (it becomes a Cluster hash tag), got ${describe(namespace)}`,
    );
  }
  const name =
    opts.name ??
    hostname()
      .replace(/[^A-Za-z0-9_.-]/g, '-')
      .slice(0, 64);
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new InvalidOptionError(`Expected \`name\` to match ${NAME_RE}, got ${describe(name)}`);
  }
  const keyPrefix = opts.keyPrefix ?? defaults.keyPrefix;
  if (typeof keyPrefix !== 'string' || !/^[A-Za-z0-9_.:-]{1,64}$/.test(keyPrefix)) {
    throw new InvalidOptionError(
      `Expected \`keyPrefix\` to be 1-64 characters of [A-Za-z0-9_.:-], got ${describe(keyPrefix)}`,
    );
  }
  const sessionTtlMs = number('sessionTtlMs', opts.sessionTtlMs ?? defaults.sessionTtlMs, {
    min: 20,
  });
  const heartbeatIntervalMs = number(
    'heartbeatIntervalMs',
    opts.heartbeatIntervalMs ?? Math.max(1, Math.floor(sessionTtlMs / 3)),
    { min: 1 },
  );
  if (heartbeatIntervalMs * 2 > sessionTtlMs) {
    throw new InvalidOptionError(
      `Expected \`heartbeatIntervalMs\` (${heartbeatIntervalMs}) to be at most half of \`sessionTtlMs\` (${sessionTtlMs}), so that one lost heartbeat does not end the session`,
    );
  }
  const boundIn = opts.connectionBound ?? defaults.connectionBound;
  if (typeof boundIn !== 'boolean') {
    throw new InvalidOptionError(
      `Expected \`connectionBound\` to be a boolean, got ${describe(boundIn)}`,
    );
  }
  const crashGraceMs = number('crashGraceMs', opts.crashGraceMs ?? defaults.crashGraceMs, {
    min: 120,
  });
  if (opts.connectionBound === true && crashGraceMs >= sessionTtlMs) {
    throw new InvalidOptionError(
      `Expected \`crashGraceMs\` (${crashGraceMs}) to be below \`sessionTtlMs\` (${sessionTtlMs}) with \`connectionBound\`: the session TTL would decide first`,
    );
  }
  // by default, only where it is faster than the session TTL
  const connectionBound = boundIn && crashGraceMs < sessionTtlMs;
  const doubtMs = number(
    'doubtMs',
    opts.doubtMs ?? Math.min(defaults.doubtMs, Math.floor(sessionTtlMs / 2)),
    {
      min: 0,
      max: Math.floor(sessionTtlMs / 2),
    },
  );
  const connectionCheckIntervalMs = number(
    'connectionCheckIntervalMs',
    opts.connectionCheckIntervalMs ?? defaults.connectionCheckIntervalMs,
    { min: 10, max: crashGraceMs },
  );
  const taskTimeoutMs = number('taskTimeoutMs', opts.taskTimeoutMs ?? defaults.taskTimeoutMs, {
    min: 1,
  });
  const failureIn = opts.failure ?? {};
  if (typeof failureIn !== 'object' || failureIn === null) {
    throw new InvalidOptionError('Expected `failure` to be an object');
  }
  const policy = failureIn.policy ?? defaults.failure.policy;
  if (policy !== 'takeover' && policy !== 'give-up') {
    throw new InvalidOptionError(
      `Expected \`failure.policy\` to be 'takeover' or 'give-up', got ${describe(policy)}`,
    );
  }
  const failure = {
    policy,
    maxAttempts: number(
      'failure.maxAttempts',
      failureIn.maxAttempts ?? defaults.failure.maxAttempts,
      { min: 1 },
    ),
    backoffMs: number('failure.backoffMs', failureIn.backoffMs ?? defaults.failure.backoffMs, {
      min: 0,
    }),
  } as const;
  const firstAttemptIntervalMs = number(
    'firstAttemptIntervalMs',
    opts.firstAttemptIntervalMs ?? Math.min(defaults.firstAttemptIntervalMs, taskTimeoutMs),
    { min: 1 },
  );
  if (firstAttemptIntervalMs > taskTimeoutMs) {
    throw new InvalidOptionError(
      `Expected \`firstAttemptIntervalMs\` (${firstAttemptIntervalMs}) to be at most \`taskTimeoutMs\` (${taskTimeoutMs}): a standby must re-check a task before its lease can run out`,
    );
  }
  const otherAttemptIntervalMs = number(
    'otherAttemptIntervalMs',
    opts.otherAttemptIntervalMs ??
      Math.max(firstAttemptIntervalMs, defaults.otherAttemptIntervalMs),
    { min: 1 },
  );
  const retentionMs = number('retentionMs', opts.retentionMs ?? defaults.retentionMs, {
    min: 1,
    max: MAX_RETENTION_MS,
  });
  if (failure.backoffMs > retentionMs) {
    throw new InvalidOptionError(
      `Expected \`failure.backoffMs\` (${failure.backoffMs}) to be at most \`retentionMs\` (${retentionMs}): a failed task waiting for its retry must keep its record, or its fencing token would start again at 1`,
    );
  }
  const topology = resolveTopology(opts);
  const evictionCheck = opts.evictionCheck ?? defaults.evictionCheck;
  if (evictionCheck !== 'warn' && evictionCheck !== 'refuse' && evictionCheck !== 'off') {
    throw new InvalidOptionError(
      `Expected \`evictionCheck\` to be 'warn', 'refuse' or 'off', got ${describe(evictionCheck)}`,
    );
  }
  return {
    ...topology,
    namespace,
    name,
    keyPrefix,
    sessionTtlMs,
    heartbeatIntervalMs,
    connectionBound,
    crashGraceMs,
    doubtMs,
    connectionCheckIntervalMs,
    taskTimeoutMs,
    failure,
    firstAttemptIntervalMs,
    otherAttemptIntervalMs,
    retentionMs,
    evictionCheck,
    historyLength: number('historyLength', opts.historyLength ?? defaults.historyLength, {
      min: 0,
      max: 10_000_000,
      integer: true,
    }),
    maxResultBytes: number('maxResultBytes', opts.maxResultBytes ?? defaults.maxResultBytes, {
      min: 0,
    }),
    maxTaskIdBytes: number('maxTaskIdBytes', opts.maxTaskIdBytes ?? defaults.maxTaskIdBytes, {
      min: 1,
    }),
    concurrency: number('concurrency', opts.concurrency ?? defaults.concurrency, {
      min: 1,
      allowInfinity: true,
    }),
    connectTimeoutMs: number(
      'connectTimeoutMs',
      opts.connectTimeoutMs ?? defaults.connectTimeoutMs,
      { min: 1 },
    ),
    unavailableTimeoutMs: number(
      'unavailableTimeoutMs',
      opts.unavailableTimeoutMs ?? defaults.unavailableTimeoutMs,
      { min: 1 },
    ),
  };
}

/**
 * After its own failed attempt, a worker tries the task again this long after the
 * backoff, so that a live peer (woken by the settle event) retries first; a worker alone
 * still honours `backoffMs`.
 */
export function peerFirstMs(o: ResolvedOptions): number {
  return Math.min(o.firstAttemptIntervalMs, 250);
}
