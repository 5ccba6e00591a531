import type { Redis } from 'ioredis';
import { ReplyCode } from '../shared/codes.js';
import { type Client, connectClient, withTimeout } from './connection.js';
import type { BindReply, LiveLink, Raw } from './replies.js';

/*
 * The server side of connection-bound sessions, for one Redis: the subscriber connection
 * a session is bound to, and the decoding of bind-2.lua's replies. The argument is in
 * binding.ts; the evidence in lua/includes/binding.lua.
 *
 * What a holder proves is its *subscription* to the session's liveness channel, not only
 * its connection: the scripts read PUBSUB (SHARD)NUMSUB of that channel, and a server may
 * drop a subscription while the connection stays (a Cluster node that loses a slot
 * unsubscribes that slot's shard channels with a `sunsubscribe` push; if the slot comes
 * back to the same node, a PING on the connection is answered while the channel has no
 * subscriber). So (both here and in topology-cluster.ts):
 * - a proof is a message the holder publishes to its own liveness channel on its command
 *   connection, counted only when it arrives on the subscriber connection it was sent for
 *   (SubscriptionProofs); a publish that reached nobody is the subscription seen gone;
 * - an unsubscribe reply the subscriber did not ask for (UnsubscribeWatch) ends the
 *   connection, as a drop: the binding is undone and made again on a new connection.
 * The same mechanism on every topology, single Redis included, where no server drops a
 * subscription on its own today: one contract for the binding, a publish per proof
 * interval (100 ms) per worker on a connection that is there anyway, and nothing to
 * re-argue if a server ever does (ACL changes, RESET).
 */

/** Where a RESP2 reply that starts at `pos` ends: -1 when not all of it is there yet. */
function replyEnd(
  b: Buffer,
  pos: number,
  head: string[] | undefined,
  top: boolean,
  need: { at: number },
): number {
  if (pos >= b.length) return -1;
  const cr = b.indexOf(13, pos);
  if (cr < 0 || cr + 1 >= b.length) return -1;
  const type = b[pos];
  const next = cr + 2;
  if (type === 0x24) {
    // $<n>: a bulk string
    const n = Number(b.toString('latin1', pos + 1, cr));
    if (n < 0) return next;
    if (next + n + 2 > b.length) {
      need.at = next + n + 2;
      return -1;
    }
    head?.push(b.toString('utf8', next, next + n));
    return next + n + 2;
  }
  if (type === 0x2a) {
    // *<n>: an array (of a push, its kind and channel first)
    const n = Number(b.toString('latin1', pos + 1, cr));
    let p = next;
    for (let i = 0; i < n; i++) {
      p = replyEnd(b, p, top && i < 2 ? head : undefined, false, need);
      if (p < 0) return -1;
    }
    return p;
  }
  // +, -, : a line
  return next;
}

/**
 * Reads what a subscriber connection receives, beside ioredis, and reports every
 * `unsubscribe`/`sunsubscribe` reply with its channel. ioredis (5.x) has no event for an
 * unsubscribe the server sends on its own: it takes it for the answer to whichever command
 * waits (a PING resolves with a count) or reports a queue state error. Fed every chunk of
 * the connection's socket from its first byte, after ioredis's own parser.
 */
export class UnsubscribeWatch {
  private pending: Buffer[] = [];
  private size = 0;
  /** Bytes the first incomplete reply needs at least before it is read again. */
  private need = 0;

  constructor(private readonly onUnsubscribe: (channel: string) => void) {}

  /** Read the socket of `conn` from now on (call on its 'connect', before any reply). */
  static attach(conn: Redis, onUnsubscribe: (channel: string) => void): void {
    const watch = new UnsubscribeWatch(onUnsubscribe);
    conn.stream.on('data', (chunk: Buffer) => watch.feed(chunk));
  }

