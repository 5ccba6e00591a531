import { Cluster, Redis, type RedisOptions } from 'ioredis';
import {
  type GrantKind,
  grantKinds,
  type RejectReason,
  ReplyCode,
  rejectReasons,
} from './codes.js';
import { CorruptRecordError, RedisUnavailableError } from './errors.js';
import type { Keys, TaskLocation } from './keys.js';
import type { RedisConnection } from './options.js';
import { callScript, defineScripts, loadScripts, type ScriptName } from './scripts.js';
import { ClusterSubscriber } from './topology-cluster.js';

// ---------------------------------------------------------------------------------
// Typed replies of the scripts. Decisions are made in Lua; these only name the answers.
// ---------------------------------------------------------------------------------

export type ClaimReply =
  | {
      type: 'granted';
      token: number;
      attempt: number;
      kind: GrantKind;
      deadlineInMs: number;
      serverNow: number;
      from: string;
    }
  | {
      type: 'held';
      owner: string;
      token: number;
      attempt: number;
      ownerPttl: number;
      deadlineInMs: number;
    }
  | {
      type: 'done';
      owner: string;
      token: number;
      attempt: number;
      updatedAt: number;
      payload: string;
    }
  | {
      type: 'failed';
      owner: string;
      token: number;
      attempt: number;
      updatedAt: number;
      payload: string;
      terminal: boolean;
      retryInMs: number;
    }
  | {
      /** The claimer's own session already holds the task (its grant's reply was lost). */
      type: 'resumed';
      token: number;
      attempt: number;
      kind: GrantKind;
      /** The server's remaining time to the grant's deadline. */
      deadlineInMs: number;
      serverNow: number;
    }
  | { type: 'claimable'; kind: GrantKind }
  | { type: 'session-expired' };

export type OwnerReply =
  | {
      ok: true;
      token: number;
      attempt: number;
      serverNow: number;
      /** settle: a failure no retry will follow (the script's rule, as claim applies it). */
      final?: boolean;
      /** The record already held this outcome: a retried write whose first reply was lost. */
      repeated?: boolean;
    }
  | { ok: false; reason: RejectReason; token?: number; owner?: string; state?: string };

export type SessionReply =
  | { ok: true; serverNow: number; pttl: number }
  | { ok: false; reason: 'session-expired' | 'session-exists' };

export interface TaskRecord {
  state: 'running' | 'done' | 'failed' | 'released';
  token: number;
  attempt: number;
  /** Owner session id, `<workerId>#<epoch>`. */
  session: string;
  /** Worker id of the owner, `<name>:<random>`. */
  worker: string;
  /** Running: server ms of the task's deadline. Failed: server ms when a retry may be granted. */
  deadline: number;
  claimedAt: number;
  updatedAt: number;
  progress: number | undefined;
  /** Result (done), error (failed) or progress note (running), as stored JSON text. */
  payload: string;
  /** Remaining ms of the owner's session, 0 when it is gone. */
  ownerPttl: number;
  serverNow: number;
  /** Remaining ms the record is kept; -1 when it has no expiry. */
  keepMs: number;
}

export type InspectReply = { found: false; serverNow: number } | ({ found: true } & TaskRecord);

/** One watched task as the safety net saw it. */
export type PeekEntry =
  | { state: 'absent' }
  | { state: 'R' | 'D' | 'F' | 'X'; token: number; orphaned: boolean }
  | { state: 'error'; code: number };

export interface ClaimArgs {
  session: string;
  sessionTtlMs: number;
  taskTimeoutMs: number;
  retentionMs: number;
  maxAttempts: number;
  dryRun: boolean;
}

export interface SettleArgs {
  session: string;
  token: number;
  state: 'D' | 'F';
  payload: string;
  retentionMs: number;
  backoffMs: number;
  /** A failure settled at this attempt or later is final (reply `final`); 0 or absent: not asked. */
  maxAttempts?: number;
}

