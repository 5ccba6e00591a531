/**
 * Contract tests of the Lua layer: every output code that a script's header lists is
 * produced here, on a real Redis, through the same typed wrappers the worker uses.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { fencedRead, fencedWrite } from '../src/redis/fencing.js';
import { Keys, type TaskLocation } from '../src/redis/keys.js';
import { callScript, loadScripts } from '../src/redis/scripts.js';
import { type ClaimArgs, RedisStore } from '../src/redis/store.js';
import { ReplyCode } from '../src/shared/codes.js';
import { CorruptRecordError } from '../src/shared/errors.js';
import { RedisServer } from '../src/testing/index.js';

let server: RedisServer;
let redis: Redis;
let store: RedisStore;
let sub: Redis;
const events: Record<string, unknown>[] = [];
const keys = new Keys('pairlock', 'contract');

const claimArgs = (session: string, extra: Partial<ClaimArgs> = {}): ClaimArgs => ({
  session,
  sessionTtlMs: 10_000,
  taskTimeoutMs: 60_000,
  retentionMs: 60_000,
  maxAttempts: 3,
  dryRun: false,
  ...extra,
});
const settle = (
  loc: TaskLocation,
  session: string,
  token: number,
  state: 'D' | 'F' = 'D',
  backoffMs = 0,
  maxAttempts = 3,
) =>
  store.settle(loc, {
    session,
    token,
    state,
    payload: state === 'D' ? '"ok"' : '{"message":"x"}',
    retentionMs: 60_000,
    backoffMs,
    maxAttempts,
  });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let n = 0;
/** A fresh task in plain-key mode, or hash-field mode. */
const task = (hash = false) => keys.task(`task-${++n}`, hash ? 'jobs' : undefined);
async function session(name: string, ttl = 10_000) {
  const id = `${name}:${++n}#1`;
  expect((await store.session('open', id, ttl)).ok).toBe(true);
  return id;
}

beforeAll(async () => {
  server = await RedisServer.start();
  redis = new Redis(server.url);
  sub = new Redis(server.url);
  store = new RedisStore(redis, keys, 5_000);
  await sub.subscribe(keys.channel, `${keys.channel}:claims`);
  // a batch (settles, releases) publishes one array of events
  sub.on('message', (c, m) => {
    const v = JSON.parse(m) as Record<string, unknown> | Record<string, unknown>[];
    for (const e of Array.isArray(v) ? v : [v]) events.push({ ...e, channel: c });
  });
});
afterAll(async () => {
  sub.disconnect();
  redis.disconnect();
  await server?.stop();
});
beforeEach(() => {
  events.length = 0;
});

describe('every script has a contract header that matches its reply codes', () => {
  it('headers list Input and Output, and every code the header names is a known ReplyCode', () => {
    const dir = new URL('../lua/', import.meta.url);
    const known = new Set<number>(Object.values(ReplyCode));
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.lua'))) {
      const text = readFileSync(new URL(file, dir), 'utf8');
      const header = text.slice(0, text.indexOf(']]'));
      expect(header, file).toMatch(/Input/);
      expect(header, file).toMatch(/Output/);
      for (const m of header.matchAll(/\{ (-?\d+)[,\s}]/g))
        expect(known.has(Number(m[1])), `${file}: ${m[0]}`).toBe(true);
    }
  });
});

