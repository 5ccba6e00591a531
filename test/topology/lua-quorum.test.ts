/**
 * Contract tests of what quorum mode and Cluster add to the Lua layer: claim's optional
 * minimum token (and the undo note its grant keeps), every output code of undo-2.lua and
 * repair-2.lua, and sharded publishing ('#<channel>').
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keys, type TaskLocation } from '../../src/redis/keys.js';
import { callScript } from '../../src/redis/scripts.js';
import { type ClaimArgs, RedisStore } from '../../src/redis/store.js';
import { CorruptRecordError } from '../../src/shared/errors.js';
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
const undo = (
  loc: TaskLocation,
  s: string,
  token: number | undefined,
  opts: { keep?: number; announce?: boolean } = {},
) =>
  store.undo(loc, {
    session: s,
    token,
    keep: opts.keep,
    retentionMs: 60_000,
    announce: !!opts.announce,
  });
/** claim.lua for one task, called directly (numkeys, then KEYS and ARGV as its header lists). */
const claimScript = (loc: TaskLocation, a: string, channel: string, minToken?: number) =>
  callScript(redis, 'claim', [
    8,
    keys.session(a),
    `${keys.channel}:watching`,
    keys.history,
    keys.session(a), // owner 1: the claimer itself
    keys.seq(a),
    keys.bind(a),
    loc.container,
    loc.index,
    a,
    1_000, // history length
    10_000,
    60_000,
    60_000,
    3,
    '0',
    channel,
    minToken === undefined ? '' : '1',
    1,
    '1',
    keys.livePrefix,
    a,
    loc.field,
    loc.ref,
    minToken ?? '',
  ]);
const raw = (loc: TaskLocation) =>
  loc.field ? redis.hget(loc.container, loc.field) : redis.get(loc.container);

beforeAll(async () => {
  server = await RedisServer.start();
  redis = new Redis(server.url);
  store = new RedisStore(redis, keys, 5_000);
});
afterAll(async () => {
  redis.disconnect();
  await server?.stop();
});

describe('claim: optional minimum token (quorum mode, ARGV[9])', () => {
  /** claim.lua called directly for one task: `minToken` undefined is the plain mode. */
  const rawClaim = async (loc: TaskLocation, a: string, minToken?: number) =>
    ((await claimScript(loc, a, '', minToken)) as unknown[][])[0] as unknown[];

  it('the grant reply is the same with it and without it (7 elements)', async () => {
    const a = await session('a');
    const without = await rawClaim(task(), a);
    expect(without).toHaveLength(7);
    expect(without.slice(0, 4)).toEqual([1, 1, 1, 0]);
    const withIt = await rawClaim(task(), a, 5);
    expect(withIt).toHaveLength(7);
    expect(withIt.slice(0, 4)).toEqual([1, 5, 1, 0]);
  });

  it.each([false, true])(
    'with it: token >= minimum; the grant keeps the record it replaced, which no reader sees (hash: %s)',
    async (hash) => {
      const a = await session('a');
      const b = await session('b');
      const loc = task(hash);
      expect(await store.claimAtLeast(loc, args(a), 0)).toMatchObject({
        type: 'granted',
        token: 1,
        kind: 'fresh',
      });
      // nothing was replaced: the note says so
      expect(await raw(loc)).toMatch(/^2\|R\|1\|1\|[^|]+\|\d+\|\d+\|\d+\|\|0\|-$/);
      await store.release(loc, { session: a, token: 1, retentionMs: 60_000 });
      const released = await raw(loc);
      expect(await store.claimAtLeast(loc, args(b), 7)).toMatchObject({
        type: 'granted',
        token: 7,
        attempt: 2,
        kind: 'handover',
      });
      expect((await raw(loc))?.endsWith(`||4|${released}`)).toBe(true);
      expect(await store.inspect(loc)).toMatchObject({ state: 'running', token: 7, payload: '' });
      // the first progress report replaces the note: the grant was used
      await store.progress(loc, { session: b, token: 7, progress: 1, note: '"half"' });
      expect((await raw(loc))?.endsWith('|1|4|"half"')).toBe(true);
      // a minimum below the natural token changes nothing
      await store.release(loc, { session: b, token: 7, retentionMs: 60_000 });
      expect(await store.claimAtLeast(loc, args(a), 3)).toMatchObject({
        type: 'granted',
        token: 8,
      });
    },
  );
});