/** What pairlock needs from Redis. One implementation per topology. */
export interface Store {
  /**
   * True when a 'settled' event with a result is the outcome itself (published by the
   * script that settled, on the one Redis that decides), so a standby may resolve from it
   * without reading the record. False in quorum mode (one node's event is a hint) and
   * with replication safety (an outcome counts only once a replica has it).
   */
  readonly eventsAreOutcomes?: boolean;
  /** Connect within the bounded wait, or throw RedisUnavailableError. */
  connect(): Promise<void>;
  claim(loc: TaskLocation, a: ClaimArgs): Promise<ClaimReply>;
  settle(loc: TaskLocation, a: SettleArgs): Promise<OwnerReply>;
  release(
    loc: TaskLocation,
    a: { session: string; token: number; retentionMs: number },
  ): Promise<OwnerReply>;
  progress(
    loc: TaskLocation,
    a: { session: string; token: number; progress: number; note: string },
  ): Promise<OwnerReply>;
  inspect(loc: TaskLocation): Promise<InspectReply>;
  peek(locs: readonly TaskLocation[]): Promise<PeekEntry[]>;
  session(
    op: 'open' | 'renew' | 'close' | 'ttl',
    sessionId: string,
    ttlMs: number,
    desc?: string,
  ): Promise<SessionReply>;
  /** Deliver namespace events; `onReconnect` runs after the subscription is restored. */
  subscribe(onMessage: (msg: string) => void, onReconnect: () => void): Promise<void>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------
// Reply decoding
// ---------------------------------------------------------------------------------

type Raw = (string | number)[];
const num = (v: unknown): number => Number(v);
const str = (v: unknown): string => (v === null || v === undefined ? '' : String(v));

export function faultToError(reply: Raw, loc: TaskLocation): CorruptRecordError | undefined {
  const code = reply[0];
  const where = loc.field ? `${loc.container} field ${JSON.stringify(loc.field)}` : loc.container;
  if (code === ReplyCode.Corrupt) {
    return new CorruptRecordError(
      'ERR_CORRUPT_RECORD',
      `the record of task ${JSON.stringify(loc.taskId)} at ${where} is not a pairlock record (starts with ${JSON.stringify(str(reply[1]))}); delete it or use another task id`,
      loc.container,
      loc.field || undefined,
    );
  }
  if (code === ReplyCode.NewerFormat) {
    return new CorruptRecordError(
      'ERR_NEWER_FORMAT',
      `the record of task ${JSON.stringify(loc.taskId)} at ${where} has format version ${str(reply[1])}, newer than this pairlock understands; upgrade pairlock on this worker`,
      loc.container,
      loc.field || undefined,
    );
  }
  if (code === ReplyCode.WrongType) {
    return new CorruptRecordError(
      'ERR_WRONG_TYPE',
      `the key ${where} of task ${JSON.stringify(loc.taskId)} holds a value of another type (expected ${str(reply[1])}); it is not pairlock's`,
      loc.container,
      loc.field || undefined,
    );
  }
  return undefined;
}

export function decodeClaim(reply: Raw, loc: TaskLocation): ClaimReply {
  const fault = faultToError(reply, loc);
  if (fault) throw fault;
  switch (reply[0]) {
    case ReplyCode.Granted:
      return {
        type: 'granted',
        token: num(reply[1]),
        attempt: num(reply[2]),
        kind: grantKinds[num(reply[3])] ?? 'fresh',
        deadlineInMs: num(reply[4]),
        serverNow: num(reply[5]),
        from: str(reply[6]),
      };
    case ReplyCode.Held:
      return {
        type: 'held',
        owner: str(reply[1]),
        token: num(reply[2]),
        attempt: num(reply[3]),
        ownerPttl: num(reply[4]),
        deadlineInMs: num(reply[5]),
      };
    case ReplyCode.Done:
      return {
        type: 'done',
        owner: str(reply[1]),
        token: num(reply[2]),
        attempt: num(reply[3]),
        updatedAt: num(reply[4]),
        payload: str(reply[5]),
      };
    case ReplyCode.Failed:
      return {
        type: 'failed',
        owner: str(reply[1]),
        token: num(reply[2]),
        attempt: num(reply[3]),
        updatedAt: num(reply[4]),
        payload: str(reply[5]),
        terminal: num(reply[6]) === 1,
        retryInMs: num(reply[7]),
      };
    case ReplyCode.Resumed:
      return {
        type: 'resumed',
        token: num(reply[1]),
        attempt: num(reply[2]),
        kind: grantKinds[num(reply[3])] ?? 'fresh',
        deadlineInMs: num(reply[4]),
        serverNow: num(reply[5]),
      };
    case ReplyCode.Claimable:
      return { type: 'claimable', kind: grantKinds[num(reply[1])] ?? 'fresh' };
    case ReplyCode.ClaimerSessionExpired:
      return { type: 'session-expired' };
    default:
      throw new Error(`unexpected claim reply ${JSON.stringify(reply)}`);
  }
}

export function decodeOwner(reply: Raw, loc: TaskLocation): OwnerReply {
  const fault = faultToError(reply, loc);
  if (fault) throw fault;
  const code = num(reply[0]);
  if (code === ReplyCode.Ok) {
    return {
      ok: true,
      token: num(reply[1] ?? 0),
      attempt: num(reply[2] ?? 0),
      serverNow: num(reply[3] ?? reply[1]),
      final: num(reply[4] ?? 0) === 1,
      repeated: num(reply[5] ?? 0) === 1,
    };
  }
  const reason = rejectReasons[code];
  if (!reason) throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
  const out: OwnerReply = { ok: false, reason };
  if (code === ReplyCode.NotOwner || code === ReplyCode.TokenSuperseded) {
    out.token = num(reply[1]);
    out.owner = str(reply[2]);
  }
  if (code === ReplyCode.AlreadySettled) out.state = str(reply[1]);
  return out;
}

const stateNames = { R: 'running', D: 'done', F: 'failed', X: 'released' } as const;

export function workerOf(session: string): string {
  const i = session.lastIndexOf('#');
  return i < 0 ? session : session.slice(0, i);
}

export function decodeInspect(reply: Raw, loc: TaskLocation): InspectReply {
  const fault = faultToError(reply, loc);
  if (fault) throw fault;
  if (reply[0] === ReplyCode.Absent) return { found: false, serverNow: num(reply[1]) };
  const session = str(reply[4]);
  const progress = str(reply[8]);
  return {
    found: true,
    state: stateNames[str(reply[1]) as keyof typeof stateNames],
    token: num(reply[2]),
    attempt: num(reply[3]),
    session,
    worker: workerOf(session),
    deadline: num(reply[5]),
    claimedAt: num(reply[6]),
    updatedAt: num(reply[7]),
    progress: progress === '' ? undefined : Number(progress),
    payload: str(reply[9]),
    ownerPttl: num(reply[10]),
    serverNow: num(reply[11]),
    keepMs: num(reply[12]),
  };
}

export function decodePeek(entry: string): PeekEntry {
  if (entry === '') return { state: 'absent' };
  const [s, k, o] = entry.split(':');
  if (s === 'E') return { state: 'error', code: Number(k) };
  return { state: s as 'R' | 'D' | 'F' | 'X', token: Number(k), orphaned: o === '1' };
}

export function decodeSession(reply: Raw): SessionReply {
  if (reply[0] === ReplyCode.Ok) return { ok: true, serverNow: num(reply[1]), pttl: num(reply[2]) };
  if (reply[0] === ReplyCode.SessionExists) return { ok: false, reason: 'session-exists' };
  if (reply[0] === ReplyCode.SessionExpired) return { ok: false, reason: 'session-expired' };
  throw new Error(`unexpected session reply ${JSON.stringify(reply)}`);
}

// ---------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------

export type Client = Redis | Cluster;

export function isClient(c: unknown): c is Client {
  return c instanceof Redis || c instanceof Cluster;
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

/** Wait until the client is ready, at most `ms`. */
export async function connectClient(client: Client, ms: number): Promise<void> {
  if (client.status === 'ready') return;
  const ready = new Promise<void>((resolve, reject) => {
    const onReady = () => {
      cleanup();
      resolve();
    };
    const onEnd = () => {
      cleanup();
      reject(new RedisUnavailableError(`the connection to ${describeClient(client)} was closed`));
    };
    const cleanup = () => {
      client.off('ready', onReady);
      client.off('end', onEnd);
    };
    client.on('ready', onReady);
    client.on('end', onEnd);
  });
  // the promise of connect() may reject on its own; readiness is what we wait for
  if (client.status === 'wait') client.connect().catch(() => {});
  await withTimeout(
    ready,
    ms,
    () =>
      `could not reach ${describeClient(client)} within ${ms} ms (option \`connectTimeoutMs\`); is it running and reachable?`,
  );
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
  return err;
}

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
}

// ---------------------------------------------------------------------------------
// One Redis (standalone, Sentinel-managed, or a Cluster: a namespace is one slot)
// ---------------------------------------------------------------------------------

export class RedisStore implements Store {
  readonly client: Client;
  private readonly owned: boolean;
  private subscriber: Client | ClusterSubscriber | undefined;
  private readonly prefix: string;
  private readonly replication: RedisStoreOptions['replication'];
  readonly eventsAreOutcomes: boolean;
  private readonly pubsubMode: NonNullable<RedisStoreOptions['pubsub']>;
  /** The channel argument of the scripts: the namespace channel, '#'-marked for SPUBLISH. */
  private eventChannel: string;