describe.each([false, true])('claim (hash-field mode: %s)', (hash) => {
  it('1 granted (fresh), then 2 held for another session; event "claimed" while watched', async () => {
    const a = await session('a');
    const b = await session('b');
    // nobody watches: a fresh grant publishes nothing
    const quiet = task(hash);
    await store.claim(quiet, claimArgs(a));
    // `pairlock watch` keeps this flag alive
    await redis.set(`${keys.channel}:watching`, '1', 'PX', 5_000);
    const loc = task(hash);
    const g = await store.claim(loc, claimArgs(a));
    expect(g).toMatchObject({
      type: 'granted',
      token: 1,
      attempt: 1,
      kind: 'fresh',
      deadlineInMs: 60_000,
      from: '',
    });
    const h = await store.claim(loc, claimArgs(b));
    expect(h).toMatchObject({ type: 'held', owner: a, token: 1, attempt: 1 });
    if (h.type === 'held') {
      expect(h.ownerPttl).toBeGreaterThan(9_000);
      expect(h.deadlineInMs).toBeGreaterThan(59_000);
    }
    await sleep(30);
    // fresh claims go to the side channel; workers listen only to the main one
    expect(events).toContainEqual(
      expect.objectContaining({
        e: 'claimed',
        r: loc.ref,
        s: 'R',
        k: 1,
        o: a,
        kind: 0,
        channel: `${keys.channel}:claims`,
      }),
    );
    // and the claimer that found it held is shown covering it
    expect(events).toContainEqual(
      expect.objectContaining({ e: 'standby', r: loc.ref, k: 1, o: a, by: b }),
    );
    expect(events.find((e) => e.r === quiet.ref)).toBeUndefined();
    await redis.del(`${keys.channel}:watching`);
  });

  it('3 done with the result', async () => {
    const a = await session('a');
    const loc = task(hash);
    await store.claim(loc, claimArgs(a));
    expect((await settle(loc, a, 1)).ok).toBe(true);
    expect(await store.claim(loc, claimArgs(await session('b')))).toMatchObject({
      type: 'done',
      owner: a,
      token: 1,
      payload: '"ok"',
    });
  });

  it('4 failed: not terminal with a retry delay, terminal at maxAttempts; then 1 granted as retry (kind 3)', async () => {
    const a = await session('a');
    const b = await session('b');
    const loc = task(hash);
    await store.claim(loc, claimArgs(a));
    await settle(loc, a, 1, 'F', 200);
    const pending = await store.claim(loc, claimArgs(b));
    expect(pending).toMatchObject({ type: 'failed', terminal: false, token: 1 });
    if (pending.type === 'failed') expect(pending.retryInMs).toBeGreaterThan(0);
    expect(await store.claim(loc, claimArgs(b, { maxAttempts: 1 }))).toMatchObject({
      type: 'failed',
      terminal: true,
      retryInMs: 0,
    });
    await sleep(220);
    expect(await store.claim(loc, claimArgs(b))).toMatchObject({
      type: 'granted',
      token: 2,
      attempt: 2,
      kind: 'retry',
      from: a,
    });
  });

  it('1 granted as takeover when the owner session expired (kind 1), and when the deadline passed (kind 2)', async () => {
    const a = await session('a');
    const b = await session('b');
    const loc1 = task(hash);
    await store.claim(loc1, claimArgs(a));
    await store.session('close', a, 0);
    expect(await store.claim(loc1, claimArgs(b))).toMatchObject({
      type: 'granted',
      token: 2,
      kind: 'session-expired',
      from: a,
    });

    const c = await session('c');
    const loc2 = task(hash);
    await store.claim(loc2, claimArgs(c, { taskTimeoutMs: 5 }));
    await sleep(15);
    expect(await store.claim(loc2, claimArgs(b))).toMatchObject({
      type: 'granted',
      token: 2,
      kind: 'deadline-passed',
      from: c,
    });
  });

  it('1 granted as handover after release (kind 4); event "released"', async () => {
    const a = await session('a');
    const loc = task(hash);
    await store.claim(loc, claimArgs(a));
    expect(await store.release(loc, { session: a, token: 1, retentionMs: 60_000 })).toMatchObject({
      ok: true,
      token: 1,
    });
    expect(await store.claim(loc, claimArgs(await session('b')))).toMatchObject({
      type: 'granted',
      token: 2,
      kind: 'handover',
    });
    await sleep(30);
    expect(events).toContainEqual(
      expect.objectContaining({ e: 'released', r: loc.ref, s: 'X', k: 1 }),
    );
  });

  it('a release of an unused grant uses no attempt; the same worker claiming its own task again is kind 6 (reclaimed)', async () => {
    const a = await session('a');
    const loc = task(hash);
    expect(await store.claim(loc, claimArgs(a))).toMatchObject({ token: 1, attempt: 1 });
    // given back unused (its handler stopped on a lost lease): the attempt is not used up
    expect(
      await store.release(loc, { session: a, token: 1, retentionMs: 60_000, unused: true }),
    ).toMatchObject({ ok: true, token: 1, attempt: 0 });
    // the worker's own task taken back: not a handover, the token is new, the attempt the same
    expect(await store.claim(loc, claimArgs(a))).toMatchObject({
      type: 'granted',
      token: 2,
      attempt: 1,
      kind: 'reclaimed',
      from: a,
    });
    // a plain release uses the attempt: the next grant, by a peer, is a handover (attempt 2)
    await store.release(loc, { session: a, token: 2, retentionMs: 60_000 });
    expect(await store.claim(loc, claimArgs(await session('b')))).toMatchObject({
      kind: 'handover',
      token: 3,
      attempt: 2,
    });
    // a record its worker held under a session of its own that expired: reclaimed too,
    // by that worker's next session (sessions are '<worker>#<epoch>')
    const worker = `w:${++n}`;
    expect((await store.session('open', `${worker}#1`, 10_000)).ok).toBe(true);
    const own = task(hash);
    await store.claim(own, claimArgs(`${worker}#1`));
    await redis.del(keys.session(`${worker}#1`));
    expect((await store.session('open', `${worker}#2`, 10_000)).ok).toBe(true);
    expect(await store.claim(own, claimArgs(`${worker}#2`))).toMatchObject({
      type: 'granted',
      token: 2,
      kind: 'reclaimed',
      from: `${worker}#1`,
    });
  });

  it('5 claimable on a dry run, which writes nothing', async () => {
    const loc = task(hash);
    expect(await store.claim(loc, claimArgs(await session('a'), { dryRun: true }))).toEqual({
      type: 'claimable',
      kind: 'fresh',
    });
    expect(await store.inspect(loc)).toMatchObject({ found: false });
  });

  it('-3 when the claimer session does not exist', async () => {
    expect(await store.claim(task(hash), claimArgs('ghost:0#1'))).toEqual({
      type: 'session-expired',
    });
  });

  it("6 resumed: the claimer's own grant, with its kind and the server's remaining deadline, on a dry run too", async () => {
    const a = await session('a');
    const b = await session('b');
    const loc = task(hash);
    await store.claim(loc, claimArgs(a));
    await store.release(loc, { session: a, token: 1, retentionMs: 60_000 });
    expect(await store.claim(loc, claimArgs(b))).toMatchObject({ type: 'granted', token: 2 });
    await sleep(50);
    for (const dryRun of [false, true]) {
      const r = await store.claim(loc, claimArgs(b, { dryRun, taskTimeoutMs: 1 }));
      expect(r).toMatchObject({ type: 'resumed', token: 2, attempt: 2, kind: 'handover' });
      if (r.type === 'resumed') {
        // the deadline of the grant (60 s), not of this call's taskTimeoutMs
        expect(r.deadlineInMs).toBeGreaterThan(58_000);
        expect(r.deadlineInMs).toBeLessThanOrEqual(59_950);
      }
    }
    // nothing was granted anew
    expect(await store.inspect(loc)).toMatchObject({ found: true, token: 2, attempt: 2 });
  });

  it('reads records of format 1 (no grant kind) and writes format 2', async () => {
    const a = await session('a');
    const loc = task(hash);
    const v1 = `1|R|4|2|${a}|9999999999999|1|1||`;
    if (hash) {
      await redis.hset(loc.container, loc.field, v1);
    } else {
      await redis.set(loc.container, v1);
    }
    expect(await store.claim(loc, claimArgs(a))).toMatchObject({
      type: 'resumed',
      token: 4,
      kind: 'session-expired',
    });
    expect(await settle(loc, a, 4)).toMatchObject({ ok: true, token: 4 });
    const raw = hash ? await redis.hget(loc.container, loc.field) : await redis.get(loc.container);
    expect(raw).toMatch(/^2\|D\|4\|2\|/);
  });
});

