/**
 * Connection-bound sessions on a Redis Cluster: the holder proves its *subscription* to its
 * liveness channel, not only its subscriber connection.
 *
 * When a node loses a slot, Redis 7 unsubscribes the shard channels of that slot (a
 * `sunsubscribe` push) but keeps the connection. If the slot comes back to the same node
 * (same run_id) before the holder's cluster client notices, a PING on the subscriber is
 * still answered while PUBSUB SHARDNUMSUB of the liveness channel is 0: a standby's cover
 * sights the holder gone and takes its task over while the holder believes its lease.
 * The holder must see the subscription gone (the push, or a proof that does not come
 * back) and end the binding as for a dropped connection.
 */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { type HandlerContext, PairedWorker, type PairedWorkerOptions } from '../../src/index.js';
import { Keys } from '../../src/redis/keys.js';
import { keySlot } from '../../src/redis/topology-cluster.js';
import { type ClusterTopology, startCluster } from '../../src/testing/index.js';
import { clusterClient, ownerOf } from '../support/cluster.js';

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {});
});

function node(port: number): Redis {
  const r = new Redis({ host: '127.0.0.1', port, lazyConnect: false });
  r.on('error', () => {});
  cleanup.push(async () => r.disconnect());
  return r;
}

function worker(
  topo: ClusterTopology,
  ns: string,
  name: string,
  extra: Partial<PairedWorkerOptions>,
) {
  const c = clusterClient(topo, (fn) => cleanup.push(fn));
  const w = new PairedWorker({ redis: c, namespace: ns, name, ...extra });
  // close the worker before its client (cleanup runs in reverse)
  cleanup.push(() => w.close());
  return w;
}

/** Move `slot` from one master to another (the resharding protocol of redis-cli --cluster). */
async function moveSlot(
  nodes: Map<number, { conn: Redis; id: string }>,
  slot: number,
  from: number,
  to: number,
): Promise<void> {
  const src = nodes.get(from)!;
  const dst = nodes.get(to)!;
  await dst.conn.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', src.id);
  await src.conn.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dst.id);
  for (let round = 0; round < 100; round++) {
    const batch = (await src.conn.call('CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[];
    if (batch.length === 0) break;
    await src.conn.call('MIGRATE', '127.0.0.1', to, '', 0, 5_000, 'REPLACE', 'KEYS', ...batch);
  }
  // the destination first (as redis-cli does), then every other master
  await dst.conn.call('CLUSTER', 'SETSLOT', slot, 'NODE', dst.id);
  for (const [port, n] of nodes)
    if (port !== to) await n.conn.call('CLUSTER', 'SETSLOT', slot, 'NODE', dst.id);
}

async function shardSubscribers(conn: Redis, channel: string): Promise<number> {
  const [, count] = (await conn.call('PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
  return Number(count);
}

it('a slot that leaves its node and comes back: the holder sees its subscription gone, no standby takes over while it believes its lease', async () => {
  const topo = await startCluster({ masters: 3 });
  cleanup.push(() => topo.close());
  const ns = 'bounce';
  const keys = new Keys('pairlock', ns);
  const slot = keySlot(keys.channel);
  const home = await ownerOf(topo, slot);
  const away = topo.masters.find((m) => m.port !== home)!.port;
  const nodes = new Map<number, { conn: Redis; id: string }>();
  for (const m of topo.masters) {
    const conn = node(m.port);
    nodes.set(m.port, { conn, id: String(await conn.call('CLUSTER', 'MYID')) });
  }
  const homeConn = nodes.get(home)!.conn;

  // a long session TTL: its heartbeat (on the command connection, which would follow a
  // MOVED and make the subscriber follow the slot) does not fall into the bounce
  const opts = {
    sessionTtlMs: 20_000,
    firstAttemptIntervalMs: 5_000,
    otherAttemptIntervalMs: 5_000,
  };
  const a = worker(topo, ns, 'a', opts);
  const b = worker(topo, ns, 'b', opts);
  await a.start();
  await b.start();

  const story: string[] = [];
  const t0 = now();
  const at = () => `${(now() - t0).toFixed(0)} ms`;
  const seenA = { started: false, aborted: false, reason: '' };
  let finishA = () => {};
  const runA = a.run('t', ({ signal }: HandlerContext) => {
    seenA.started = true;
    story.push(`${at()}: a runs t`);
    return new Promise<string>((resolve) => {
      finishA = () => resolve('a');
      signal.addEventListener('abort', () => {
        seenA.aborted = true;
        seenA.reason = (signal.reason as { reason?: string }).reason ?? '';
        story.push(`${at()}: a's signal fired (${seenA.reason})`);
        resolve('a');
      });
    });
  });
  const lost: string[] = [];
  a.on('lease-lost', (e) => {
    lost.push(e.reason);
    story.push(`${at()}: a lease-lost (${e.reason})`);
  });
  runA.catch(() => {});
  // a holds t, bound to its subscriber; only then does b cover it
  const live = `${keys.livePrefix}${a.session}`;
  for (
    let i = 0;
    i < 200 && !(seenA.started && (await shardSubscribers(homeConn, live)) === 1);
    i++
  )
    await sleep(20);
  expect(seenA.started).toBe(true);
  expect(await shardSubscribers(homeConn, live)).toBe(1);
  let overlap = false;
  const runB = b.run('t', async () => {
    // two executions: a's handler runs and was not told it lost its lease
    overlap = seenA.started && !seenA.aborted;
    story.push(`${at()}: b runs t${overlap ? ' WHILE a STILL RUNS IT' : ''}`);
    return 'b';
  });
  runB.catch(() => {});
  // b covers t
  await sleep(300);
  story.push(`${at()}: bounce slot ${slot} ${home} -> ${away} -> ${home}`);

  await moveSlot(nodes, slot, home, away);
  await moveSlot(nodes, slot, away, home);
  expect(await ownerOf(topo, slot)).toBe(home);
  story.push(`${at()}: slot ${slot} is home again`);

  // watch for 1.5 s: the holder's subscription on the node that owns the slot, and its
  // binding as it sees it
  const binding = (a as unknown as { binding?: { state: string } }).binding;
  let zeroWhileProven = 0;
  let samples = 0;
  let last = -1;
  const watchUntil = now() + 1_500;
  while (now() < watchUntil) {
    const subs = await shardSubscribers(homeConn, `${keys.livePrefix}${a.session}`);
    const state = binding?.state ?? 'none';
    if (subs === 0 && state === 'proven') zeroWhileProven += 1;
    samples += 1;
    if (subs !== last)
      story.push(`${at()}: SHARDNUMSUB of a's liveness channel: ${subs} (a: ${state})`);
    last = subs;
    await sleep(20);
  }
  console.log(
    `slot bounce: ${zeroWhileProven} of ${samples} samples saw a's liveness channel without subscriber while a held its binding proven\n  ${story.join('\n  ')}`,
  );

  // the safety property: b never runs t while a runs it unaware
  expect(overlap, story.join('\n')).toBe(false);
  // and the holder did not go on proving a binding nobody could see: it lost its lease
  // (reason connection) or bound again (its liveness channel subscribed on the owner)
  const rebound = (await shardSubscribers(homeConn, `${keys.livePrefix}${a.session}`)) === 1;
  expect(lost.includes('connection') || rebound, story.join('\n')).toBe(true);
  finishA();
  await Promise.allSettled([runA, runB]);
});
