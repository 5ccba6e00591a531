/**
 * No silent default address: a worker given no `redis` (the Quick start's
 * `process.env.REDIS_URL` unset), or a `redis` that names no server, is refused at once
 * with ERR_INVALID_OPTION and a message that says what to pass, before any connection is
 * attempted (ioredis would otherwise connect to 127.0.0.1:6379 and write there).
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  InvalidOptionError,
  PairedWorker,
  type PairedWorkerOptions,
  streamFeed,
} from '../src/index.js';

const make = (opts: Record<string, unknown>) => () =>
  new PairedWorker({ namespace: 'nodefault', ...opts } as PairedWorkerOptions);

afterEach(() => {
  vi.restoreAllMocks();
});

describe('no default Redis address', () => {
  it('neither `redis` nor `nodes`: ERR_INVALID_OPTION saying what to pass, nothing connects', () => {
    const connect = vi.spyOn(Redis.prototype, 'connect');
    for (const opts of [{}, { redis: undefined }, { redis: process.env.PAIRLOCK_UNSET_VARIABLE }]) {
      let error: unknown;
      try {
        make(opts)();
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(InvalidOptionError);
      expect((error as InvalidOptionError).code).toBe('ERR_INVALID_OPTION');
      const message = (error as Error).message;
      expect(message).toMatch(/Expected `redis`.*or `nodes`/);
      expect(message).toContain("redis: 'redis://127.0.0.1:6379'");
      expect(message).toMatch(/no default/i);
    }
    expect(connect).not.toHaveBeenCalled();
  });

  it('a `redis` that names no server is refused, not taken for 127.0.0.1:6379', () => {
    const connect = vi.spyOn(Redis.prototype, 'connect');
    const cases: [unknown, RegExp][] = [
      ['', /`redis`.*empty/],
      ['   ', /`redis`.*empty/],
      [null, /`redis`/],
      [42, /`redis`/],
      [{}, /`redis`.*names no server/],
      [{ password: 'x', db: 2 }, /`redis`.*names no server/],
      [{ host: undefined, port: undefined }, /`redis`.*names no server/],
      ['redis://', /`redis`.*names no host/],
      ['redis://:pw@', /`redis`.*names no host/],
    ];
    for (const [redis, message] of cases) {
      expect(make({ redis }), String(redis)).toThrow(InvalidOptionError);
      expect(make({ redis }), String(redis)).toThrow(message);
      expect(make({ redis }), String(redis)).toThrow("redis: 'redis://127.0.0.1:6379'");
    }
    // quorum nodes the same way
    const node = 'redis://127.0.0.1:1';
    expect(make({ nodes: [node, {}, node] })).toThrow(/`nodes\[1\]`.*names no server/);
    expect(connect).not.toHaveBeenCalled();
  });

  it('a `redis` that names its server is accepted (nothing connects before start)', () => {
    const connect = vi.spyOn(Redis.prototype, 'connect');
    for (const redis of [
      'redis://127.0.0.1:1',
      'rediss://user:pw@example.invalid:6380/2',
      '127.0.0.1:1',
      '/tmp/pairlock-no-such.sock',
      { host: '127.0.0.1' },
      { port: 1 },
      { path: '/tmp/pairlock-no-such.sock' },
      { sentinels: [{ host: '127.0.0.1', port: 1 }], name: 'mymaster' },
    ]) {
      expect(make({ redis }), JSON.stringify(redis)).not.toThrow();
    }
    expect(connect).not.toHaveBeenCalled();
  });
});

describe('streamFeed: no default address either', () => {
  it("a `redis` of '' or {} is refused before any connection", () => {
    const connect = vi.spyOn(Redis.prototype, 'connect');
    const w = new PairedWorker({ redis: 'redis://127.0.0.1:1', namespace: 'nodefault-feed' });
    for (const redis of ['', {}]) {
      expect(() =>
        streamFeed(w, { redis: redis as string, stream: 's', handler: () => undefined }),
      ).toThrow(/Expected `redis` to name a Redis server/);
    }
    expect(connect).not.toHaveBeenCalled();
  });
});