  constructor(
    conn: RedisConnection,
    private readonly keys: Keys,
    private readonly timeoutMs: number,
    opts: RedisStoreOptions = {},
  ) {
    if (isClient(conn)) {
      this.client = conn;
      this.owned = false;
    } else {
      this.client = createClient(conn, timeoutMs);
      this.owned = true;
    }
    // ioredis applies keyPrefix to KEYS but not to keys a script builds itself
    const clientOpts =
      this.client instanceof Cluster ? this.client.options.redisOptions : this.client.options;
    this.prefix = clientOpts?.keyPrefix ?? '';
    this.replication = opts.replication;
    this.eventsAreOutcomes = !opts.replication;
    this.pubsubMode = this.client instanceof Cluster ? (opts.pubsub ?? 'auto') : 'classic';
    this.eventChannel = this.pubsubMode === 'sharded' ? `#${this.shardChannel}` : keys.channel;
    defineScripts(this.client);
  }

  /**
   * The sharded channel: named like the keys (client key prefix included), so that it maps
   * to the namespace's slot whatever the prefix, and SPUBLISH inside a script stays local.
   */
  private get shardChannel(): string {
    return this.prefix + this.keys.channel;
  }

  /** Whether namespace events use sharded pub/sub (decided at connect() in 'auto' mode). */
  get sharded(): boolean {
    return this.eventChannel.startsWith('#');
  }