describe('faults: -1 corrupt, -2 newer format, -4 wrong type (claim, settle, release, progress, inspect, peek)', () => {
  it('plain-key mode', async () => {
    const a = await session('a');
    const corrupt = task();
    const newer = task();
    const wrong = task();
    await redis.set(corrupt.container, 'garbage');
    await redis.set(newer.container, '3|R|whatever');
    await redis.rpush(wrong.container, 'x');
    const cases: [TaskLocation, string][] = [
      [corrupt, 'ERR_CORRUPT_RECORD'],
      [newer, 'ERR_NEWER_FORMAT'],
      [wrong, 'ERR_WRONG_TYPE'],
    ];
    for (const [loc, code] of cases) {
      for (const call of [
        () => store.claim(loc, claimArgs(a)),
        () => settle(loc, a, 1),
        () => store.release(loc, { session: a, token: 1, retentionMs: 1_000 }),
        () => store.progress(loc, { session: a, token: 1, progress: 1, note: '' }),
        () => store.inspect(loc),
      ]) {
        const err = await call().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(CorruptRecordError);
        expect((err as CorruptRecordError).code).toBe(code);
      }
    }
    expect(await store.peek([corrupt, newer, wrong])).toEqual([
      { state: 'error', code: -1 },
      { state: 'error', code: -2 },
      { state: 'error', code: -4 },
    ]);
    // nothing was overwritten
    expect(await redis.get(corrupt.container)).toBe('garbage');
    expect(await redis.get(newer.container)).toBe('3|R|whatever');
    expect(await redis.lrange(wrong.container, 0, -1)).toEqual(['x']);
  });

  it('a version that is not a number above 1 is corrupt, not newer', async () => {
    const a = await session('a');
    for (const raw of ['0|R|1|1|x#1|1|1|1||', '01|R|1|1|x#1|1|1|1||']) {
      const loc = task();
      await redis.set(loc.container, raw);
      await expect(store.claim(loc, claimArgs(a))).rejects.toMatchObject({
        code: 'ERR_CORRUPT_RECORD',
      });
    }
  });

  it('hash-field mode: a garbage field, and a hash key of another type', async () => {
    const a = await session('a');
    const loc = keys.task('planted', 'other');
    await redis.hset(loc.container, loc.field, 'not a record');
    await expect(store.claim(loc, claimArgs(a))).rejects.toMatchObject({
      code: 'ERR_CORRUPT_RECORD',
    });
    expect(await redis.hget(loc.container, loc.field)).toBe('not a record');
    const wrongHash = keys.task('x', 'strhash');
    await redis.set(wrongHash.container, 'a string');
    await expect(store.claim(wrongHash, claimArgs(a))).rejects.toMatchObject({
      code: 'ERR_WRONG_TYPE',
    });
  });
});