  feed(chunk: Buffer): void {
    this.pending.push(chunk);
    this.size += chunk.length;
    if (this.size < this.need) return;
    const b = this.pending.length === 1 ? chunk : Buffer.concat(this.pending, this.size);
    let pos = 0;
    const need = { at: 0 };
    for (;;) {
      const head: string[] = [];
      need.at = 0;
      const end = replyEnd(b, pos, head, true, need);
      if (end < 0) break;
      pos = end;
      const [kind, channel] = head;
      if ((kind === 'sunsubscribe' || kind === 'unsubscribe') && channel !== undefined)
        this.onUnsubscribe(channel);
    }
    const rest = pos < b.length ? b.subarray(pos) : undefined;
    this.pending = rest ? [rest] : [];
    this.size = rest?.length ?? 0;
    this.need = need.at > pos ? need.at - pos : this.size + 1;
    if (!rest) this.need = 0;
  }
}

/**
 * Subscription proofs (see above): `prove` publishes a token to a liveness channel and
 * resolves when `arrived` reports it on the connection it was sent for.
 */
export class SubscriptionProofs {
  private seq = 0;
  private readonly waiting = new Map<string, { via: object; resolve: () => void }>();

  constructor(private readonly timeoutMs: number) {}

  /** A message on a liveness channel arrived on connection `via`. */
  arrived(via: object, token: string): void {
    const w = this.waiting.get(token);
    if (w && w.via === via) w.resolve();
  }

  /**
   * Publish a proof for the subscription of connection `via` and wait for it there.
   * `publish` answers the number of subscribers the server delivered it to; none is the
   * subscription gone (`gone` is told, and the proof fails).
   */
  async prove(
    via: object,
    publish: (token: string) => Promise<unknown>,
    gone: () => void,
    /**
     * When the publish itself fails (the command connection is down, not the
     * subscription): a PING on the subscriber, which proves that connection still stands.
     * A subscription lost while its connection stands is an unsubscribe the server sends,
     * which the watch above sees; so a command link that drops alone ends no lease before
     * the session's TTL, as before the proof was a message.
     */
    fallback?: () => Promise<unknown>,
  ): Promise<void> {
    this.seq += 1;
    const token = String(this.seq);
    const arrived = new Promise<void>((resolve) => this.waiting.set(token, { via, resolve }));
    const proof = (async () => {
      let receivers: number;
      try {
        receivers = Number(await publish(token));
      } catch (err) {
        if (!fallback) throw err;
        await fallback();
        return;
      }
      if (receivers === 0) {
        gone();
        throw new Error('the proof reached no subscriber: the subscription is gone');
      }
      await arrived;
    })();
    try {
      await withTimeout(proof, this.timeoutMs, () => 'the subscription proof timed out');
    } finally {
      this.waiting.delete(token);
      proof.catch(() => {});
    }
  }
}

export function decodeBind(raw: Raw): BindReply {
  switch (raw[0]) {
    case ReplyCode.Ok:
      return { ok: true, runId: String(raw[1] ?? '') };
    case ReplyCode.SessionExpired:
      return { ok: false, reason: 'session-expired' };
    case ReplyCode.NotSubscribed:
      return { ok: false, reason: 'not-subscribed' };
    case ReplyCode.NewerBinding:
      return { ok: false, reason: 'newer-binding' };
    case ReplyCode.Unsupported:
      return { ok: false, reason: 'unsupported', version: String(raw[1] ?? '') };
  }
  throw new Error(`unexpected bind reply ${JSON.stringify(raw)}`);
}

/**
 * The worker's subscriber on one Redis: namespace events, and the sessions' liveness channels.
 *
 * It restores its own subscriptions after a reconnect (ioredis's autoResubscribe is off):
 * ioredis sends those SUBSCRIBE commands without handling their failure, so a connection
 * that drops again before they are answered made an unhandled rejection, which ends the
 * process (ioredis 5.11; redis/ioredis#2187). `ready` listeners run once the channels are
 * subscribed again. An unsubscribe it did not ask for, or a proof that reached no
 * subscriber, ends the connection (`close`) and reconnects, as a drop.
 */