  private call(name: ScriptName, args: (string | number)[]): Promise<Raw> {
    return withTimeout(
      callScript(this.client, name, args) as Promise<Raw>,
      this.timeoutMs,
      () =>
        `${describeClient(this.client)} did not answer within ${this.timeoutMs} ms (option \`connectTimeoutMs\`)`,
    ).catch((err: unknown) => {
      throw asUnavailable(err, this.client);
    });
  }

  /**
   * Run a script and `WAIT` on one connection, back to back (one pipeline), so that WAIT
   * counts the replicas that acknowledged this very write. Returns the reply and the
   * number of replicas that acknowledged it in time.
   */
  private async callAndWait(
    name: ScriptName,
    args: (string | number)[],
  ): Promise<{ raw: Raw; acked: number }> {
    const r = this.replication;
    if (!r) throw new Error('callAndWait without replication options');
    const def = loadScripts()[name];
    const numberOfKeys = def.numberOfKeys ?? 0;
    const attempt = async (load: boolean): Promise<{ raw: Raw; acked: number } | undefined> => {
      const pipe = this.client.pipeline();
      // EVALSHA first; EVAL only when the server does not know the script yet, so that the
      // script and its WAIT always leave together (ioredis would resend a NOSCRIPT eval alone)
      if (load) pipe.eval(def.lua, numberOfKeys, ...args);
      else pipe.evalsha(def.sha1, numberOfKeys, ...args);
      pipe.wait(r.waitReplicas, r.waitTimeoutMs);
      const res = await pipe.exec();
      const [scriptRes, waitRes] = res ?? [];
      const scriptErr = scriptRes?.[0];
      if (scriptErr) {
        if (!load && /NOSCRIPT/.test(scriptErr.message)) return undefined;
        throw scriptErr;
      }
      if (waitRes?.[0]) throw waitRes[0];
      return { raw: scriptRes?.[1] as Raw, acked: Number(waitRes?.[1] ?? 0) };
    };
    const run = async () => (await attempt(false)) ?? (await attempt(true));
    const out = await withTimeout(
      run(),
      this.timeoutMs + r.waitTimeoutMs,
      () =>
        `${describeClient(this.client)} did not answer within ${this.timeoutMs + r.waitTimeoutMs} ms (options \`connectTimeoutMs\` + \`replication.waitTimeoutMs\`)`,
    ).catch((err: unknown) => {
      throw asUnavailable(err, this.client);
    });
    if (out === undefined) throw new Error(`script ${name} could not be loaded`);
    return out;
  }

