/**
 * A paused worker shows as such: pause() and resume() rewrite its session's description
 * (what `pairlock stats` and the dashboard read), the session's TTL kept.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PairedWorker } from '../src/index.js';
import { Keys } from '../src/redis/keys.js';
import { RedisServer } from '../src/testing/index.js';

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

it('pause() and resume() are written into the session description, its TTL kept', async () => {
  const w = new PairedWorker({ redis: server.url, namespace: 'paused', name: 'w' });
  try {
    await w.start();
    const key = new Keys('pairlock', 'paused').session(w.session);
    const desc = async () => JSON.parse(String(await admin.get(key))) as Record<string, unknown>;
    expect(await desc()).not.toHaveProperty('paused');
    const startedAt = (await desc()).startedAt;
    w.pause();
    await expect.poll(async () => (await desc()).paused, { timeout: 2_000 }).toBe(true);
    expect((await desc()).startedAt).toBe(startedAt);
    expect(await admin.pttl(key)).toBeGreaterThan(0);
    w.resume();
    await expect.poll(async () => 'paused' in (await desc()), { timeout: 2_000 }).toBe(false);
    expect(await admin.pttl(key)).toBeGreaterThan(0);
  } finally {
    await w.close();
  }
});