describe.each([false, true])(
  'settle, release, progress: ownership proof (hash-field mode: %s)',
  (hash) => {
    it('1 ok; event "settled"', async () => {
      const a = await session('a');
      const loc = task(hash);
      await store.claim(loc, claimArgs(a));
      expect(
        await store.progress(loc, { session: a, token: 1, progress: 50, note: '"half"' }),
      ).toMatchObject({ ok: true });
      expect(await settle(loc, a, 1)).toMatchObject({ ok: true, token: 1, attempt: 1 });
      await sleep(30);
      expect(events).toContainEqual(
        expect.objectContaining({ e: 'settled', r: loc.ref, s: 'D', k: 1, o: a, p: '"ok"' }),
      );
      // a result over 16 KiB does not travel in the event; a failure never carries one
      const big = task(hash);
      await store.claim(big, claimArgs(a));
      const payload = JSON.stringify('x'.repeat(16_400));
      await store.settle(big, {
        session: a,
        token: 1,
        state: 'D',
        payload,
        retentionMs: 60_000,
        backoffMs: 0,
      });
      const failed = task(hash);
      await store.claim(failed, claimArgs(a));
      await settle(failed, a, 1, 'F');
      await sleep(30);
      const bigEvent = events.find((e) => e.r === big.ref && e.e === 'settled');
      expect(bigEvent).toMatchObject({ s: 'D', k: 1 });
      expect(bigEvent).not.toHaveProperty('p');
      expect(events.find((e) => e.r === failed.ref && e.e === 'settled')).not.toHaveProperty('p');
    });

    it('settle says whether a failure is final, and answers a repeat of itself as repeated', async () => {
      const a = await session('a');
      const loc = task(hash);
      await store.claim(loc, claimArgs(a));
      expect(await settle(loc, a, 1, 'F', 0, 2)).toMatchObject({
        ok: true,
        final: false,
        repeated: false,
      });
      expect(await store.claim(loc, claimArgs(a))).toMatchObject({ type: 'granted', token: 2 });
      expect(await settle(loc, a, 2, 'F', 0, 2)).toMatchObject({ ok: true, final: true });
      // the same settle again (its reply was lost): ok, repeated, nothing written
      expect(await settle(loc, a, 2, 'F', 0, 2)).toMatchObject({
        ok: true,
        token: 2,
        final: true,
        repeated: true,
      });
      // another state is a real conflict
      expect(await settle(loc, a, 2, 'D')).toMatchObject({ ok: false, reason: 'already-settled' });
      const done = task(hash);
      await store.claim(done, claimArgs(a));
      expect(await settle(done, a, 1)).toMatchObject({ ok: true, final: false, repeated: false });
      expect(await settle(done, a, 1)).toMatchObject({ ok: true, repeated: true });
      // a release repeated likewise
      const rel = task(hash);
      await store.claim(rel, claimArgs(a));
      const release = () => store.release(rel, { session: a, token: 1, retentionMs: 60_000 });
      expect(await release()).toMatchObject({ ok: true, repeated: false });
      expect(await release()).toMatchObject({ ok: true, repeated: true });
    });

    it('a failed record is kept until its retry time plus the retention', async () => {
      const a = await session('a');
      const loc = task(hash);
      await store.claim(loc, claimArgs(a));
      await store.settle(loc, {
        session: a,
        token: 1,
        state: 'F',
        payload: '{}',
        retentionMs: 1_000,
        backoffMs: 5_000,
        maxAttempts: 3,
      });
      const ttl = hash
        ? Number(await redis.zscore(loc.index, loc.field)) - Date.now()
        : await redis.pttl(loc.container);
      expect(ttl).toBeGreaterThan(5_000);
    });

    it('-10 unknown task', async () => {
      const a = await session('a');
      const loc = task(hash);
      expect(await settle(loc, a, 1)).toEqual({ ok: false, reason: 'unknown-task' });
      expect(await store.release(loc, { session: a, token: 1, retentionMs: 1_000 })).toEqual({
        ok: false,
        reason: 'unknown-task',
      });
      expect(await store.progress(loc, { session: a, token: 1, progress: 1, note: '' })).toEqual({
        ok: false,
        reason: 'unknown-task',
      });
    });

    it('-11 not owner: another session with the current token (a forged owner)', async () => {
      const a = await session('a');
      const b = await session('b');
      const loc = task(hash);
      await store.claim(loc, claimArgs(a));
      expect(await settle(loc, b, 1)).toMatchObject({
        ok: false,
        reason: 'not-owner',
        token: 1,
        owner: a,
      });
      expect(await store.release(loc, { session: b, token: 1, retentionMs: 1_000 })).toMatchObject({
        reason: 'not-owner',
      });
      expect(
        await store.progress(loc, { session: b, token: 1, progress: 1, note: '' }),
      ).toMatchObject({ reason: 'not-owner' });
      // a forged higher token is no better
      expect(await settle(loc, a, 7)).toMatchObject({ ok: false, reason: 'not-owner' });
      expect(await store.inspect(loc)).toMatchObject({
        found: true,
        state: 'running',
        token: 1,
        session: a,
      });
    });

    it('-12 token superseded: the old owner after a takeover', async () => {
      const a = await session('a');
      const b = await session('b');
      const loc = task(hash);
      await store.claim(loc, claimArgs(a, { taskTimeoutMs: 5 }));
      await sleep(15);
      await store.claim(loc, claimArgs(b));
      await redis.set(`${keys.channel}:watching`, '1', 'PX', 5_000);
      expect(await settle(loc, a, 1)).toMatchObject({
        ok: false,
        reason: 'token-superseded',
        token: 2,
        owner: b,
      });
      await redis.del(`${keys.channel}:watching`);
      await sleep(30);
      // a watcher sees the refused late settle of the old owner
      expect(events).toContainEqual(
        expect.objectContaining({ e: 'rejected', r: loc.ref, k: 1, o: a, why: -12 }),
      );
      expect(await store.release(loc, { session: a, token: 1, retentionMs: 1_000 })).toMatchObject({
        reason: 'token-superseded',
      });
      expect(
        await store.progress(loc, { session: a, token: 1, progress: 1, note: '' }),
      ).toMatchObject({ reason: 'token-superseded' });
    });

    it('-13 already settled', async () => {
      const a = await session('a');
      const loc = task(hash);
      await store.claim(loc, claimArgs(a));
      await settle(loc, a, 1);
      expect(await settle(loc, a, 1, 'F')).toEqual({
        ok: false,
        reason: 'already-settled',
        state: 'D',
      });
      expect(await store.release(loc, { session: a, token: 1, retentionMs: 1_000 })).toMatchObject({
        reason: 'already-settled',
      });
      expect(
        await store.progress(loc, { session: a, token: 1, progress: 1, note: '' }),
      ).toMatchObject({ reason: 'already-settled' });
    });

    it('-14 session expired (nobody took over yet: still rejected)', async () => {
      const a = await session('a');
      const loc = task(hash);
      await store.claim(loc, claimArgs(a));
      await store.session('close', a, 0);
      expect(await settle(loc, a, 1)).toEqual({ ok: false, reason: 'session-expired' });
      expect(await store.release(loc, { session: a, token: 1, retentionMs: 1_000 })).toEqual({
        ok: false,
        reason: 'session-expired',
      });
      expect(await store.progress(loc, { session: a, token: 1, progress: 1, note: '' })).toEqual({
        ok: false,
        reason: 'session-expired',
      });
    });

    it('-15 deadline passed (settle, progress; release is still allowed)', async () => {
      const a = await session('a');
      const loc = task(hash);
      await store.claim(loc, claimArgs(a, { taskTimeoutMs: 5 }));
      await sleep(15);
      expect(await settle(loc, a, 1)).toEqual({ ok: false, reason: 'deadline-passed' });
      expect(await store.progress(loc, { session: a, token: 1, progress: 1, note: '' })).toEqual({
        ok: false,
        reason: 'deadline-passed',
      });
      expect(await store.release(loc, { session: a, token: 1, retentionMs: 1_000 })).toMatchObject({
        ok: true,
      });
    });
  },
);