  /**
   * WAIT counts the replicas that have this connection's own writes; a read writes
   * nothing. A small write after it (one key per namespace, same slot) comes later in the
   * replication stream than whatever was read, so a replica that acknowledged it has that
   * too. Returns how many did in time.
   */
  private async waitForWhatWasRead(): Promise<number> {
    const r = this.replication;
    if (!r) return 0;
    const fence = `${this.keys.base}replication-fence`;
    const res = await withTimeout(
      this.client
        .pipeline()
        .set(fence, '1', 'PX', 60_000)
        .wait(r.waitReplicas, r.waitTimeoutMs)
        .exec(),
      this.timeoutMs + r.waitTimeoutMs,
      () =>
        `${describeClient(this.client)} did not answer WAIT within ${this.timeoutMs + r.waitTimeoutMs} ms`,
    ).catch((err: unknown) => {
      throw asUnavailable(err, this.client);
    });
    const [setRes, waitRes] = res ?? [];
    if (setRes?.[0]) throw asUnavailable(setRes[0], this.client);
    if (waitRes?.[0]) throw asUnavailable(waitRes[0], this.client);
    return Number(waitRes?.[1] ?? 0);
  }

  /** A write that replicas did not acknowledge in time: reject it, or accept it as made. */
  private replicationShortfall(what: string, acked: number): ReplicationError | undefined {
    const r = this.replication;
    if (!r || acked >= r.waitReplicas || r.onTimeout === 'accept') return undefined;
    return new ReplicationError(
      `${what}: ${acked} of ${r.waitReplicas} replica(s) of ${describeClient(this.client)} acknowledged it within ${r.waitTimeoutMs} ms (option \`replication\`); it was not counted`,
      acked,
    );
  }

  async connect(): Promise<void> {
    await connectClient(this.client, this.timeoutMs);
    if (this.pubsubMode === 'auto' && this.client instanceof Cluster) {
      // sharded pub/sub needs Redis 7 on every shard; ask one of them once
      const version = await withTimeout(
        this.client.info('server'),
        this.timeoutMs,
        () => `${describeClient(this.client)} did not answer INFO within ${this.timeoutMs} ms`,
      ).then(
        (info) => Number(/redis_version:(\d+)/.exec(info)?.[1] ?? 0),
        () => 0,
      );
      this.eventChannel = version >= 7 ? `#${this.shardChannel}` : this.keys.channel;
    }
  }

  private claimArgv(loc: TaskLocation, a: ClaimArgs): (string | number)[] {
    return [
      loc.container,
      loc.index,
      this.keys.session(a.session),
      loc.field,
      a.session,
      this.prefix + this.keys.sessionPrefix,
      a.sessionTtlMs,
      a.taskTimeoutMs,
      a.retentionMs,
      a.maxAttempts,
      a.dryRun ? '1' : '0',
      this.eventChannel,
      loc.ref,
    ];
  }

  async claim(loc: TaskLocation, a: ClaimArgs): Promise<ClaimReply> {
    const args = this.claimArgv(loc, a);
    if (!this.replication) return decodeClaim(await this.call('claim', args), loc);
    // a dry run writes nothing: WAIT only where its answer is acted on (below)
    const { raw, acked } = a.dryRun
      ? { raw: await this.call('claim', args), acked: -1 }
      : await this.callAndWait('claim', args);
    const reply = decodeClaim(raw, loc);
    if (reply.type === 'done' || (reply.type === 'failed' && reply.terminal)) {
      // An outcome read from the master may be one a failover is about to lose (a settle
      // its replicas do not have yet): it counts once a replica has it.
      const unsure = this.replicationShortfall(
        `the outcome of task ${JSON.stringify(loc.taskId)}`,
        await this.waitForWhatWasRead(),
      );
      if (unsure) throw unsure;
      return reply;
    }
    if (reply.type !== 'granted' && reply.type !== 'resumed') return reply;
    // A resumed grant is one whose first WAIT may have failed: it runs only once replicas
    // have it, like a new grant (WAIT counts what the connection wrote so far).
    const shortfall = this.replicationShortfall(
      `the grant of task ${JSON.stringify(loc.taskId)}`,
      acked >= 0 ? acked : await this.waitForWhatWasRead(),
    );
    if (!shortfall) return reply;
    // Not counted: give it back (as a release, so that any worker may claim it at once)
    // rather than run a task whose grant a failover could erase. Should the give-back
    // fail, the record stays this session's, and the next claim is answered 'resumed':
    // that grant, too, runs only once replicas acknowledge it.
    await this.call(
      'release',
      this.releaseArgv(loc, { session: a.session, token: reply.token, retentionMs: a.retentionMs }),
    ).catch(() => {});
    throw shortfall;
  }