export class Subscriber implements LiveLink {
  readonly client: Redis;
  private first = true;
  /** Subscribed now, or to be subscribed again after a reconnect. */
  private readonly channels = new Set<string>();
  /** Connected, with its channels subscribed. */
  private restored = false;
  /** This connection was reported closed (once per connection). */
  private down = false;
  private readonly readyListeners: (() => void)[] = [];
  private readonly closeListeners: (() => void)[] = [];
  private readonly proofs: SubscriptionProofs;

  constructor(
    private readonly main: Client,
    private readonly channel: string,
    /** Liveness channel prefix, as the scripts name it (client key prefix included). */
    private readonly livePrefix: string,
    private readonly timeoutMs: number,
    onMessage: (msg: string) => void,
    onReconnect: () => void,
  ) {
    this.proofs = new SubscriptionProofs(timeoutMs);
    this.client = (main as Redis).duplicate({ autoResubscribe: false });
    this.client.on('error', () => {
      // reconnection is ioredis's job; onReconnect re-checks every waiting task
    });
    this.client.on('connect', () => {
      this.down = false;
      UnsubscribeWatch.attach(this.client, (ch) => {
        if (this.channels.has(ch)) this.lost();
      });
    });
    this.client.on('message', (ch: string, msg: string) => {
      if (ch === channel) onMessage(msg);
      else if (ch.startsWith(livePrefix)) this.proofs.arrived(this.client.stream, msg);
    });
    this.client.on('close', () => this.drop());
    this.client.on('ready', () => {
      if (this.first) {
        this.first = false;
        return;
      }
      const all = [...this.channels];
      const restore = all.length > 0 ? this.client.subscribe(...all) : Promise.resolve(0);
      restore.then(
        () => {
          if (this.client.status !== 'ready' || this.down) return;
          this.restored = true;
          for (const listener of this.readyListeners) listener();
          onReconnect();
        },
        () => {
          // the connection dropped again: the next 'ready' restores them
        },
      );
    });
  }

  async start(): Promise<void> {
    await connectClient(this.client, this.timeoutMs);
    this.channels.add(this.channel);
    await withTimeout(
      this.client.subscribe(this.channel),
      this.timeoutMs,
      () => 'SUBSCRIBE timed out',
    );
    this.restored = true;
  }

  get ready(): boolean {
    return this.restored && !this.down && this.client.status === 'ready';
  }

  on(event: 'ready' | 'close', listener: () => void): void {
    if (event === 'ready') this.readyListeners.push(listener);
    else this.closeListeners.push(listener);
  }

  /** The connection is gone for the binding (closed, or its subscription was). */
  private drop(): void {
    this.restored = false;
    if (this.down) return;
    this.down = true;
    for (const listener of this.closeListeners) listener();
  }

  /** The server dropped a subscription of a standing connection: end it, as a drop. */
  private lost(): void {
    if (this.down) return;
    this.drop();
    this.client.disconnect(true);
  }

  async follow(sessionId: string, previous: string): Promise<void> {
    const live = this.livePrefix + sessionId;
    this.channels.add(live);
    await withTimeout(this.client.subscribe(live), this.timeoutMs, () => 'SUBSCRIBE timed out');
    if (previous && previous !== sessionId) {
      this.channels.delete(this.livePrefix + previous);
      await this.client.unsubscribe(this.livePrefix + previous).catch(() => {});
    }
  }

  /** A subscription proof (see above): PUBLISH on the command connection, back here. */
  async ping(sessionId: string): Promise<void> {
    const via = this.client.stream;
    const live = this.livePrefix + sessionId;
    await this.proofs.prove(
      via,
      (token) => this.main.publish(live, token),
      () => {
        if (this.client.stream === via && this.channels.has(live)) this.lost();
      },
      async () => {
        if (this.client.stream !== via) throw new Error('the subscriber reconnected');
        await this.client.ping();
      },
    );
  }

  disconnect(): void {
    this.client.disconnect();
  }
}
