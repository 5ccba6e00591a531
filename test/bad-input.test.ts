/**
 * Bad input gets a clear, typed error, and never affects other tasks.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliError } from '../src/cli/common.js';
import {
  type ConnectionInput,
  type ConnectionKey,
  parseConnection,
  workerConnection,
} from '../src/cli/connection.js';
import {
  InvalidOptionError,
  InvalidTaskIdError,
  PairedWorker,
  type PairedWorkerOptions,
  RedisUnavailableError,
} from '../src/index.js';
import { resolveOptions } from '../src/shared/options.js';
import { serializeResult } from '../src/shared/serialize.js';
import { freePort, RedisServer } from '../src/testing/index.js';

describe('options', () => {
  const bad: [string, Partial<PairedWorkerOptions>, RegExp][] = [
    [
      'negative TTL',
      { sessionTtlMs: -1 },
      /`sessionTtlMs` to be an integer from 20 to 2147483647, got `-1`/,
    ],
    ['NaN timeout', { taskTimeoutMs: Number.NaN }, /`taskTimeoutMs`.*`NaN`/],
    ['Infinity retention', { retentionMs: Number.POSITIVE_INFINITY }, /`retentionMs`/],
    ['fractional attempts', { failure: { maxAttempts: 1.5 } }, /`failure.maxAttempts`/],
    ['unknown policy', { failure: { policy: 'retry-forever' as never } }, /`failure.policy`/],
    [
      'first interval over the lease',
      { taskTimeoutMs: 1_000, firstAttemptIntervalMs: 5_000 },
      /`firstAttemptIntervalMs` \(5000\) to be at most `taskTimeoutMs` \(1000\)/,
    ],
    [
      'heartbeat too slow for the TTL',
      { sessionTtlMs: 1_000, heartbeatIntervalMs: 600 },
      /`heartbeatIntervalMs` \(600\)/,
    ],
    ['namespace with a brace', { namespace: 'a{b}' }, /`namespace`/],
    ['empty name', { name: '' }, /`name`/],
    ['zero concurrency', { concurrency: 0 }, /`concurrency`/],
    ['string TTL', { sessionTtlMs: '1000' as never }, /`sessionTtlMs`.*\(string\)/],
    [
      'a timer past 2^31-1 ms',
      { taskTimeoutMs: 2 ** 32 },
      /`taskTimeoutMs` to be an integer from 1 to 2147483647/,
    ],
    ['retention past ten years', { retentionMs: 1e14 }, /`retentionMs`/],
  ];
  it.each(bad)('%s → InvalidOptionError naming the option', (_name, opts, message) => {
    expect(() => resolveOptions(opts)).toThrow(InvalidOptionError);
    expect(() => resolveOptions(opts)).toThrow(message);
    expect(() => new PairedWorker({ redis: 'redis://127.0.0.1:1', ...opts })).toThrow(
      InvalidOptionError,
    );
  });

  it('defaults are sane and documented values', () => {
    const o = resolveOptions({});
    expect(o).toMatchObject({
      sessionTtlMs: 10_000,
      heartbeatIntervalMs: 3_333,
      taskTimeoutMs: 300_000,
      firstAttemptIntervalMs: 10_000,
      otherAttemptIntervalMs: 30_000,
      retentionMs: 3_600_000,
      failure: { policy: 'takeover', maxAttempts: 3, backoffMs: 1_000 },
    });
  });

  it('a worker needs somewhere to coordinate', () => {
    expect(() => new PairedWorker({})).toThrow(/Expected `redis`/);
  });
});

describe('CLI connection options', () => {
  const cliArgs = (o: Partial<Record<ConnectionKey, string>>, source: 'cli' | 'env' = 'cli') =>
    Object.fromEntries(
      Object.entries(o).map(([k, value]) => [k, { value, source }]),
    ) as ConnectionInput;
  const dir = mkdtempSync(join(tmpdir(), 'pairlock-conn-'));
  const notPem = join(dir, 'not.pem');
  writeFileSync(notPem, 'hello\n');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const bad: [string, ConnectionInput, RegExp][] = [
    [
      'two topologies',
      cliArgs({ redis: 'redis://a:1', cluster: 'b:2' }),
      /give one of --redis, --sentinel, --cluster or --nodes, not --redis and --cluster/,
    ],
    [
      'two topologies in the environment',
      cliArgs({ redis: 'redis://a:1', nodes: 'redis://a:1,redis://b:1,redis://c:1' }, 'env'),
      /the environment names more than one topology \(REDIS_URL, PAIRLOCK_NODES\)/,
    ],
    [
      '--sentinel without --master',
      cliArgs({ sentinel: 'a:26379' }),
      /--sentinel needs --master <name>/,
    ],
    ['--master without --sentinel', cliArgs({ master: 'm' }), /--master .* needs --sentinel/],
    [
      'a host without a port',
      cliArgs({ cluster: 'a:7000,b' }),
      /--cluster: expected host:port.*got "b"/,
    ],
    [
      'a port out of range',
      cliArgs({ cluster: 'a:70000' }),
      /--cluster: .*port from 1 to 65535, got "a:70000"/,
    ],
    ['a URL in a host list', cliArgs({ sentinel: 'redis://a:1', master: 'm' }), /without a scheme/],
    ['an empty host list', cliArgs({ cluster: '' }), /--cluster: expected host:port.*got nothing/],
    [
      'an even node count',
      cliArgs({ nodes: 'redis://a:1,redis://b:1' }),
      /--nodes: .*odd number.*got 2/,
    ],
    ['one node', cliArgs({ nodes: 'redis://a:1' }), /--nodes: .*odd number.*got 1/],
    [
      'the same node twice',
      cliArgs({ nodes: 'redis://a:1,redis://b:1,redis://a:1' }),
      /--nodes: a:1 is listed twice/,
    ],
    [
      'a node that is not a URL',
      cliArgs({ nodes: 'redis://a:1,b:1,redis://c:1' }),
      /--nodes \(node 2\): expected a redis:\/\/ or rediss:\/\/ URL/,
    ],
    [
      'a URL without a scheme',
      cliArgs({ redis: 'localhost:6379' }),
      /did you mean redis:\/\/localhost:6379\?/,
    ],
    [
      'a database that is not a number',
      cliArgs({ redis: 'redis://a:1/x' }),
      /--redis: the URL's path must be a database number/,
    ],
    [
      'an unreadable CA file',
      cliArgs({ tlsCa: join(dir, 'gone.pem') }),
      /--tls-ca: cannot read ".*gone.pem" \(ENOENT\)/,
    ],
    [
      'a CA file without a certificate',
      cliArgs({ tlsCa: notPem }),
      /--tls-ca: ".*not.pem" holds no PEM certificate/,
    ],
    [
      '--user without --password',
      cliArgs({ user: 'u' }),
      /--user needs --password \(or PAIRLOCK_PASSWORD\)/,
    ],
    [
      'PAIRLOCK_TLS of another word',
      cliArgs({ tls: 'maybe' }, 'env'),
      /PAIRLOCK_TLS \(--tls\): expected 1\/true\/yes or 0\/false\/no/,
    ],
    [
      'a password in the URL and in --password',
      { ...cliArgs({ redis: 'redis://u:pw@a:1' }), password: { value: 'x', source: 'env' } },
      /--redis: the URL carries a user or password of its own, and PAIRLOCK_PASSWORD \(--password\) gives another/,
    ],
  ];
  it.each(bad)('%s → CliError (exit 1) naming the option', (_name, input, message) => {
    const err = (() => {
      try {
        parseConnection(input);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(1);
    expect((err as CliError).message).toMatch(message);
  });

  it('a password is never part of a message', () => {
    const err = (() => {
      try {
        parseConnection(cliArgs({ redis: 'redis://u:topsecret@[::1' }));
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err?.message).toContain('redis://u:***@');
    expect(err?.message).not.toContain('topsecret');
  });

  it('a choice on the command line wins over the environment; each topology becomes PairedWorker options', () => {
    const spec = parseConnection({
      redis: { value: 'redis://a:1', source: 'env' },
      sentinel: { value: 's1:26379,[::1]:26380', source: 'cli' },
      master: { value: 'main', source: 'env' },
      user: { value: 'u', source: 'cli' },
      password: { value: 'pw', source: 'env' },
      tls: { value: 'yes', source: 'env' },
    });
    expect(spec.topology.kind).toBe('sentinel');
    expect(workerConnection(spec).options).toEqual({
      redis: {
        sentinels: [
          { host: 's1', port: 26379 },
          { host: '::1', port: 26380 },
        ],
        name: 'main',
        username: 'u',
        password: 'pw',
        tls: {},
        sentinelTLS: {},
        enableTLSForSentinelMode: true,
      },
    });
    // the same choice for child processes, and nothing the choice did not use
    expect(spec.env).toEqual({
      PAIRLOCK_SENTINEL: 's1:26379,[::1]:26380',
      PAIRLOCK_MASTER: 'main',
      PAIRLOCK_USER: 'u',
      PAIRLOCK_PASSWORD: 'pw',
      PAIRLOCK_TLS: 'yes',
    });
    const quorum = parseConnection(
      cliArgs({ nodes: 'redis://a:1,rediss://b:2/3,redis://c:3', password: 'pw' }),
    );
    expect(workerConnection(quorum).options).toEqual({
      nodes: [
        { host: 'a', port: 1, password: 'pw' },
        { host: 'b', port: 2, db: 3, password: 'pw', tls: {} },
        { host: 'c', port: 3, password: 'pw' },
      ],
    });
    expect(parseConnection({}).topology).toMatchObject({
      kind: 'redis',
      node: { label: '127.0.0.1:6379', options: { host: '127.0.0.1', port: 6379 } },
    });
  });
});

describe('results that cannot be stored', () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  it.each([
    ['a cycle', cyclic, 'ERR_RESULT_NOT_SERIALISABLE'],
    ['a BigInt', 10n, 'ERR_RESULT_NOT_SERIALISABLE'],
    ['a function', () => 1, 'ERR_RESULT_NOT_SERIALISABLE'],
    ['a symbol', Symbol('x'), 'ERR_RESULT_NOT_SERIALISABLE'],
    ['an oversized string', 'x'.repeat(2_000), 'ERR_RESULT_TOO_LARGE'],
  ])('%s', (_name, value, code) => {
    expect(() => serializeResult(value, 1_024)).toThrow(expect.objectContaining({ code }));
  });
  it('undefined is an empty result; plain data round-trips', () => {
    expect(serializeResult(undefined, 10)).toBe('');
    expect(JSON.parse(serializeResult({ a: [1, 'b', null] }, 100))).toEqual({ a: [1, 'b', null] });
  });
});

describe('unreachable Redis', () => {
  it('connection refused: start() fails within the bounded wait with RedisUnavailableError', async () => {
    const port = await freePort(); // nothing listens there
    const w = new PairedWorker({ redis: `redis://127.0.0.1:${port}`, connectTimeoutMs: 500 });
    const t0 = performance.now();
    const err = await w.run('x', () => 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect((err as Error).message).toMatch(new RegExp(`127.0.0.1:${port}.*connectTimeoutMs`));
    expect(performance.now() - t0).toBeLessThan(5_000);
    await w.close();
  });

  it('a server that accepts but never answers: the same bounded error, no hang', async () => {
    const silent = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    const w = new PairedWorker({ redis: `redis://127.0.0.1:${port}`, connectTimeoutMs: 400 });
    await expect(w.start()).rejects.toBeInstanceOf(RedisUnavailableError);
    await w.close();
    silent.close();
  });
});

describe('with a Redis', () => {
  let server: RedisServer;
  let redis: Redis;
  beforeAll(async () => {
    server = await RedisServer.start();
    redis = new Redis(server.url);
  });
  afterAll(async () => {
    redis.disconnect();
    await server?.stop();
  });

  it('task ids: empty, oversized and non-strings are rejected; any Unicode is fine', async () => {
    const w = new PairedWorker({ redis: server.url, namespace: 'ids', maxTaskIdBytes: 64 });
    await expect(w.run('', () => 1)).rejects.toBeInstanceOf(InvalidTaskIdError);
    await expect(w.run('é'.repeat(33), () => 1)).rejects.toThrow(
      /66 bytes, over `maxTaskIdBytes` \(64\)/,
    );
    await expect(w.run(42 as never, () => 1)).rejects.toBeInstanceOf(InvalidTaskIdError);
    await expect(w.run('ok', 'not a function' as never)).rejects.toBeInstanceOf(InvalidOptionError);
    for (const id of ['a|b|c', '{x}', 'line\nbreak', 'zero\u0000byte', '🔒 emoji', '日本語']) {
      expect((await w.run(id, () => id)).result).toBe(id);
      expect((await w.inspect(id))?.result).toBe(id);
    }
    await w.close();
  });

  it('a handler result that cannot be stored fails the task with a clear error; the worker carries on', async () => {
    const w = new PairedWorker({
      redis: server.url,
      namespace: 'results',
      failure: { policy: 'give-up' },
    });
    const o = await w.run('big-int', () => ({ n: 1n }));
    expect(o).toMatchObject({ state: 'failed', error: { code: 'ERR_RESULT_NOT_SERIALISABLE' } });
    expect((await w.run('next', () => 'fine')).result).toBe('fine');
    await w.close();
  });

  it('a corrupt record: that run rejects with a typed error, the others are unaffected, nothing is overwritten', async () => {
    const w = new PairedWorker({ redis: server.url, namespace: 'corrupt' });
    await redis.set('pairlock:{corrupt}:t:bad', 'garbage');
    await redis.set('pairlock:{corrupt}:t:newer', '9|R|future');
    await redis.sadd('pairlock:{corrupt}:t:typed', 'x');
    const results = await Promise.allSettled([
      w.run('bad', () => 1),
      w.run('good', () => 2),
      w.run('newer', () => 3),
      w.run('typed', () => 4),
    ]);
    expect(results[0]).toMatchObject({
      status: 'rejected',
      reason: { code: 'ERR_CORRUPT_RECORD' },
    });
    expect(results[1]).toMatchObject({ status: 'fulfilled', value: { state: 'done', result: 2 } });
    expect(results[2]).toMatchObject({ status: 'rejected', reason: { code: 'ERR_NEWER_FORMAT' } });
    expect(results[3]).toMatchObject({ status: 'rejected', reason: { code: 'ERR_WRONG_TYPE' } });
    expect(await redis.get('pairlock:{corrupt}:t:bad')).toBe('garbage');
    expect(await redis.get('pairlock:{corrupt}:t:newer')).toBe('9|R|future');
    await expect(w.inspect('bad')).rejects.toMatchObject({ code: 'ERR_CORRUPT_RECORD' });
    await w.close();
  });

  it('after close(), run() is refused with ClosedError; a pending run rejects with it', async () => {
    const a = new PairedWorker({ redis: server.url, namespace: 'closing', name: 'a' });
    const b = new PairedWorker({ redis: server.url, namespace: 'closing', name: 'b' });
    let release!: () => void;
    const held = a.run('t', () => new Promise<number>((r) => (release = () => r(1))));
    await new Promise<void>((r) => a.once('claimed', () => r()));
    const watching = b.run('t', () => 2).catch((e: unknown) => e);
    await new Promise<void>((r) => b.once('standby', () => r()));
    await b.close();
    expect(await watching).toMatchObject({ code: 'ERR_CLOSED' });
    await expect(b.run('u', () => 1)).rejects.toMatchObject({ code: 'ERR_CLOSED' });
    release();
    expect((await held).result).toBe(1);
    await a.close();
  });

  it("a renewal refused for another reason than Redis being away is reported as an 'error' event", async () => {
    const w = new PairedWorker({ redis: server.url, namespace: 'refused', sessionTtlMs: 600 });
    await w.start();
    const store = (w as unknown as { store: { session: (...a: unknown[]) => Promise<unknown> } })
      .store;
    const real = store.session.bind(store);
    store.session = async (...a: unknown[]) => {
      if (a[0] === 'renew')
        throw new Error("NOPERM this user has no permissions to run the 'evalsha' command");
      return real(...a);
    };
    const seen = await new Promise<{ error: Error }>((resolve) => w.once('error', resolve));
    expect(seen.error.message).toMatch(/NOPERM/);
    store.session = real;
    await w.close();
  });

  it('a run waiting on a Redis that goes away gives up after unavailableTimeoutMs with RedisUnavailableError', async () => {
    const own = await RedisServer.start();
    const a = new PairedWorker({
      redis: own.url,
      namespace: 'gone',
      name: 'a',
      sessionTtlMs: 60_000,
    });
    const b = new PairedWorker({
      redis: own.url,
      namespace: 'gone',
      name: 'b',
      connectTimeoutMs: 300,
      unavailableTimeoutMs: 1_000,
      firstAttemptIntervalMs: 100,
      otherAttemptIntervalMs: 100,
    });
    void a.run('t', () => new Promise(() => {})).catch(() => {});
    await new Promise<void>((r) => a.once('claimed', () => r()));
    const waiting = b.run('t', () => 1);
    await new Promise<void>((r) => b.once('standby', () => r()));
    await own.kill();
    await expect(waiting).rejects.toBeInstanceOf(RedisUnavailableError);
    // close() stays bounded with Redis gone and a handler that never returns
    await Promise.all([a.close({ timeoutMs: 200 }), b.close()]);
  });
});