  /**
   * Quorum mode: claim with a minimum token. A grant keeps the record it replaced on the
   * node (its undo note), so that undo() can restore it exactly.
   */
  async claimAtLeast(loc: TaskLocation, a: ClaimArgs, minToken: number): Promise<ClaimReply> {
    return decodeClaim(await this.call('claim', [...this.claimArgv(loc, a), minToken]), loc);
  }

  /**
   * Quorum mode: take back a grant that did not win its quorum; the record becomes the one
   * the grant replaced (see undo-2.lua). `token`: the grant's, or undefined for whichever
   * grant of the session the node holds, except `keep` (a node whose answer never came).
   * True when undone, false when the node holds no such grant. `announce`: publish an
   * 'undone' event (waiters re-claim at once).
   */
  async undo(
    loc: TaskLocation,
    a: { session: string; token?: number; keep?: number; retentionMs: number; announce: boolean },
  ): Promise<boolean> {
    const raw = await this.call('undo', [
      loc.container,
      loc.index,
      loc.field,
      a.session,
      a.token ?? '',
      a.keep ?? '',
      a.retentionMs,
      a.announce ? this.eventChannel : '',
      loc.ref,
    ]);
    const fault = faultToError(raw, loc);
    if (fault) throw fault;
    return raw[0] === ReplyCode.Ok;
  }

  /**
   * Quorum mode: write a settled outcome onto this node if it missed it (see repair-2.lua).
   * `counted`: a majority took it; until then a node that holds the grant itself keeps it.
   * 'written': the node has the outcome now; 'kept': it keeps what it has (something newer,
   * or the grant itself); 'later': another session's older grant runs there, which may be
   * gone soon.
   */
  async repair(
    loc: TaskLocation,
    a: SettleArgs & { attempt: number; counted: boolean },
  ): Promise<'written' | 'kept' | 'later'> {
    const raw = await this.call('repair', [
      loc.container,
      loc.index,
      loc.field,
      a.session,
      a.token,
      a.attempt,
      a.state,
      a.payload,
      a.retentionMs,
      a.backoffMs,
      a.counted ? '1' : '0',
    ]);
    const fault = faultToError(raw, loc);
    if (fault) throw fault;
    if (raw[0] === ReplyCode.Ok) return 'written';
    return raw[0] === ReplyCode.Absent ? 'kept' : 'later';
  }

  async settle(loc: TaskLocation, a: SettleArgs): Promise<OwnerReply> {
    const args = [
      loc.container,
      loc.index,
      this.keys.session(a.session),
      loc.field,
      a.session,
      a.token,
      a.state,
      a.payload,
      a.retentionMs,
      a.backoffMs,
      this.eventChannel,
      loc.ref,
      a.maxAttempts ?? 0,
    ];
    if (!this.replication) return decodeOwner(await this.call('settle', args), loc);
    // a retried settle (the first was not acknowledged by enough replicas) is answered as
    // settled, `repeated`, by the script itself
    const { raw, acked } = await this.callAndWait('settle', args);
    const reply = decodeOwner(raw, loc);
    if (!reply.ok) return reply;
    const shortfall = this.replicationShortfall(
      `the settle of task ${JSON.stringify(loc.taskId)}`,
      acked,
    );
    if (shortfall) throw shortfall;
    return reply;
  }

