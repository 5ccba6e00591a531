import type { Cluster, Redis } from 'ioredis';
import { ClusterSubscriber } from '../redis/topology-cluster.js';
import type { CliConnection, NodeView } from './common.js';

/*
 * The namespace's events, wherever the workers publish them. One Redis or a Sentinel-managed
 * master: SUBSCRIBE on it. A Cluster: on the master serving the namespace's slot, both
 * SSUBSCRIBE (sharded pub/sub, Redis 7: what workers use by default) and SUBSCRIBE (classic,
 * what they use with `clusterPubSub: 'classic'` or below Redis 7), so no setting of the
 * workers hides events; the subscription follows the slot. Quorum mode: every node
 * publishes the same event, so each is passed on once.
 */

/** The same event from several quorum nodes within this window is passed on once. */
const DEDUPE_MS = 1_000;
const DEDUPE_MAX = 4_096;

export interface EventSubscription {
  /** Where the events are read, for messages. */
  readonly where: string;
  close(): void;
}

export interface EventHandlers {
  /** One event, as published (JSON). */
  message(msg: string): void;
  /** A connection was lost (`up` false) or restored: events sent in between were not seen. */
  status(line: string, up: boolean): void;
}

/** A subscriber that reconnects for as long as it lives, saying when it lost and regained. */
async function subscribeNode(
  node: NodeView,
  channels: string[],
  h: EventHandlers,
  onMessage: (msg: string) => void,
): Promise<Redis> {
  const sub = (node.client as Redis).duplicate({
    lazyConnect: true,
    enableOfflineQueue: true,
    retryStrategy: (times: number) => Math.min(100 * times, 2_000),
    sentinelRetryStrategy: (times: number) => Math.min(100 * times, 2_000),
  });
  let down = !node.up;
  sub.on('error', (err: Error) => {
    if (!down)
      h.status(`pairlock: connection to ${node.label} lost (${err.message}); reconnecting…`, false);
    down = true;
  });
  sub.on('ready', () => {
    if (down)
      h.status(`pairlock: reconnected to ${node.label}; events sent meanwhile were not seen`, true);
    down = false;
  });
  sub.on('message', (_channel: string, msg: string) => onMessage(msg));
  const subscribed = sub.connect().then(() => sub.subscribe(...channels));
  // a quorum node that is away is subscribed to once it is back; the others are awaited
  if (!node.up) subscribed.catch(() => {});
  else {
    try {
      await subscribed;
    } catch (err) {
      sub.disconnect();
      throw err;
    }
  }
  return sub;
}

/** Subscribe to `channels` (a namespace's: one hash slot) wherever the workers publish. */
export async function subscribeEvents(
  conn: CliConnection,
  channels: string[],
  h: EventHandlers,
): Promise<EventSubscription> {
  const t = conn.topology;
  const node = conn.nodes[0];
  if (!node) throw new Error('no node to subscribe to');
  if (t.kind === 'cluster') {
    const cluster = node.client as Cluster;
    const shard = await conn.scanTarget(node);
    const info = await shard.client.info('server').catch(() => '');
    const sharded = Number(/redis_version:(\d+)/.exec(info)?.[1] ?? 0) >= 7;
    const restored = () =>
      h.status(
        `pairlock: subscribed again in ${conn.where}; events sent meanwhile were not seen`,
        true,
      );
    const subs = (sharded ? [true, false] : [false]).map(
      (s) => new ClusterSubscriber(cluster, channels, h.message, restored, conn.opts.timeout, s),
    );
    try {
      await Promise.all(subs.map((s) => s.start()));
    } catch (err) {
      for (const s of subs) s.disconnect();
      throw err;
    }
    return {
      where: `${conn.where}, shard ${shard.label}${sharded ? ' (sharded and classic pub/sub)' : ''}`,
      close: () => {
        for (const s of subs) s.disconnect();
      },
    };
  }
  const recent = new Map<string, number>();
  const once = (msg: string) => {
    const now = Date.now();
    const seen = recent.get(msg);
    if (seen !== undefined && now - seen < DEDUPE_MS) return;
    if (recent.size >= DEDUPE_MAX) {
      for (const [m, at] of recent) if (now - at >= DEDUPE_MS) recent.delete(m);
    }
    recent.set(msg, now);
    h.message(msg);
  };
  const deliver = t.kind === 'quorum' ? once : h.message;
  const subs: Redis[] = [];
  try {
    for (const n of conn.nodes) subs.push(await subscribeNode(n, channels, h, deliver));
  } catch (err) {
    for (const s of subs) s.disconnect();
    throw err;
  }
  return {
    where: conn.where,
    close: () => {
      for (const s of subs) s.disconnect();
    },
  };
}
