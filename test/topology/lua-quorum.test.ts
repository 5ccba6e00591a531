/**
 * Contract tests of what quorum mode and Cluster add to the Lua layer: claim's optional
 * minimum token (and the replaced record in its grant reply), every output code of
 * undo-2.lua, and sharded publishing ('#<channel>').
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptRecordError } from '../../src/errors.js';
import { Keys, type TaskLocation } from '../../src/keys.js';
import { callScript } from '../../src/scripts.js';
import { type ClaimArgs, RedisStore } from '../../src/store.js';
import { RedisServer } from '../../src/testing/index.js';

let server: RedisServer;
let redis: Redis;
let store: RedisStore;
const keys = new Keys('pairlock', 'quorum-contract');
let n = 0;

const args = (session: string, extra: Partial<ClaimArgs> = {}): ClaimArgs => ({
  session,
  sessionTtlMs: 10_000,
  taskTimeoutMs: 60_000,
  retentionMs: 60_000,
  maxAttempts: 3,
  dryRun: false,
  ...extra,
});
const task = (hash = false): TaskLocation => keys.task(`task-${++n}`, hash ? 'jobs' : undefined);
async function session(name: string): Promise<string> {
  const id = `${name}:${++n}#1`;
  expect((await store.session('open', id, 10_000)).ok).toBe(true);
  return id;
}
const undo = (loc: TaskLocation, s: string, token: number, previous: string, announce = false) =>
  store.undo(loc, { session: s, token, previous, retentionMs: 60_000, announce });

beforeAll(async () => {
  server = await RedisServer.start();
  redis = new Redis(server.url);
  store = new RedisStore(redis, keys, 5_000);
});
afterAll(async () => {
  redis.disconnect();
  await server?.stop();
});

describe('claim: optional minimum token (ARGV[11])', () => {
  it('without it, the grant reply is unchanged (7 elements)', async () => {
    const a = await session('a');
    const loc = task();
    const raw = (await callScript(redis, 'claim', [
      loc.container,
      loc.index,
      keys.session(a),
      '',
      a,
      keys.sessionPrefix,
      10_000,
      60_000,
      60_000,
      3,
      '0',
      '',
      loc.ref,
    ])) as unknown[];
    expect(raw).toHaveLength(7);
    expect(raw.slice(0, 4)).toEqual([1, 1, 1, 0]);
  });

  it.each([false, true])(
    'with it: token >= minimum, and the replaced record comes back (hash: %s)',
    async (hash) => {
      const a = await session('a');
      const b = await session('b');
      const loc = task(hash);
      const first = await store.claimAtLeast(loc, args(a), 0);
      expect(first).toMatchObject({
        reply: { type: 'granted', token: 1, kind: 'fresh' },
        previous: '',
      });
      await store.release(loc, { session: a, token: 1, retentionMs: 60_000 });
      const stored = hash
        ? await redis.hget(loc.container, loc.field)
        : await redis.get(loc.container);
      const second = await store.claimAtLeast(loc, args(b), 7);
      expect(second.reply).toMatchObject({
        type: 'granted',
        token: 7,
        attempt: 2,
        kind: 'handover',
      });
      expect(second.previous).toBe(stored);
      // a minimum below the natural token changes nothing
      await store.release(loc, { session: b, token: 7, retentionMs: 60_000 });
      expect((await store.claimAtLeast(loc, args(a), 3)).reply).toMatchObject({
        type: 'granted',
        token: 8,
      });
    },
  );
});

describe.each([false, true])('undo (hash-field mode: %s)', (hash) => {
  it('1 undone, where there was no record: a placeholder that keeps the token; event "undone"', async () => {
    const a = await session('a');
    const b = await session('b');
    const loc = task(hash);
    const sub = new Redis(server.url);
    const events: Record<string, unknown>[] = [];
    await sub.subscribe(keys.channel);
    sub.on('message', (_c, m) => events.push(JSON.parse(m)));
    const { reply, previous } = await store.claimAtLeast(loc, args(a), 0);
    expect(reply.type === 'granted' && reply.token).toBe(1);
    expect(await undo(loc, a, 1, previous, true)).toBe(true);
    const rec = await store.inspect(loc);
    expect(rec).toMatchObject({ found: true, state: 'released', token: 1, attempt: 0, session: a });
    // the next grant is the first one (attempt 1), with the next token: never token 1 again
    expect((await store.claimAtLeast(loc, args(b), 0)).reply).toMatchObject({
      type: 'granted',
      token: 2,
      attempt: 1,
    });
    const undone = () => events.find((e) => e.e === 'undone');
    for (let i = 0; i < 500 && !undone(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(undone()).toMatchObject({ e: 'undone', r: loc.ref, s: 'X', k: 1, a: 0, o: a });
    sub.disconnect();
  });

  it('1 undone: the replaced record comes back, with the grant token kept', async () => {
    const a = await session('a');
    const b = await session('b');
    const loc = task(hash);
    await store.claim(loc, args(a));
    await store.settle(loc, {
      session: a,
      token: 1,
      state: 'F',
      payload: '{"name":"Error","message":"boom"}',
      retentionMs: 60_000,
      backoffMs: 0,
    });
    const { reply, previous } = await store.claimAtLeast(loc, args(b), 0);
    expect(reply).toMatchObject({ type: 'granted', token: 2, kind: 'retry' });
    expect(await undo(loc, b, 2, previous)).toBe(true);
    expect(await store.inspect(loc)).toMatchObject({
      found: true,
      state: 'failed',
      token: 2,
      attempt: 1,
      session: a,
      payload: '{"name":"Error","message":"boom"}',
    });
  });

  it('0 nothing to undo: absent, another token, another session, or no longer running', async () => {
    const a = await session('a');
    const b = await session('b');
    const loc = task(hash);
    expect(await undo(loc, a, 1, '')).toBe(false);
    await store.claim(loc, args(a));
    expect(await undo(loc, a, 2, '')).toBe(false);
    expect(await undo(loc, b, 1, '')).toBe(false);
    await store.settle(loc, {
      session: a,
      token: 1,
      state: 'D',
      payload: '1',
      retentionMs: 60_000,
      backoffMs: 0,
    });
    expect(await undo(loc, a, 1, '')).toBe(false);
    expect(await store.inspect(loc)).toMatchObject({ state: 'done', token: 1 });
  });
});

describe('undo: faults', () => {
  it('-1 corrupt (the record, or the previous record passed in), -2 newer format, -4 wrong type', async () => {
    const a = await session('a');
    const loc = task();
    await redis.set(loc.container, 'garbage');
    await expect(undo(loc, a, 1, '')).rejects.toMatchObject({ code: 'ERR_CORRUPT_RECORD' });
    await redis.set(loc.container, '9|R|future');
    await expect(undo(loc, a, 1, '')).rejects.toMatchObject({ code: 'ERR_NEWER_FORMAT' });
    await redis.del(loc.container);
    await redis.sadd(loc.container, 'x');
    await expect(undo(loc, a, 1, '')).rejects.toBeInstanceOf(CorruptRecordError);
    await expect(undo(loc, a, 1, '')).rejects.toMatchObject({ code: 'ERR_WRONG_TYPE' });
    await redis.del(loc.container);
    await store.claim(loc, args(a));
    await expect(undo(loc, a, 1, 'not a record')).rejects.toMatchObject({
      code: 'ERR_CORRUPT_RECORD',
    });
    // the raw codes, as the header lists them
    expect(
      await callScript(redis, 'undo', [loc.container, loc.index, '', a, 1, 'x', 1000, '', loc.ref]),
    ).toEqual([-1, 'x']);
  });
});

describe("publish: '#<channel>' is sharded (SPUBLISH)", () => {
  it('a claim with a sharded channel reaches SSUBSCRIBE, not SUBSCRIBE', async () => {
    const a = await session('a');
    const loc = task();
    const classic = new Redis(server.url);
    const sharded = new Redis(server.url);
    const got: string[] = [];
    // a fresh grant may be announced on the namespace channel or on its ':claims' channel
    await classic.subscribe(keys.channel, `${keys.channel}:claims`);
    await sharded.ssubscribe(keys.channel, `${keys.channel}:claims`);
    classic.on('message', () => got.push('classic'));
    sharded.on('smessage', (_c: string, m: string) => got.push(`sharded:${JSON.parse(m).e}`));
    // fresh grants are announced only while a watcher keeps this flag alive
    await redis.set(`${keys.channel}:watching`, '1', 'PX', 5_000);
    await callScript(redis, 'claim', [
      loc.container,
      loc.index,
      keys.session(a),
      '',
      a,
      keys.sessionPrefix,
      10_000,
      60_000,
      60_000,
      3,
      '0',
      `#${keys.channel}`,
      loc.ref,
    ]);
    for (let i = 0; i < 500 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    // a classic message would have been published first, in the same script
    await new Promise((r) => setTimeout(r, 50));
    expect(got).toEqual(['sharded:claimed']);
    await redis.del(`${keys.channel}:watching`);
    classic.disconnect();
    sharded.disconnect();
  });
});

describe.each([false, true])('repair (hash-field mode: %s)', (hash) => {
  const outcome = (s: string, token: number, state: 'D' | 'F' = 'D') => ({
    session: s,
    token,
    attempt: 1,
    state,
    payload: state === 'D' ? '"result"' : '{"name":"Error","message":"x"}',
    retentionMs: 60_000,
    backoffMs: 0,
  });

  it('1 written: over no record, over an undo placeholder (even with a higher token), over an older outcome', async () => {
    const a = await session('a');
    const b = await session('b');
    const absent = task(hash);
    expect(await store.repair(absent, outcome(a, 3))).toBe(true);
    expect(await store.inspect(absent)).toMatchObject({
      state: 'done',
      token: 3,
      session: a,
      payload: '"result"',
    });
    // written again: already there
    expect(
      await callScript(redis, 'repair', [
        absent.container,
        absent.index,
        absent.field,
        a,
        3,
        1,
        'D',
        '"result"',
        60_000,
        0,
      ]),
    ).toEqual([1, 3]);

    const placeholder = task(hash);
    for (let i = 0; i < 4; i++) {
      const { reply, previous } = await store.claimAtLeast(placeholder, args(b), 0);
      if (reply.type !== 'granted') throw new Error('not granted');
      await undo(placeholder, b, reply.token, previous);
    }
    expect(await store.inspect(placeholder)).toMatchObject({
      state: 'released',
      attempt: 0,
      token: 4,
    });
    expect(await store.repair(placeholder, outcome(a, 2))).toBe(true);
    expect(await store.inspect(placeholder)).toMatchObject({ state: 'done', token: 2, session: a });

    const older = task(hash);
    await store.claim(older, args(b));
    await store.settle(older, { ...outcome(b, 1, 'F'), retentionMs: 60_000 });
    expect(await store.repair(older, outcome(a, 2))).toBe(true);
    expect(await store.inspect(older)).toMatchObject({ state: 'done', token: 2, session: a });
  });

  it("1 written over the owner's own running grant (a node that lost the session); F keeps a retry time", async () => {
    const a = await session('a');
    const loc = task(hash);
    await store.claim(loc, args(a));
    await store.session('close', a, 0);
    expect(await store.repair(loc, outcome(a, 1, 'F'))).toBe(true);
    const rec = await store.inspect(loc);
    expect(rec).toMatchObject({ state: 'failed', token: 1, session: a });
  });

  it('0 left alone: a running record of another owner, or a newer outcome', async () => {
    const a = await session('a');
    const b = await session('b');
    const running = task(hash);
    await store.claim(running, args(b));
    expect(await store.repair(running, outcome(a, 5))).toBe(false);
    expect(
      await callScript(redis, 'repair', [
        running.container,
        running.index,
        running.field,
        a,
        5,
        1,
        'D',
        '1',
        60_000,
        0,
      ]),
    ).toEqual([0, 'R', 1]);
    const newer = task(hash);
    await store.claimAtLeast(newer, args(b), 4);
    await store.settle(newer, { ...outcome(b, 4), retentionMs: 60_000 });
    expect(await store.repair(newer, outcome(a, 3))).toBe(false);
    expect(await store.inspect(newer)).toMatchObject({ state: 'done', token: 4, session: b });
  });
});

describe('repair: faults', () => {
  it('-1 corrupt, -2 newer format, -4 wrong type', async () => {
    const a = await session('a');
    const loc = task();
    const o = {
      session: a,
      token: 1,
      attempt: 1,
      state: 'D' as const,
      payload: '1',
      retentionMs: 1_000,
      backoffMs: 0,
    };
    await redis.set(loc.container, 'garbage');
    await expect(store.repair(loc, o)).rejects.toMatchObject({ code: 'ERR_CORRUPT_RECORD' });
    await redis.set(loc.container, '9|R|future');
    await expect(store.repair(loc, o)).rejects.toMatchObject({ code: 'ERR_NEWER_FORMAT' });
    await redis.del(loc.container);
    await redis.sadd(loc.container, 'x');
    await expect(store.repair(loc, o)).rejects.toMatchObject({ code: 'ERR_WRONG_TYPE' });
  });
});