  private releaseArgv(
    loc: TaskLocation,
    a: { session: string; token: number; retentionMs: number },
  ) {
    return [
      loc.container,
      loc.index,
      this.keys.session(a.session),
      loc.field,
      a.session,
      a.token,
      a.retentionMs,
      this.eventChannel,
      loc.ref,
    ];
  }

  async release(
    loc: TaskLocation,
    a: { session: string; token: number; retentionMs: number },
  ): Promise<OwnerReply> {
    return decodeOwner(await this.call('release', this.releaseArgv(loc, a)), loc);
  }

  async progress(
    loc: TaskLocation,
    a: { session: string; token: number; progress: number; note: string },
  ): Promise<OwnerReply> {
    const raw = await this.call('progress', [
      loc.container,
      loc.index,
      this.keys.session(a.session),
      loc.field,
      a.session,
      a.token,
      String(a.progress),
      a.note,
    ]);
    return decodeOwner(raw, loc);
  }

  async inspect(loc: TaskLocation): Promise<InspectReply> {
    const raw = await this.call('inspect', [
      loc.container,
      loc.index,
      loc.field,
      this.prefix + this.keys.sessionPrefix,
    ]);
    return decodeInspect(raw, loc);
  }

  async peek(locs: readonly TaskLocation[]): Promise<PeekEntry[]> {
    if (locs.length === 0) return [];
    const raw = await this.call('peek', [
      locs.length,
      ...locs.map((l) => l.container),
      this.prefix + this.keys.sessionPrefix,
      ...locs.map((l) => l.field),
    ]);
    return raw.map((e) => decodePeek(String(e)));
  }

  async session(
    op: 'open' | 'renew' | 'close' | 'ttl',
    sessionId: string,
    ttlMs: number,
    desc = '',
  ): Promise<SessionReply> {
    const args = [this.keys.session(sessionId), op, ttlMs, desc];
    if (!this.replication || (op !== 'open' && op !== 'renew')) {
      return decodeSession(await this.call('session', args));
    }
    // a renewal that a failover could erase would let the peer take over too early
    const { raw, acked } = await this.callAndWait('session', args);
    const reply = decodeSession(raw);
    if (!reply.ok) return reply;
    const shortfall = this.replicationShortfall(`the ${op} of session ${sessionId}`, acked);
    if (shortfall) throw shortfall;
    return reply;
  }

  async subscribe(onMessage: (msg: string) => void, onReconnect: () => void): Promise<void> {
    if (this.client instanceof Cluster) {
      // on the node that owns the namespace's slot, following it when it moves
      const channel = this.sharded ? this.shardChannel : this.keys.channel;
      const cs = new ClusterSubscriber(
        this.client,
        channel,
        onMessage,
        onReconnect,
        this.timeoutMs,
        this.sharded,
      );
      this.subscriber = cs;
      try {
        await cs.start();
      } catch (err) {
        if (this.subscriber === cs) this.subscriber = undefined;
        cs.disconnect();
        throw err;
      }
      return;
    }
    const sub = this.client.duplicate() as Client;
    this.subscriber = sub;
    sub.on('error', () => {
      // reconnection is ioredis's job; onReconnect re-checks every waiting task
    });
    sub.on('message', (_channel: string, msg: string) => onMessage(msg));
    let first = true;
    sub.on('ready', () => {
      if (first) {
        first = false;
        return;
      }
      onReconnect();
    });
    try {
      await connectClient(sub, this.timeoutMs);
      await withTimeout(
        sub.subscribe(this.keys.channel),
        this.timeoutMs,
        () => 'SUBSCRIBE timed out',
      );
    } catch (err) {
      // leave nothing reconnecting behind; a later subscribe() starts afresh
      if (this.subscriber === sub) this.subscriber = undefined;
      sub.disconnect();
      throw err;
    }
  }

  async close(): Promise<void> {
    const subs = this.subscriber;
    this.subscriber = undefined;
    if (subs) subs.disconnect();
    if (!this.owned) return;
    if (this.client.status !== 'ready') {
      // nothing to say goodbye to (never connected, or Redis is away): QUIT would wait forever
      this.client.disconnect();
      return;
    }
    await withTimeout(this.client.quit(), this.timeoutMs, () => 'QUIT timed out').catch(() =>
      this.client.disconnect(),
    );
  }
}
