import { EventEmitter } from 'node:events';
import { type Cluster, Command, Redis } from 'ioredis';
import { withTimeout } from './connection.js';
import { SubscriptionProofs, UnsubscribeWatch } from './liveness.js';
import type { LiveLink } from './replies.js';

/*
 * Redis Cluster support that ioredis does not give in the shape pairlock needs: a
 * subscription to a namespace's channel (or channels of the same hash slot), kept on whichever node owns the channel's slot,
 * with a callback after every re-subscription (pub/sub is at-most-once: the worker
 * re-checks its waiting tasks then). Sharded (SSUBSCRIBE, Redis 7) by default; a classic
 * SUBSCRIBE would work on any node, as every node relays classic messages, but it is kept
 * on the slot owner as well.
 *
 * It is also the connection a worker's session is bound to (LiveLink, see binding.ts):
 * the sessions' liveness channels share the namespace's slot, and the scripts of that
 * slot's owner read their subscribers. A node that loses the slot unsubscribes its shard
 * channels (a `sunsubscribe` push) and keeps the connection; were the slot to come back to
 * it (same run_id) before the cluster client noticed, a PING would still be answered
 * while the scripts see no subscriber. So (see liveness.ts) the holder proves its
 * subscription: SPUBLISH of a token to its liveness channel through the cluster (routed to
 * the slot's owner), counted when it arrives here; and an unsubscribe this class did not
 * ask for, or a proof that reached no subscriber, ends the connection as a drop
 * (`close`, then a new connection to the owner, then `ready`). It also keeps namespace
 * events flowing after such a bounce.
 */

// CRC16/XMODEM, the hash of Redis Cluster key slots
const CRC_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

