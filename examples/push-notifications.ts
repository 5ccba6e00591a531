/**
 * Push notifications across two data centers, as Flickr ran them: every notification
 * reaches a worker in each site, a lock in Redis decides which one sends it, and the
 * other covers. Redis lives in dc1; dc2 reaches it over a 40 ms round trip (a TcpProxy
 * adding 20 ms each way). Midway, dc1 loses its link to Redis in the middle of a send:
 * it stops as soon as it can no longer prove its lease, and dc2 takes the notification
 * over once dc1's session has expired on the Redis server.
 *
 *   npx tsx examples/push-notifications.ts
 */
import { Redis } from 'ioredis';
import { PairedWorker } from '../src/index.js';
import { TcpProxy } from '../src/testing/index.js';
import { check, exampleRedis, runExample, sleep } from './support.js';

interface Delivery {
  site: string;
  id: string;
  token: number;
}

const delivered: Delivery[] = [];
const SESSION_TTL = 1_000;

function site(name: string, url: string, namespace: string) {
  // Our own client: no offline queue and no per-command retries (a late claim is worse
  // than a failed one; pairlock retries itself), and its connection errors are expected
  // here: the worker reports what matters through its events and run() results.
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    connectTimeout: 1_000,
  });
  client.on('error', () => {});
  const worker = new PairedWorker({
    redis: client,
    namespace,
    name,
    sessionTtlMs: SESSION_TTL,
    // a site cut off from Redis gives up on a notification after this long
    unavailableTimeoutMs: 2_000,
    connectTimeoutMs: 1_000,
  });
  const starts = new Set<string>();
  const push = (id: string, workMs: number) =>
    worker.run(`push:${id}`, async ({ signal, token }) => {
      starts.add(id);
      // talking to the push gateway; abandon the send as soon as the lease is in doubt
      await sleep(workMs, signal);
      delivered.push({ site: name, id, token });
      return { gatewayId: `${name}/${id}` };
    });
  const close = async () => {
    await worker.close();
    client.disconnect();
  };
  return { name, worker, push, starts, close };
}

runExample(async () => {
  const redis = await exampleRedis('push');
  // dc1 sits next to Redis (the proxy only lets us cut its link); dc2 is 40 ms away
  const dc1Link = await TcpProxy.start({ targetPort: redis.port });
  const dc2Link = await TcpProxy.start({ targetPort: redis.port });
  dc2Link.setDelay(20);
  const dc1 = site('dc1', dc1Link.url, redis.namespace);
  const dc2 = site('dc2', dc2Link.url, redis.namespace);
  try {
    await Promise.all([dc1.worker.start(), dc2.worker.start()]);

    // 1. both sites receive every notification
    const won = { dc1: 0, dc2: 0 };
    for (let i = 1; i <= 10; i++) {
      const id = `n${i}`;
      const [o1, o2] = await Promise.all([dc1.push(id, 20), dc2.push(id, 20)]);
      check(JSON.stringify(o1.result) === JSON.stringify(o2.result), `both sites agree on ${id}`);
      won[o1.worker.startsWith('dc1') ? 'dc1' : 'dc2'] += 1;
    }
    console.log(
      `10 notifications: dc1 sent ${won.dc1}, dc2 sent ${won.dc2} (dc2 is 40 ms further from Redis)`,
    );

    // 2. dc1 starts n11, then its link to Redis is cut mid-send
    const n11 = dc1.push('n11', 1_500).catch((err: Error) => err);
    for (let i = 0; i < 300 && !dc1.starts.has('n11'); i++) await sleep(10);
    const covered = dc2.push('n11', 1_500);
    await sleep(100);
    dc1Link.cut();
    console.log('dc1 lost its link to Redis while sending n11');
    const o11 = await covered;
    console.log(`n11: dc2 ${o11.role} (token ${o11.token}) after dc1's session expired`);
    check(o11.role === 'took-over' && o11.token === 2, 'dc2 took n11 over');
    const dc1Side = await n11;
    check(dc1Side instanceof Error, 'dc1 gave n11 up');

    // 3. dc1 is down; dc2 alone sends the rest
    for (let i = 12; i <= 15; i++) await dc2.push(`n${i}`, 20);

    const ids = delivered.map((d) => d.id);
    const unique = new Set(ids);
    check(
      unique.size === 15 && ids.length === 15,
      `each notification delivered once: ${ids.join(',')}`,
    );
    check(!delivered.some((d) => d.id === 'n11' && d.site === 'dc1'), 'dc1 did not deliver n11');
    console.log(`push: 15 notifications, ${ids.length} deliveries, each exactly once`);
  } finally {
    await Promise.allSettled([dc1.close(), dc2.close()]);
    await dc1Link.close();
    await dc2Link.close();
    await redis.stop();
  }
});