describe.each([false, true])('undo (hash-field mode: %s)', (hash) => {
  it('1 undone, where there was no record: no record again, and the next grant is the first one; event "undone"', async () => {
    const a = await session('a');
    const b = await session('b');
    const loc = task(hash);
    const sub = new Redis(server.url);
    const events: Record<string, unknown>[] = [];
    await sub.subscribe(keys.channel);
    sub.on('message', (_c, m) => events.push(JSON.parse(m)));
    expect(await store.claimAtLeast(loc, args(a), 0)).toMatchObject({ token: 1 });
    expect(await undo(loc, a, 1, { announce: true })).toBe(true);
    expect(await store.inspect(loc)).toMatchObject({ found: false });
    expect(await raw(loc)).toBeNull();
    if (hash) expect(await redis.zscore(loc.index, loc.field)).toBeNull();
    expect(await store.claimAtLeast(loc, args(b), 0)).toMatchObject({
      type: 'granted',
      token: 1,
      attempt: 1,
      kind: 'fresh',
    });
    const undone = () => events.find((e) => e.e === 'undone');
    for (let i = 0; i < 500 && !undone(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(undone()).toMatchObject({ e: 'undone', r: loc.ref, s: '', k: 0, a: 0, o: '' });
    sub.disconnect();
  });

  it('1 undone: the replaced record comes back exactly, token included', async () => {
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
    const failed = await raw(loc);
    expect(await store.claimAtLeast(loc, args(b), 5)).toMatchObject({
      type: 'granted',
      token: 5,
      kind: 'retry',
    });
    expect(await undo(loc, b, 5)).toBe(true);
    expect(await raw(loc)).toBe(failed);
    expect(await store.inspect(loc)).toMatchObject({
      found: true,
      state: 'failed',
      token: 1,
      attempt: 1,
      session: a,
      payload: '{"name":"Error","message":"boom"}',
    });
  });

  it('1 undone: a takeover undone gives the owner back its running grant, which it can settle where its session lives', async () => {
    const a = await session('a');
    const b = await session('b');
    const loc = task(hash);
    await store.claim(loc, args(a, { taskTimeoutMs: 100 }));
    await new Promise((r) => setTimeout(r, 150));
    expect(await store.claimAtLeast(loc, args(b), 0)).toMatchObject({
      token: 2,
      kind: 'deadline-passed',
      from: a,
    });
    expect(await undo(loc, b, 2)).toBe(true);
    expect(await store.inspect(loc)).toMatchObject({ state: 'running', token: 1, session: a });
    // the deadline has passed: refused as on one Redis, and the token is the owner's own
    expect(
      await store.settle(loc, {
        session: a,
        token: 1,
        state: 'D',
        payload: '1',
        retentionMs: 60_000,
        backoffMs: 0,
      }),
    ).toMatchObject({ ok: false, reason: 'deadline-passed' });
  });

  it('1 undone without a token: whichever grant of this session the node holds, except the one to keep', async () => {
    const a = await session('a');
    const loc = task(hash);
    expect(await store.claimAtLeast(loc, args(a), 4)).toMatchObject({ token: 4 });
    expect(await undo(loc, a, undefined, { keep: 4 })).toBe(false);
    expect(await store.inspect(loc)).toMatchObject({ state: 'running', token: 4 });
    expect(await undo(loc, a, undefined, { keep: 3 })).toBe(true);
    expect(await store.inspect(loc)).toMatchObject({ found: false });
    expect(await store.claimAtLeast(loc, args(a), 0)).toMatchObject({ token: 1 });
    expect(await undo(loc, a, undefined)).toBe(true);
    expect(await store.inspect(loc)).toMatchObject({ found: false });
  });

  it('0 nothing to undo: absent, another token, another session, settled, progress reported, or a grant without a note', async () => {
    const a = await session('a');
    const b = await session('b');
    const loc = task(hash);
    expect(await undo(loc, a, 1)).toBe(false);
    await store.claimAtLeast(loc, args(a), 0);
    expect(await undo(loc, a, 2)).toBe(false);
    expect(await undo(loc, b, 1)).toBe(false);
    expect(await undo(loc, b, undefined)).toBe(false);
    await store.settle(loc, {
      session: a,
      token: 1,
      state: 'D',
      payload: '1',
      retentionMs: 60_000,
      backoffMs: 0,
    });
    expect(await undo(loc, a, 1)).toBe(false);
    expect(await store.inspect(loc)).toMatchObject({ state: 'done', token: 1 });

    const used = task(hash);
    await store.claimAtLeast(used, args(a), 0);
    await store.progress(used, { session: a, token: 1, progress: 10, note: '' });
    expect(await undo(used, a, 1)).toBe(false);
    expect(await store.inspect(used)).toMatchObject({ state: 'running', token: 1, progress: 10 });

    const plain = task(hash);
    await store.claim(plain, args(a));
    expect(await undo(plain, a, 1)).toBe(false);
    expect(await store.inspect(plain)).toMatchObject({ state: 'running', token: 1 });
  });
});

describe('undo: faults', () => {
  it('-1 corrupt (the record, or its undo note), -2 newer format, -4 wrong type', async () => {
    const a = await session('a');
    const loc = task();
    await redis.set(loc.container, 'garbage');
    await expect(undo(loc, a, 1)).rejects.toMatchObject({ code: 'ERR_CORRUPT_RECORD' });
    await redis.set(loc.container, '9|R|future');
    await expect(undo(loc, a, 1)).rejects.toMatchObject({ code: 'ERR_NEWER_FORMAT' });
    await redis.del(loc.container);
    await redis.sadd(loc.container, 'x');
    await expect(undo(loc, a, 1)).rejects.toBeInstanceOf(CorruptRecordError);
    await expect(undo(loc, a, 1)).rejects.toMatchObject({ code: 'ERR_WRONG_TYPE' });
    await redis.del(loc.container);
    await redis.set(loc.container, `1|R|1|1|${a}|9999999999999|1|1||not a record`);
    await expect(undo(loc, a, 1)).rejects.toMatchObject({ code: 'ERR_CORRUPT_RECORD' });
    // the raw codes, as the header lists them
    expect(
      await callScript(redis, 'undo', [loc.container, loc.index, '', a, 1, '', 1000, '', loc.ref]),
    ).toEqual([-1, 'not a record']);
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
    await claimScript(loc, a, `#${keys.channel}`);
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
  const outcome = (s: string, token: number, state: 'D' | 'F' = 'D', counted = true) => ({
    session: s,
    token,
    attempt: 1,
    state,
    payload: state === 'D' ? '"result"' : '{"name":"Error","message":"x"}',
    retentionMs: 60_000,
    backoffMs: 0,
    counted,
  });
  const repairRaw = (loc: TaskLocation, s: string, token: number, counted: '0' | '1') =>
    callScript(redis, 'repair', [
      loc.container,
      loc.index,
      loc.field,
      s,
      token,
      1,
      'D',
      '"result"',
      60_000,
      0,
      counted,
    ]);

  it('1 written: over no record, over an earlier record of the owner, over an older outcome', async () => {
    const a = await session('a');
    const b = await session('b');
    const absent = task(hash);
    expect(await store.repair(absent, outcome(a, 3, 'D', false))).toBe('written');
    expect(await store.inspect(absent)).toMatchObject({
      state: 'done',
      token: 3,
      session: a,
      payload: '"result"',
    });
    // written again: already there
    expect(await repairRaw(absent, a, 3, '0')).toEqual([1, 3]);

    const earlier = task(hash);
    await store.claim(earlier, args(a));
    expect(await store.repair(earlier, outcome(a, 2, 'D', false))).toBe('written');
    expect(await store.inspect(earlier)).toMatchObject({ state: 'done', token: 2, session: a });

    const older = task(hash);
    await store.claim(older, args(b));
    await store.settle(older, { ...outcome(b, 1, 'F'), retentionMs: 60_000 });
    expect(await store.repair(older, outcome(a, 2, 'D', false))).toBe('written');
    expect(await store.inspect(older)).toMatchObject({ state: 'done', token: 2, session: a });
  });

  it('this very grant (the node lost the session): written once the outcome counted, left alone before; F keeps a retry time', async () => {
    const a = await session('a');
    const loc = task(hash);
    await store.claim(loc, args(a));
    await store.session('close', a, 0);
    expect(await repairRaw(loc, a, 1, '0')).toEqual([0, 'R', 1]);
    expect(await store.inspect(loc)).toMatchObject({ state: 'running', token: 1, session: a });
    expect(await store.repair(loc, outcome(a, 1, 'F'))).toBe('written');
    const rec = await store.inspect(loc);
    expect(rec).toMatchObject({ state: 'failed', token: 1, session: a });
    expect(rec.found && rec.deadline).toBeGreaterThan(0);
  });

  it('2 left alone for now: a running grant of another owner; 0 left alone: anything newer', async () => {
    const a = await session('a');
    const b = await session('b');
    const running = task(hash);
    await store.claim(running, args(b));
    expect(await store.repair(running, outcome(a, 5))).toBe('later');
    expect(await repairRaw(running, a, 5, '1')).toEqual([2, 'R', 1]);
    const newer = task(hash);
    await store.claimAtLeast(newer, args(b), 4);
    await store.settle(newer, { ...outcome(b, 4), retentionMs: 60_000 });
    expect(await store.repair(newer, outcome(a, 3))).toBe('kept');
    expect(await store.inspect(newer)).toMatchObject({ state: 'done', token: 4, session: b });
    const ownNewer = task(hash);
    await store.claimAtLeast(ownNewer, args(a), 6);
    expect(await store.repair(ownNewer, outcome(a, 5))).toBe('kept');
    expect(await store.inspect(ownNewer)).toMatchObject({ state: 'running', token: 6 });
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
      counted: true,
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
