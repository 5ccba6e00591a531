/**
 * After its own failed attempt a worker lets its peer retry first (backoffMs + peerFirstMs),
 * whatever wakes it sooner: an event about the task (in quorum mode, the announcement of a
 * peer's claim that was undone) makes it look, not claim.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PairedWorker } from '../src/index.js';
import { Keys } from '../src/redis/keys.js';
import { RedisServer } from '../src/testing/index.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
let server: RedisServer;
let admin: Redis;
beforeAll(async () => {
  server = await RedisServer.start();
  admin = new Redis(server.url);
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

it('an event that wakes the worker whose attempt just failed does not let it retry before its peer', async () => {
  const ns = 'peer-first';
  const opts = { failure: { backoffMs: 0 }, firstAttemptIntervalMs: 1_000 }; // peer first: 250 ms
  const a = new PairedWorker({ redis: server.url, namespace: ns, name: 'a', ...opts });
  const b = new PairedWorker({ redis: server.url, namespace: ns, name: 'b', ...opts });
  try {
    await Promise.all([a.start(), b.start()]);
    let aRuns = 0;
    const failedOnce = new Promise<void>((r) => a.once('settled', () => r()));
    const pa = a.run('job', async () => {
      aRuns += 1;
      throw new Error('boom');
    });
    await failedOnce;
    // an event about the task from another session wakes a's waiting run at once
    const keys = new Keys('pairlock', ns);
    const ev = { e: 'released', r: keys.task('job').ref, s: 'X', k: 1, a: 1, o: 'other:x#1', q: 1 };
    await admin.publish(keys.channel, JSON.stringify([ev]));
    // a little time for the event to arrive; the peer-first window (250 ms) is the margin
    await sleep(30);
    let bToken = 0;
    const ob = await b.run('job', async ({ token }) => {
      bToken = token;
      return 'recovered';
    });
    const oa = await pa;
    expect(aRuns).toBe(1);
    expect(bToken).toBe(2);
    expect(ob).toMatchObject({ state: 'done', role: 'took-over', token: 2 });
    expect(oa).toMatchObject({ state: 'done', role: 'watched', token: 2, result: 'recovered' });
  } finally {
    await Promise.allSettled([a.close(), b.close()]);
  }
});