describe('session', () => {
  it('1 open/renew/ttl/close, -16 exists, -14 expired, -17 unknown op', async () => {
    const id = `s:${++n}#1`;
    expect(await store.session('open', id, 5_000)).toMatchObject({ ok: true, pttl: 5_000 });
    expect(await store.session('open', id, 5_000)).toEqual({ ok: false, reason: 'session-exists' });
    expect(await store.session('renew', id, 8_000)).toMatchObject({ ok: true });
    const ttl = await store.session('ttl', id, 0);
    expect(ttl.ok && ttl.pttl > 7_000).toBe(true);
    expect(await store.session('close', id, 0)).toMatchObject({ ok: true });
    expect(await store.session('renew', id, 5_000)).toEqual({
      ok: false,
      reason: 'session-expired',
    });
    expect(await store.session('ttl', id, 0)).toEqual({ ok: false, reason: 'session-expired' });
    expect(await store.session('close', id, 0)).toEqual({ ok: false, reason: 'session-expired' });
    // a renewal never re-creates an expired session
    expect(await redis.exists(keys.session(id))).toBe(0);
    expect(
      await callScript(redis, 'session', [keys.session(id), keys.bind(id), 'bogus', 0, '']),
    ).toEqual([-17, 'bogus']);
  });
});

describe('inspect and peek', () => {
  it('inspect: 0 absent, 1 present with the owner lease and the kept time', async () => {
    const a = await session('a');
    const loc = task();
    expect(await store.inspect(loc)).toMatchObject({ found: false });
    await store.claim(loc, claimArgs(a));
    const rec = await store.inspect(loc);
    expect(rec).toMatchObject({
      found: true,
      state: 'running',
      token: 1,
      attempt: 1,
      session: a,
      worker: a.split('#')[0],
    });
    if (rec.found) {
      expect(rec.ownerPttl).toBeGreaterThan(0);
      expect(rec.keepMs).toBeGreaterThan(60_000); // deadline + retention while running
      expect(rec.deadline - rec.serverNow).toBeGreaterThan(59_000);
    }
  });

  it("peek: '' absent, '<state>:<token>:<orphaned>' present", async () => {
    const a = await session('a');
    const absent = task();
    const live = task(true);
    const orphan = task();
    const done = task();
    await store.claim(live, claimArgs(a));
    await store.claim(done, claimArgs(a));
    await settle(done, a, 1);
    const b = await session('b');
    await store.claim(orphan, claimArgs(b));
    await store.session('close', b, 0);
    expect(await store.peek([absent, live, orphan, done])).toEqual([
      { state: 'absent' },
      { state: 'R', token: 1, orphaned: false },
      { state: 'R', token: 1, orphaned: true },
      { state: 'D', token: 1, orphaned: false },
    ]);
  });
});

describe('retention', () => {
  it('settled plain records expire after retentionMs; hash fields are swept by later calls', async () => {
    const a = await session('a');
    const plain = task();
    const h1 = keys.task('f1', 'sweep');
    const h2 = keys.task('f2', 'sweep');
    for (const loc of [plain, h1]) {
      await store.claim(loc, claimArgs(a));
      await store.settle(loc, {
        session: a,
        token: 1,
        state: 'D',
        payload: '1',
        retentionMs: 30,
        backoffMs: 0,
      });
    }
    expect(await redis.pttl(plain.container)).toBeLessThanOrEqual(30);
    await sleep(60);
    expect(await redis.exists(plain.container)).toBe(0);
    // the field is logically gone, and a call on another field of the hash sweeps it
    expect(await store.inspect(h1)).toMatchObject({ found: false });
    await store.claim(h2, claimArgs(a));
    expect(await redis.hexists(h1.container, 'f1')).toBe(0);
    expect(await redis.zscore(h1.index, 'f1')).toBeNull();
    expect(await redis.pttl(h1.container)).toBeGreaterThan(0);
  });
});

