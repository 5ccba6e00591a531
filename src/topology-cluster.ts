import { EventEmitter } from 'node:events';
import { type Cluster, Redis } from 'ioredis';
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
 * slot's owner read their subscribers.
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
    conn.on(this.sharded ? 'smessage' : 'message', (_channel: string, msg: string) =>
      this.onMessage(msg),
    );
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
    this.conn = conn;
    this.nodeKey = key;
    conn.once('end', () => {
      if (this.conn !== conn || this.closed) return;
      this.links.emit('close');
      void this.resubscribe();
    });
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
    if (this.sharded) await conn.ssubscribe(ch);
    else await conn.subscribe(ch);
    if (previous && previous !== sessionId) {
      const old = this.livePrefix + previous;
      this.live.delete(old);
      await (this.sharded ? conn.sunsubscribe(old) : conn.unsubscribe(old)).catch(() => {});
    }
  }

  async ping(): Promise<void> {
    const conn = this.conn;
    if (!conn) throw new Error(`not subscribed to ${this.name}`);
    await conn.ping();
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
