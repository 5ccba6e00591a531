/**
 * Credentials Redis refuses, through the library: start() and run() reject at once (not
 * after `connectTimeoutMs`) with ERR_REDIS_AUTH, in the CLI's words ("Redis at host:port
 * refused the credentials (WRONGPASS …)"), and the password never appears in the message.
 * One redis-server with `requirepass` and an ACL user; a one-master Cluster the same way.
 */
import { Cluster, Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as lib from '../src/index.js';
import { PairedWorker, type PairedWorkerOptions } from '../src/index.js';
import { RedisServer, startCluster } from '../src/testing/index.js';

const SECRET = 'right-Secret-42';
const WRONG = 'wrong-Guess-17';

let server: RedisServer;
let admin: Redis;
let seq = 0;
const workers: PairedWorker[] = [];
const clients: (Redis | Cluster)[] = [];

beforeAll(async () => {
  // the harness pings without a password: require one once the server is up
  server = await RedisServer.start();
  const setup = new Redis(server.url);
  await setup.config('SET', 'requirepass', SECRET);
  setup.disconnect();
  admin = new Redis({ host: server.host, port: server.port, password: SECRET });
  await admin.acl('SETUSER', 'app', 'on', `>${SECRET}`, '~*', '&*', '+@all');
});
afterEach(async () => {
  await Promise.allSettled(workers.splice(0).map((w) => w.close()));
  for (const c of clients.splice(0)) c.disconnect();
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

function worker(redis: PairedWorkerOptions['redis']): PairedWorker {
  const w = new PairedWorker({ redis, namespace: `cred-${++seq}`, name: 'w' });
  workers.push(w);
  return w;
}

/** How `p` rejects, and how long that took. */
async function rejection(p: Promise<unknown>): Promise<{ error: lib.PairlockError; ms: number }> {
  const t0 = performance.now();
  const error = await p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as lib.PairlockError,
  );
  return { error, ms: performance.now() - t0 };
}

function expectRefused(error: lib.PairlockError, ms: number, reply: RegExp): void {
  expect(error.code, error.message).toBe('ERR_REDIS_AUTH');
  expect(error.name).toBe('RedisAuthError');
  expect(error).toBeInstanceOf(lib.PairlockError);
  expect(error.message).toContain(`Redis at 127.0.0.1:${server.port} refused the credentials (`);
  expect(error.message).toMatch(reply);
  expect(error.message).not.toMatch(/could not reach|is it running/);
  expect(error.message).not.toContain(WRONG);
  expect(error.message).not.toContain(SECRET);
  expect(JSON.stringify(error)).not.toContain(WRONG);
  // at once: not after connectTimeoutMs (5000 ms)
  expect(ms).toBeLessThan(2_000);
}

describe('credentials Redis refuses', () => {
  it('a wrong password in the URL: start() rejects at once with ERR_REDIS_AUTH', async () => {
    const w = worker(`redis://:${WRONG}@127.0.0.1:${server.port}`);
    const { error, ms } = await rejection(w.start());
    expectRefused(error, ms, /\(WRONGPASS /);
    expect(lib.RedisAuthError).toBeDefined();
    expect(error).toBeInstanceOf(lib.RedisAuthError);
  });

  it('run() rejects the same way', async () => {
    const w = worker(`redis://:${WRONG}@127.0.0.1:${server.port}`);
    const { error, ms } = await rejection(w.run('t', () => 1));
    expectRefused(error, ms, /\(WRONGPASS /);
  });

  it('no password where one is required: NOAUTH', async () => {
    const w = worker(server.url);
    const { error, ms } = await rejection(w.start());
    expectRefused(error, ms, /\(NOAUTH /);
  });

  it('an ACL user with a wrong password, as ioredis options', async () => {
    const w = worker({ host: '127.0.0.1', port: server.port, username: 'app', password: WRONG });
    const { error, ms } = await rejection(w.start());
    expectRefused(error, ms, /WRONGPASS invalid username-password pair/);
  });

  it('a client the caller built (lazy or already connecting)', async () => {
    for (const lazyConnect of [true, false]) {
      const client = new Redis({
        host: '127.0.0.1',
        port: server.port,
        password: WRONG,
        lazyConnect,
        maxRetriesPerRequest: 0,
      });
      client.on('error', () => {});
      clients.push(client);
      const w = worker(client);
      const { error, ms } = await rejection(w.start());
      expectRefused(error, ms, /\(WRONGPASS /);
    }
  });

  it('the right credentials still work', async () => {
    const w = worker({ host: '127.0.0.1', port: server.port, username: 'app', password: SECRET });
    expect(await w.run('ok', () => 42)).toMatchObject({ state: 'done', result: 42 });
  });
});

describe('credentials a Cluster refuses', () => {
  it('a wrong password in redisOptions: start() rejects at once with ERR_REDIS_AUTH', async () => {
    const topo = await startCluster({ masters: 1 });
    try {
      for (const n of topo.nodes) {
        const c = new Redis(n.url);
        await c.config('SET', 'requirepass', SECRET);
        c.disconnect();
      }
      const cluster = new Cluster(topo.startupNodes, {
        enableOfflineQueue: false,
        redisOptions: { password: WRONG, maxRetriesPerRequest: 0 },
      });
      cluster.on('error', () => {});
      clients.push(cluster);
      const w = worker(cluster);
      const { error, ms } = await rejection(w.start());
      expect(error.code, error.message).toBe('ERR_REDIS_AUTH');
      expect(error.message).toContain('refused the credentials (WRONGPASS');
      expect(error.message).not.toContain(WRONG);
      expect(ms).toBeLessThan(2_000);
    } finally {
      await Promise.allSettled(workers.splice(0).map((w) => w.close()));
      for (const c of clients.splice(0)) c.disconnect();
      await topo.close();
    }
  });
});