describe('fencedWrite', () => {
  it('1 written, -12 stale token rejected, -4 wrong type', async () => {
    const key = `pairlock:{contract}:sink:${++n}`;
    expect(await fencedWrite(redis, key, 1, 'first')).toEqual({ ok: true, previousToken: 0 });
    expect(await fencedWrite(redis, key, 3, 'third')).toEqual({ ok: true, previousToken: 1 });
    expect(await fencedWrite(redis, key, 2, 'stale')).toEqual({ ok: false, currentToken: 3 });
    expect(await fencedWrite(redis, key, 3, 'same')).toEqual({ ok: false, currentToken: 3 });
    expect(await fencedRead(redis, key)).toEqual({ token: 3, value: 'third' });
    await redis.set(`${key}:s`, 'x');
    await expect(fencedWrite(redis, `${key}:s`, 1, 'v')).rejects.toThrow(/not a fenced resource/);
    await expect(fencedWrite(redis, key, 0, 'v')).rejects.toMatchObject({
      code: 'ERR_INVALID_OPTION',
    });
  });
});

describe('scripts', () => {
  it('are registered under names that carry a hash of their text', () => {
    for (const def of Object.values(loadScripts())) {
      expect(def.command).toBe(`pl_${def.name}_${def.sha1.slice(0, 10)}`);
      expect(def.lua).not.toMatch(/@include/);
    }
  });
});

describe('batches: one script call per kind per turn, each task decided alone', () => {
  async function evalCalls(): Promise<number> {
    const info = await redis.info('commandstats');
    let total = 0;
    for (const m of info.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)) total += Number(m[1]);
    return total;
  }

  it('claims of one turn: granted, held, done, failed, corrupt and wrong type in one call', async () => {
    const a = await session('a');
    const b = await session('b');
    const [held, done, failed, corrupt, fresh] = [task(), task(), task(), task(), task()];
    const wrong = keys.task(`task-${++n}`, 'not-a-hash');
    await store.claim(held, claimArgs(b));
    await store.claim(done, claimArgs(b));
    await settle(done, b, 1);
    await store.claim(failed, claimArgs(b));
    await settle(failed, b, 1, 'F', 60_000);
    await redis.set(corrupt.container, 'not a record');
    await redis.set(wrong.container, 'a string where a hash belongs');
    const before = await evalCalls();
    const replies = await Promise.allSettled(
      [fresh, held, done, failed, corrupt, wrong].map((loc) => store.claim(loc, claimArgs(a))),
    );
    // the batch is one EVALSHA, plus the INFO call of this test
    expect((await evalCalls()) - before).toBe(1);
    expect(replies.map((r) => (r.status === 'fulfilled' ? r.value.type : r.reason.code))).toEqual([
      'granted',
      'held',
      'done',
      'failed',
      'ERR_CORRUPT_RECORD',
      'ERR_WRONG_TYPE',
    ]);
    const h = replies[1];
    if (h?.status === 'fulfilled' && h.value.type === 'held') {
      expect(h.value).toMatchObject({ owner: b, ownerSeq: 2 }); // b settled twice
    }
  });

  it("a task held by a session the claimer did not declare: asked again with that owner's keys (every key a script touches is declared)", async () => {
    const a = await session('a');
    const b = await session('b');
    const held = task();
    await store.claim(held, claimArgs(b));
    // a store that has never met b: its first claim declares only its own session
    const fresh = new RedisStore(redis, keys, 5_000);
    // called directly: the claimer declares itself only; b's task is left undecided
    const recordBefore = await redis.get(held.container);
    const undeclared = await callScript(redis, 'claim', [
      ...[8, keys.session(a), `${keys.channel}:watching`, keys.history, keys.session(a)],
      ...[keys.seq(a), keys.bind(a), held.container, held.index, a, 0, 10_000, 60_000, 60_000],
      ...[3, '0'],
      ...['', '', 1, '1', keys.livePrefix, a, held.field, held.ref, ''],
    ]);
    expect(undeclared).toEqual([[ReplyCode.OwnerUndeclared, b]]);
    expect(await redis.get(held.container)).toBe(recordBefore); // nothing written
    const before = await evalCalls();
    expect(await fresh.claim(held, claimArgs(a))).toMatchObject({ type: 'held', owner: b });
    expect((await evalCalls()) - before).toBe(2); // the second round declares b
    // b is met now: one call, and a peek reads b's lease
    const again = await evalCalls();
    expect(await fresh.claim(held, claimArgs(a))).toMatchObject({ type: 'held', owner: b });
    expect((await evalCalls()) - again).toBe(1);
    expect(await fresh.peek([held])).toEqual([{ state: 'R', token: 1, orphaned: false }]);
  });

  it('settles of one turn: one call, one event array with the change sequence, a stale one refused alone', async () => {
    const a = await session('a');
    const locs = [task(), task(true), task()];
    for (const loc of locs) await store.claim(loc, claimArgs(a));
    const before = await evalCalls();
    const replies = await Promise.all([
      // the same caller arguments (retention, backoff, max attempts): one batch
      settle(locs[0]!, a, 1, 'D', 0, 1),
      settle(locs[1]!, a, 1, 'F', 0, 1),
      settle(locs[2]!, a, 7, 'D', 0, 1), // not its token
    ]);
    expect((await evalCalls()) - before).toBe(1);
    expect(replies).toMatchObject([
      { ok: true, final: false },
      { ok: true, final: true },
      { ok: false, reason: 'not-owner' },
    ]);
    await sleep(30);
    const settled = events.filter((e) => e.e === 'settled' && e.o === a);
    expect(settled).toHaveLength(2);
    expect(settled.map((e) => e.q)).toEqual([1, 1]);
    expect(await store.cover(a)).toMatchObject({ seq: 1 });
    expect((await store.cover(a)).pttl).toBeGreaterThan(9_000);
  });

  it('cover with no holder answers an empty list (verify probes EVAL with it, 0 keys)', async () => {
    expect(await callScript(redis, 'cover', [0, keys.livePrefix, '', ''])).toEqual([]);
    expect(await callScript(redis, 'cover', [0, keys.livePrefix, 30, ''])).toEqual([]);
  });

  it('cover: one call for every holder, 0 for a session that is gone', async () => {
    const a = await session('a');
    const gone = 'gone:0#1';
    const before = await evalCalls();
    const [x, y] = await Promise.all([store.cover(a), store.cover(gone)]);
    expect((await evalCalls()) - before).toBe(1);
    // -2: a session not bound to a connection
    expect(x).toMatchObject({ seq: 0, lostInMs: -2 });
    expect(x.pttl).toBeGreaterThan(0);
    expect(y).toEqual({ pttl: 0, seq: 0, lostInMs: -1 });
  });

  it('releases and progress reports of one turn share a call each', async () => {
    const a = await session('a');
    const locs = [task(), task(true)];
    for (const loc of locs) await store.claim(loc, claimArgs(a));
    let before = await evalCalls();
    const progressed = await Promise.all(
      locs.map((loc) => store.progress(loc, { session: a, token: 1, progress: 1, note: '' })),
    );
    expect((await evalCalls()) - before).toBe(1);
    expect(progressed).toMatchObject([{ ok: true }, { ok: true }]);
    before = await evalCalls();
    const released = await Promise.all(
      locs.map((loc) => store.release(loc, { session: a, token: 1, retentionMs: 60_000 })),
    );
    expect((await evalCalls()) - before).toBe(1);
    expect(released).toMatchObject([{ ok: true }, { ok: true }]);
    expect(await store.cover(a)).toMatchObject({ seq: 1 });
  });
});

