import { Cluster } from 'ioredis';
import { ReplyCode } from '../shared/codes.js';
import type { RedisConnection } from '../shared/options.js';
import { Batcher } from './batcher.js';
import {
  asUnavailable,
  type Client,
  connectClient,
  createClient,
  describeClient,
  isClient,
  type RedisStoreOptions,
  withTimeout,
} from './connection.js';
import { DECLARE_ROUNDS, KnownOwners } from './declared.js';
import type { Keys, TaskLocation } from './keys.js';
import { decodeBind, Subscriber } from './liveness.js';
import { Replication } from './replication.js';
import {
  type ClaimArgs,
  type ClaimReply,
  decodeClaim,
  decodeInspect,
  decodeOwner,
  decodePeek,
  decodeSession,
  faultToError,
  type HolderState,
  type InspectReply,
  type LiveLink,
  type OwnerReply,
  type PeekEntry,
  type Raw,
  type ReleaseArgs,
  type SessionReply,
  type SettleArgs,
  type Store,
} from './replies.js';
import {
  type Answer,
  type ClaimGroup,
  type ClaimItem,
  claimArgs,
  claimGroupOf,
  claimKey,
  coverArgs,
  LastGroup,
  type OwnerItem,
  type ProgressItem,
  progressArgs,
  type ReleaseGroup,
  releaseArgs,
  releaseKey,
  type ScriptContext,
  type SettleGroup,
  type SettleItem,
  settleArgs,
  settleGroupOf,
  settleKey,
} from './script-args.js';
import { callScript, defineScripts, type ScriptName } from './scripts.js';
import { ClusterSubscriber } from './topology-cluster.js';

export * from './connection.js';
export * from './replies.js';

// ---------------------------------------------------------------------------------
// One Redis (standalone, Sentinel-managed, or a Cluster: a namespace is one slot)
// ---------------------------------------------------------------------------------

interface Batch {
  replies: Raw[];
  /** Replicas that acknowledged the batch (WAIT); -1 when not asked. */
  acked: number;
}