/** The Cluster slot of a key or shard channel (its hash tag only, when it has one). */
export function keySlot(key: string): number {
  let bytes = Buffer.from(key);
  const open = bytes.indexOf(0x7b); // {
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1); // }
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const b of bytes) crc = ((crc << 8) & 0xffff) ^ (CRC_TABLE[((crc >> 8) ^ b) & 0xff] ?? 0);
  return crc % 16384;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class ClusterSubscriber implements LiveLink {
  private conn: Redis | undefined;
  /** Liveness channels followed (LiveLink), subscribed again on every new connection. */
  private readonly live = new Set<string>();
  private readonly links = new EventEmitter();
  private nodeKey = '';
  private closed = false;
  private resubscribing = false;
  /** The first subscribe is under way (a refresh meanwhile must not start a second one). */
  private starting = false;
  private readonly slot: number;
  private readonly channels: readonly string[];
  private readonly proofs: SubscriptionProofs;
  private readonly onRefresh = () => {
    if (!this.closed && !this.starting && !this.resubscribing && this.ownerKey() !== this.nodeKey)
      void this.resubscribe();
  };

  /** `channel`: one channel, or several that share a hash slot (one namespace's). */
  constructor(
    private readonly cluster: Cluster,
    channel: string | readonly string[],
    private readonly onMessage: (msg: string) => void,
    private readonly onReconnect: () => void,
    private readonly timeoutMs: number,
    private readonly sharded = true,
    /** Liveness channel prefix (LiveLink); '' for a subscriber that binds no session. */
    private readonly livePrefix = '',
  ) {
    this.channels = typeof channel === 'string' ? [channel] : channel;
    this.slot = keySlot(this.channels[0] ?? '');
    this.proofs = new SubscriptionProofs(timeoutMs);
  }

  /** A channel this class keeps subscribed (an unsubscribe of it it did not ask for). */
  private wants(channel: string): boolean {
    return this.channels.includes(channel) || this.live.has(channel);
  }

  /** Subscribe once; throws when the owner of the slot cannot be reached in time. */
  async start(): Promise<void> {
    this.cluster.on('refresh', this.onRefresh);
    this.starting = true;
    try {
      await this.subscribeOnce();
    } finally {
      this.starting = false;
    }
    // the slot moved while it subscribed: follow it now
    this.onRefresh();
  }

  private get name(): string {
    return this.channels.join(', ');
  }

  private ownerKey(): string {
    return this.cluster.slots[this.slot]?.[0] ?? '';
  }

  private async subscribeOnce(): Promise<void> {
    const key = this.ownerKey();
    const node = this.cluster
      .nodes('master')
      .find((n) => `${n.options.host}:${n.options.port}` === key);
    if (!node) throw new Error(`no node of the cluster owns slot ${this.slot} of ${this.name}`);
    const conn = new Redis({
      ...node.options,
      // the channel is already named like the keys; ioredis must not prefix it again
      keyPrefix: undefined,
      lazyConnect: true,
      connectTimeout: this.timeoutMs,
      enableOfflineQueue: true,
      maxRetriesPerRequest: 0,
      // this class reconnects, to whichever node owns the slot by then
      retryStrategy: () => null,
      autoResubscribe: false,
    });
    conn.on('error', () => {});
    // the server dropped a subscription of ours on a connection it keeps (a slot moved)
    let unsubscribed = false;
    conn.on('connect', () =>
      UnsubscribeWatch.attach(conn, (ch) => {
        if (!this.wants(ch)) return;
        unsubscribed = true;
        this.lost(conn);
      }),
    );
    conn.on(this.sharded ? 'smessage' : 'message', (channel: string, msg: string) => {
      if (this.livePrefix && channel.startsWith(this.livePrefix)) this.proofs.arrived(conn, msg);
      else this.onMessage(msg);
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        (async () => {
          await conn.connect();
          const all = [...this.channels, ...this.live];
          if (this.sharded) await conn.ssubscribe(...all);
          else await conn.subscribe(...all);
        })(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`subscribing to ${this.name} timed out`)),
            this.timeoutMs,
          );
          // a node that does not own the slot answers SSUBSCRIBE with MOVED, which ioredis
          // reports as this event and never as the command's failure: try again at once
          // (after a slot refresh) rather than after the timeout
          conn.once('moved', () => reject(new Error(`${this.name}: MOVED (slot ${this.slot})`)));
        }),
      ]);
    } catch (err) {
      conn.disconnect();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (this.closed) {
      conn.disconnect();
      return;
    }
    if (unsubscribed) {
      conn.disconnect();
      throw new Error(`${this.name}: unsubscribed by the server while subscribing`);
    }
    this.conn = conn;
    this.nodeKey = key;
    conn.once('end', () => this.lost(conn));
  }

  /** The connection, or a subscription on it, is gone: a drop; subscribe again. */
  private lost(conn: Redis): void {
    if (this.conn !== conn || this.closed) return;
    this.links.emit('close');
    void this.resubscribe();
  }

  get ready(): boolean {
    return this.conn?.status === 'ready';
  }

  on(event: 'ready' | 'close', listener: () => void): void {
    this.links.on(event, listener);
  }

  async follow(sessionId: string, previous: string): Promise<void> {
    const conn = this.conn;
    if (!conn || !this.livePrefix) throw new Error(`not subscribed to ${this.name}`);
    const ch = this.livePrefix + sessionId;
    this.live.add(ch);
    await withTimeout(
      this.sharded ? conn.ssubscribe(ch) : conn.subscribe(ch),
      this.timeoutMs,
      () => `subscribing to ${ch} timed out`,
    );
    if (previous && previous !== sessionId) {
      const old = this.livePrefix + previous;
      this.live.delete(old);
      await (this.sharded ? conn.sunsubscribe(old) : conn.unsubscribe(old)).catch(() => {});
    }
  }

  /** A subscription proof (see above): published through the cluster, back here. */
  async ping(sessionId: string): Promise<void> {
    const conn = this.conn;
    if (!conn || !this.livePrefix) throw new Error(`not subscribed to ${this.name}`);
    const channel = this.livePrefix + sessionId;
    await this.proofs.prove(
      conn,
      (token) => this.publish(channel, token),
      () => {
        // (not a channel it left meanwhile: a session changed)
        if (this.live.has(channel)) this.lost(conn);
      },
      async () => {
        if (this.conn !== conn) throw new Error('the subscriber moved');
        await conn.ping();
      },
    );
  }

  /**
   * Publish a proof token; answers the subscribers it reached. Built as a Command so that
   * no client key prefix is added (the channel is named like the keys already). SPUBLISH
   * goes to the slot's owner (MOVED followed), and counts the subscribers there; a classic
   * PUBLISH counts those of the node that runs it, so it goes to the subscriber's node.
   */
  private publish(channel: string, token: string): Promise<unknown> {
    const cmd = new Command(this.sharded ? 'spublish' : 'publish', [channel, token]);
    if (this.sharded) {
      this.cluster.sendCommand(cmd);
      return cmd.promise;
    }
    const node = this.cluster
      .nodes('master')
      .find((n) => `${n.options.host}:${n.options.port}` === this.nodeKey);
    if (!node) return Promise.reject(new Error(`no node ${this.nodeKey} for ${channel}`));
    node.sendCommand(cmd);
    return cmd.promise;
  }

  /** After a connection loss, a failover or a slot move: subscribe again, then re-check. */
  private async resubscribe(): Promise<void> {
    if (this.resubscribing) return;
    this.resubscribing = true;
    const old = this.conn;
    this.conn = undefined;
    old?.disconnect();
    let delay = 50;
    try {
      while (!this.closed) {
        // bounded: a refresh that never reports back must not stop the loop
        await Promise.race([
          new Promise<void>((resolve) => this.cluster.refreshSlotsCache(() => resolve())),
          sleep(this.timeoutMs),
        ]);
        try {
          await this.subscribeOnce();
          if (!this.closed) {
            this.onReconnect();
            this.links.emit('ready');
          }
          return;
        } catch {
          await sleep(delay);
          delay = Math.min(delay * 2, 2_000);
        }
      }
    } finally {
      this.resubscribing = false;
    }
  }

  disconnect(): void {
    this.closed = true;
    this.cluster.off('refresh', this.onRefresh);
    this.conn?.disconnect();
    this.conn = undefined;
  }
}