describe('bind and connection evidence (connection-bound sessions)', () => {
  const live = (id: string) => `${keys.livePrefix}${id}`;
  /** A session bound to a connection of its own, subscribed to its liveness channel. */
  async function bound(name: string, graceMs = 60) {
    const id = await session(name);
    const conn = new Redis(server.url);
    await conn.subscribe(live(id));
    expect(await store.bind('bind', id, 1, graceMs)).toMatchObject({ ok: true });
    return { id, conn };
  }

  it('bind: 1 bound on this run, -14 no session, -18 no subscriber, -19 newer binding; unbind', async () => {
    expect(await store.bind('bind', 'ghost:0#1', 1, 150)).toEqual({
      ok: false,
      reason: 'session-expired',
    });
    const id = await session('a');
    expect(await store.bind('bind', id, 1, 150)).toEqual({ ok: false, reason: 'not-subscribed' });
    const conn = new Redis(server.url);
    await conn.subscribe(live(id));
    const runId = /run_id:(\w+)/.exec(await redis.info('server'))?.[1];
    expect(await store.bind('bind', id, 1, 150)).toEqual({ ok: true, runId });
    expect(await redis.get(keys.bind(id))).toBe(`${runId}|1|150|0|0`);
    // the binding lives as long as the session
    expect(await redis.pttl(keys.bind(id))).toBeGreaterThan(9_000);
    // a reconnect is a new binding: the same epoch again is refused, as is an older one
    expect(await store.bind('bind', id, 1, 150)).toEqual({ ok: false, reason: 'newer-binding' });
    expect(await store.bind('bind', id, 2, 150)).toMatchObject({ ok: true });
    expect(await store.bind('unbind', id, 1, 0)).toEqual({ ok: false, reason: 'newer-binding' });
    expect(await store.bind('unbind', id, 2, 0)).toEqual({ ok: true, runId: '' });
    expect(await redis.exists(keys.bind(id))).toBe(0);
    // renew keeps it alive with the session; close removes both
    expect(await store.bind('bind', id, 3, 150)).toMatchObject({ ok: true });
    await redis.pexpire(keys.bind(id), 1_000);
    await store.session('renew', id, 10_000);
    expect(await redis.pttl(keys.bind(id))).toBeGreaterThan(9_000);
    await store.session('close', id, 0);
    expect(await redis.exists(keys.bind(id))).toBe(0);
    conn.disconnect();
  });

  it('cover records the first sighting of the connection gone; claim takes over after the grace (kind 5) and revokes the session', async () => {
    const a = await bound('a');
    const b = await session('b');
    const [t1, t2] = [task(), task(true)];
    await store.claim(t1, claimArgs(a.id));
    await store.claim(t2, claimArgs(a.id));
    expect(await store.cover(a.id)).toMatchObject({ lostInMs: -1 });
    a.conn.disconnect();
    await sleep(20);
    const seen = await store.cover(a.id);
    expect(seen.pttl).toBeGreaterThan(9_000);
    expect(seen.lostInMs).toBeGreaterThan(0);
    expect(seen.lostInMs).toBeLessThanOrEqual(60);
    // before the grace: held, and the held reply says when to look again
    const held = await store.claim(t1, claimArgs(b));
    expect(held).toMatchObject({ type: 'held', owner: a.id });
    expect(held.type === 'held' && held.ownerPttl <= 60).toBe(true);
    await sleep(70);
    expect(await store.cover(a.id)).toMatchObject({ lostInMs: 0 });
    expect(await store.claim(t1, claimArgs(b))).toMatchObject({
      type: 'granted',
      token: 2,
      kind: 'connection-lost',
      from: a.id,
    });
    await sleep(20);
    expect(events).toContainEqual(expect.objectContaining({ e: 'claimed', kind: 5, from: a.id }));
    // revoked: the session is gone, its other task goes the same way, its writes are refused
    expect(await redis.exists(keys.session(a.id))).toBe(0);
    expect(await store.claim(t2, claimArgs(b))).toMatchObject({
      type: 'granted',
      kind: 'connection-lost',
    });
    expect(await settle(t2, a.id, 1)).toMatchObject({ ok: false, reason: 'token-superseded' });
    expect(await store.bind('bind', a.id, 9, 60)).toEqual({ ok: false, reason: 'session-expired' });
  });

  it('no takeover on connection evidence: subscribed again, re-bound, or bound on another server run', async () => {
    const b = await session('b');
    // subscribed again (a reconnect not yet re-bound): the sighting is cleared
    const a = await bound('a');
    const t = task();
    await store.claim(t, claimArgs(a.id));
    a.conn.disconnect();
    await sleep(10);
    expect((await store.cover(a.id)).lostInMs).toBeGreaterThan(0);
    const again = new Redis(server.url);
    await again.subscribe(live(a.id));
    await sleep(70);
    expect(await store.claim(t, claimArgs(b))).toMatchObject({ type: 'held' });
    expect(await store.cover(a.id)).toMatchObject({ lostInMs: -1 });
    expect((await redis.get(keys.bind(a.id)))?.endsWith('|0')).toBe(true);
    // re-bound with a new epoch: a sighting of the old binding no longer counts
    again.disconnect();
    await sleep(10);
    expect((await store.cover(a.id)).lostInMs).toBeGreaterThan(0);
    const third = new Redis(server.url);
    await third.subscribe(live(a.id));
    expect(await store.bind('bind', a.id, 2, 60)).toMatchObject({ ok: true });
    third.disconnect();
    await sleep(70);
    // gone again, but first seen by the next check: the grace starts then
    expect(await store.claim(t, claimArgs(b))).toMatchObject({ type: 'held' });
    // a binding made on another server run (a restart, a failover) gives no evidence
    const c = await session('c');
    const tc = task();
    await store.claim(tc, claimArgs(c));
    await redis.set(keys.bind(c), `${'f'.repeat(40)}|1|60|0`, 'PX', 10_000);
    expect(await store.cover(c)).toMatchObject({ lostInMs: -1 });
    expect(await redis.get(keys.bind(c))).toBe(`${'f'.repeat(40)}|1|60|0`);
    await redis.set(keys.bind(c), `${'f'.repeat(40)}|1|60|1`, 'PX', 10_000);
    expect(await store.claim(tc, claimArgs(b))).toMatchObject({ type: 'held' });
  });

  it('a step of the server clock shortens the wait by at most 100 ms: the lost age counts each step between sightings up to 100 ms', async () => {
    const b = await session('b');
    const runId = /run_id:(\w+)/.exec(await redis.info('server'))?.[1];
    const serverNow = async () => {
      const [s, us] = await redis.time();
      return Number(s) * 1_000 + Math.floor(Number(us) / 1_000);
    };
    // sighted gone 10 s ago as the clock reads now (the clock stepped forward 10 s since the
    // sighting), in the older four-field form and in the current one: neither is 10 s of
    // evidence. A grace of 150 ms is not reached by one step.
    for (const form of ['legacy', 'current']) {
      const a = await bound('a', 150);
      const t = task();
      await store.claim(t, claimArgs(a.id));
      a.conn.disconnect();
      await sleep(10);
      const then = (await serverNow()) - 10_000;
      const rec = form === 'legacy' ? `${runId}|1|150|${then}` : `${runId}|1|150|0|${then}`;
      await redis.set(keys.bind(a.id), rec, 'PX', 10_000);
      const held = await store.claim(t, claimArgs(b));
      expect(held).toMatchObject({ type: 'held', owner: a.id });
      // 100 ms counted for the step, 50 ms left
      expect(held.type === 'held' && held.ownerPttl).toBeGreaterThan(0);
      expect(held.type === 'held' && held.ownerPttl).toBeLessThanOrEqual(50);
      // the next sighting counts that step (100 ms) and moves the sighting to now
      const seen = await store.cover(a.id);
      expect(seen.lostInMs).toBeGreaterThan(0);
      expect(seen.lostInMs).toBeLessThanOrEqual(50);
      expect(await redis.get(keys.bind(a.id))).toMatch(
        new RegExp(`^${runId}\\|1\\|150\\|100\\|\\d+$`),
      );
      // real time of the grace passes: taken over
      await sleep(60);
      expect(await store.cover(a.id)).toMatchObject({ lostInMs: 0 });
      expect(await store.claim(t, claimArgs(b))).toMatchObject({
        type: 'granted',
        kind: 'connection-lost',
      });
    }
  });
});