export class RedisStore implements Store {
  readonly client: Client;
  private readonly owned: boolean;
  private subscriber: Subscriber | ClusterSubscriber | undefined;
  private readonly prefix: string;
  /** Entries the task history keeps (0: none). */
  private readonly historyLength: number;
  /** Sessions met holding tasks: the claim and peek scripts declare their keys. */
  private readonly owners = new KnownOwners();
  /** WAIT after writes (option `replication`); undefined without it. */
  private readonly replicas: Replication | undefined;
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
    this.replicas = opts.replication
      ? new Replication(this.client, opts.replication, timeoutMs, `${keys.base}replication-fence`)
      : undefined;
    this.eventsAreOutcomes = !opts.replication;
    this.historyLength = opts.historyLength ?? 10_000;
    this.pubsubMode = this.client instanceof Cluster ? (opts.pubsub ?? 'auto') : 'classic';
    this.eventChannel = this.pubsubMode === 'sharded' ? `#${this.shardChannel}` : keys.channel;
    defineScripts(this.client);
  }

  /** What the batch scripts' arguments are built from (script-args.ts). */
  private scriptContext(): ScriptContext {
    return {
      keys: this.keys,
      eventChannel: this.eventChannel,
      livePrefix: this.livePrefix,
      historyLength: this.historyLength,
    };
  }

  /**
   * The sharded channel: named like the keys (client key prefix included), so that it maps
   * to the namespace's slot whatever the prefix, and SPUBLISH inside a script stays local.
   */
  private get shardChannel(): string {
    return this.prefix + this.keys.channel;
  }

  /**
   * The liveness channels' prefix as the scripts take it: '#' first where the subscriber
   * listens with SSUBSCRIBE (a Cluster's sharded pub/sub), so they count the right kind.
   */
  private get livePrefix(): string {
    return (this.sharded ? '#' : '') + this.prefix + this.keys.livePrefix;
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

  // -------------------------------------------------------------------------------
  // Transitions, coalesced: the calls of one event-loop turn with the same caller
  // arguments go to Redis as one script call (see batcher.ts); each task is decided
  // alone inside it, and answered alone.
  // -------------------------------------------------------------------------------

  /** Run a batch script, and WAIT for replicas after it when `wait` (replication safety). */
  private async batch(name: ScriptName, args: (string | number)[], wait: boolean): Promise<Batch> {
    if (wait && this.replicas) {
      const { raw, acked } = await this.replicas.callAndWait(name, args);
      return { replies: raw as unknown as Raw[], acked };
    }
    return { replies: (await this.call(name, args)) as unknown as Raw[], acked: -1 };
  }

  private readonly claims = new Batcher<ClaimGroup, ClaimItem, Answer>(async (g, items) => {
    const answers: Answer[] = new Array(items.length);
    // indexes into items of the tasks still to ask about (undefined: all of them)
    let pending: number[] | undefined;
    // a worker's earlier sessions may hold its tasks too (and a peek may ask about them)
    this.owners.note(g.session);
    for (let round = 1; pending === undefined || pending.length > 0; round++) {
      // the claimer and the peers it has met: the sessions a record may name as its owner
      const owners = this.owners.list(g.session);
      const asked = pending === undefined ? items : pending.map((i) => items[i]!);
      const args = claimArgs(this.scriptContext(), g, asked, owners);
      // a dry run writes nothing: no WAIT for it (see claim())
      const b = await this.batch('claim', args, !g.dryRun && !g.quorum);
      const again: number[] = [];
      const replies = b.replies;
      for (let j = 0; j < replies.length; j++) {
        const raw = replies[j]!;
        const i = pending === undefined ? j : pending[j]!;
        const code = Number(raw[0]);
        if (code === ReplyCode.Held || code === ReplyCode.OwnerUndeclared)
          this.owners.note(String(raw[1]));
        // undeclared: nothing was decided for this task; ask again with its owner's keys
        if (code === ReplyCode.OwnerUndeclared && round < DECLARE_ROUNDS) again.push(i);
        else answers[i] = { raw, acked: b.acked };
      }
      pending = again;
    }
    return answers;
  });

  private readonly claimGroups = new LastGroup(claimGroupOf, claimKey);

  private claimRaw(loc: TaskLocation, a: ClaimArgs, minToken: number | undefined): Promise<Answer> {
    const g = this.claimGroups.of(a, minToken !== undefined);
    return this.claims.load(this.claimGroups.key, g, { loc, minToken });
  }

  async claim(loc: TaskLocation, a: ClaimArgs): Promise<ClaimReply> {
    const { raw, acked } = await this.claimRaw(loc, a, undefined);
    const reply = decodeClaim(raw, loc);
    if (!this.replicas) return reply;
    // replication safety: an outcome counts, and a grant runs, once replicas have it; a
    // grant they did not acknowledge is given back unused (replication.ts)
    return this.replicas.confirmClaim(loc, reply, acked, (token) =>
      this.release(loc, { session: a.session, token, retentionMs: a.retentionMs, unused: true }),
    );
  }

  /**
   * Quorum mode: claim with a minimum token. A grant keeps the record it replaced on the
   * node (its undo note), so that undo() can restore it exactly.
   */
  async claimAtLeast(loc: TaskLocation, a: ClaimArgs, minToken: number): Promise<ClaimReply> {
    return decodeClaim((await this.claimRaw(loc, a, minToken)).raw, loc);
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
  /** The bound on one command of this store (connectTimeoutMs). */
  get commandTimeoutMs(): number {
    return this.timeoutMs;
  }

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

  private readonly settles = new Batcher<SettleGroup, SettleItem, Answer>(async (g, items) => {
    const b = await this.batch('settle', settleArgs(this.scriptContext(), g, items), true);
    return b.replies.map((raw) => ({ raw, acked: b.acked }));
  });

  private readonly settleGroups = new LastGroup(settleGroupOf, settleKey);

  async settle(loc: TaskLocation, a: SettleArgs): Promise<OwnerReply> {
    const g = this.settleGroups.of(a, a.maxAttempts ?? 0);
    const { raw, acked } = await this.settles.load(this.settleGroups.key, g, {
      loc,
      token: a.token,
      state: a.state,
      payload: a.payload,
      attempt: a.attempt,
    });
    // a retried settle (the first was not acknowledged by enough replicas) is answered as
    // settled, `repeated`, by the script itself
    const reply = decodeOwner(raw, loc);
    if (!reply.ok || !this.replicas) return reply;
    const shortfall = this.replicas.shortfall(
      `the settle of task ${JSON.stringify(loc.taskId)}`,
      acked,
    );
    if (shortfall) throw shortfall;
    return reply;
  }

  private readonly releases = new Batcher<ReleaseGroup, OwnerItem, Raw>(async (g, items) => {
    return (await this.batch('release', releaseArgs(this.scriptContext(), g, items), false))
      .replies;
  });

  async release(loc: TaskLocation, a: ReleaseArgs): Promise<OwnerReply> {
    const g: ReleaseGroup = {
      session: a.session,
      retentionMs: a.retentionMs,
      unused: a.unused === true,
    };
    return decodeOwner(await this.releases.load(releaseKey(g), g, { loc, token: a.token }), loc);
  }

  private readonly progresses = new Batcher<string, ProgressItem, Raw>(async (session, items) => {
    return (await this.batch('progress', progressArgs(this.keys, session, items), false)).replies;
  });

  async progress(
    loc: TaskLocation,
    a: { session: string; token: number; progress: number; note: string },
  ): Promise<OwnerReply> {
    const item = { loc, token: a.token, progress: a.progress, note: a.note };
    return decodeOwner(await this.progresses.load(a.session, a.session, item), loc);
  }

  private readonly covers = new Batcher<number, string, HolderState>(async (shareMs, sessions) => {
    const args = coverArgs(this.scriptContext(), sessions, shareMs);
    const raw = (await this.call('cover', args)) as unknown as Raw[];
    return raw.map((r) => {
      const s: HolderState = { pttl: Number(r[0]), seq: Number(r[1]), lostInMs: Number(r[2]) };
      if (Number(r[3]) === 1) s.shared = true;
      return s;
    });
  });

  cover(session: string, shareMs = 0): Promise<HolderState> {
    return this.covers.load(String(shareMs), shareMs, session);
  }

  async inspect(loc: TaskLocation): Promise<InspectReply> {
    // the owner's session key is declared, so it is known only after a first read
    const first = decodeInspect(
      await this.call('inspect', [2, loc.container, loc.index, loc.field, '']),
      loc,
    );
    if (!first.found || first.ownerPttl >= 0 || first.session === '') return first;
    const k = this.keys.session(first.session);
    const raw = await this.call('inspect', [
      3,
      loc.container,
      loc.index,
      k,
      loc.field,
      first.session,
    ]);
    return decodeInspect(raw, loc);
  }

  async peek(locs: readonly TaskLocation[]): Promise<PeekEntry[]> {
    if (locs.length === 0) return [];
    // the owners' sessions are declared (see declared.ts): a task held by another is
    // answered as possibly orphaned, and a claim decides
    const owners = this.owners.list();
    const raw = await this.call('peek', [
      locs.length + owners.length,
      ...locs.map((l) => l.container),
      ...owners.map((o) => this.keys.session(o)),
      locs.length,
      ...locs.map((l) => l.field),
      ...owners,
    ]);
    return raw.map((e) => decodePeek(String(e)));
  }

  async session(
    op: 'open' | 'renew' | 'close' | 'ttl' | 'describe',
    sessionId: string,
    ttlMs: number,
    desc = '',
  ): Promise<SessionReply> {
    const args = [this.keys.session(sessionId), this.keys.bind(sessionId), op, ttlMs, desc];
    if (!this.replicas || (op !== 'open' && op !== 'renew')) {
      return decodeSession(await this.call('session', args));
    }
    // a renewal that a failover could erase would let the peer take over too early
    const { raw, acked } = await this.replicas.callAndWait('session', args);
    const reply = decodeSession(raw);
    if (!reply.ok) return reply;
    const shortfall = this.replicas.shortfall(`the ${op} of session ${sessionId}`, acked);
    if (shortfall) throw shortfall;
    return reply;
  }

  async subscribe(onMessage: (msg: string) => void, onReconnect: () => void): Promise<void> {
    const sub =
      this.client instanceof Cluster
        ? // on the node that owns the namespace's slot, following it when it moves
          new ClusterSubscriber(
            this.client,
            this.sharded ? this.shardChannel : this.keys.channel,
            onMessage,
            onReconnect,
            this.timeoutMs,
            this.sharded,
            this.prefix + this.keys.livePrefix,
          )
        : new Subscriber(
            this.client,
            this.keys.channel,
            this.prefix + this.keys.livePrefix,
            this.timeoutMs,
            onMessage,
            onReconnect,
          );
    this.subscriber = sub;
    try {
      await sub.start();
    } catch (err) {
      // leave nothing reconnecting behind; a later subscribe() starts afresh
      if (this.subscriber === sub) this.subscriber = undefined;
      sub.disconnect();
      throw err;
    }
  }

  /** The subscriber, to which sessions are bound (on a Cluster: on the slot's owner). */
  liveLink(): LiveLink | undefined {
    return this.subscriber;
  }

  async bind(op: 'bind' | 'unbind', session: string, epoch: number, graceMs: number) {
    const keys = [this.keys.session(session), this.keys.bind(session)];
    const live = this.livePrefix + session;
    return decodeBind(await this.call('bind', [...keys, op, epoch, graceMs, live]));
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
