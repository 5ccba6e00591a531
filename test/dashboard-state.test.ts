/**
 * The dashboard's model of a namespace, without Redis: events applied by fencing token,
 * a census merged with the events seen while it ran, counts beyond --max-tasks, sessions
 * that end, and the rates and latencies.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { redisProblem } from '../src/cli/dashboard/health.js';
import { Series } from '../src/cli/dashboard/series.js';
import { GONE_KEEP_MS } from '../src/cli/dashboard/sessions.js';
import {
  type CensusResult,
  DashboardState,
  entryOf,
  type RunningEntry,
  TIMELINE_SIZE,
} from '../src/cli/dashboard/state.js';
import type { NamespaceEvent } from '../src/shared/events.js';
import type { TaskInfo } from '../src/worker/worker.js';

const grant = (task: string, token: number, session: string, kind = 0, from?: string) =>
  ({
    e: 'claimed',
    r: `t:${task}`,
    s: 'R',
    k: token,
    a: token,
    o: session,
    kind,
    from,
  }) as NamespaceEvent;
const settle = (task: string, token: number, session: string, s = 'D') =>
  ({ e: 'settled', r: `t:${task}`, s, k: token, a: token, o: session }) as NamespaceEvent;
const entry = (task: string, token: number, session: string): RunningEntry => ({
  ref: `t:${task}`,
  task,
  token,
  attempt: token,
  session,
  worker: session.split('#')[0] as string,
});

function census(entries: RunningEntry[], extra: Partial<CensusResult> = {}): CensusResult {
  const holders = new Map<string, number>();
  for (const e of entries) holders.set(e.session, (holders.get(e.session) ?? 0) + 1);
  return {
    startedAt: 0,
    durationMs: 1,
    counts: { total: entries.length, running: entries.length, done: 0, failed: 0, released: 0 },
    holders,
    entries,
    capped: false,
    ...extra,
  };
}

const groups = (s: DashboardState) =>
  Object.fromEntries(
    s.running(100, new Map()).groups.map((g) => [g.session, g.items.map((i) => i.task)]),
  );

describe('dashboard state', () => {
  it('moves running records with grants and settles, and ignores an event older than what it knows', () => {
    const s = new DashboardState(100);
    s.beginCensus();
    s.finishCensus(census([entry('x', 1, 'a#1')]));
    s.onEvent(grant('y', 1, 'a#1'), 1_000);
    expect(groups(s)).toEqual({ 'a#1': ['x', 'y'] });
    // b takes x over from a (its session expired)
    s.onEvent(grant('x', 2, 'b#1', 1, 'a#1'), 1_100);
    expect(groups(s)).toEqual({ 'a#1': ['y'], 'b#1': ['x'] });
    // a's late event about x (token 1) changes nothing
    s.onEvent(settle('x', 1, 'a#1'), 1_200);
    expect(groups(s)).toEqual({ 'a#1': ['y'], 'b#1': ['x'] });
    s.onEvent(settle('x', 2, 'b#1'), 1_300);
    s.onEvent(settle('y', 1, 'a#1', 'F'), 1_400);
    expect(groups(s)).toEqual({});
    expect(s.countsNow()).toMatchObject({ running: 0, done: 1, failed: 1, total: 2 });
    expect(s.events(0).map((e) => e.event)).toEqual([
      'claimed',
      'took-over',
      'done',
      'done',
      'failed',
    ]);
  });

  it("a worker taking its own task back ('reclaimed') is shown as such, counted from released or from its running record", () => {
    const s = new DashboardState(100);
    s.beginCensus();
    s.finishCensus(census([entry('x', 1, 'a#1'), entry('y', 1, 'a#1')]));
    // x: released unused by a#1 after a lost lease, then taken back by its worker
    s.onEvent({ e: 'released', r: 't:x', s: 'X', k: 1, a: 0, o: 'a#1' } as NamespaceEvent, 1_000);
    expect(s.countsNow()).toMatchObject({ running: 1, released: 1 });
    s.onEvent(grant('x', 2, 'a#1', 6, 'a#1'), 1_010);
    expect(s.countsNow()).toMatchObject({ running: 2, released: 0, total: 2 });
    // y: held by a#1, whose session expired; its worker's next session takes it back
    s.onEvent(grant('y', 2, 'a#2', 6, 'a#1'), 1_020);
    expect(groups(s)).toEqual({ 'a#1': ['x'], 'a#2': ['y'] });
    expect(s.countsNow()).toMatchObject({ running: 2, released: 0, total: 2 });
    expect(s.events(0).map((e) => e.event)).toEqual(['released', 'reclaimed', 'reclaimed']);
  });

  it('applies the events seen while a census ran to its result, whichever came first', () => {
    const s = new DashboardState(100);
    s.beginCensus();
    // p was read as running, then settled; q was claimed after the census passed its key;
    // r was claimed before the census read it (the census has it too)
    s.onEvent(settle('p', 1, 'a#1'), 1);
    s.onEvent(grant('q', 1, 'a#1'), 2);
    s.onEvent(grant('r', 1, 'b#1'), 3);
    s.finishCensus(census([entry('p', 1, 'a#1'), entry('r', 1, 'b#1')]));
    expect(groups(s)).toEqual({ 'a#1': ['q'], 'b#1': ['r'] });
    // p's settle moved the census's counts; q's claim added a record the census did not see
    expect(s.countsNow()).toMatchObject({ running: 2, done: 1, total: 3 });
  });

  it('beyond --max-tasks: exact counts per holder from the census, moved by events; details of the first ones', () => {
    const s = new DashboardState(2);
    const entries = [entry('t1', 1, 'a#1'), entry('t2', 1, 'a#1')];
    const holders = new Map([
      ['a#1', 4],
      ['b#1', 1],
    ]);
    s.beginCensus();
    s.finishCensus(
      census(entries, {
        holders,
        capped: true,
        counts: { total: 5, running: 5, done: 0, failed: 0, released: 0 },
      }),
    );
    expect(s.isCapped).toBe(true);
    const before = s.running(10, new Map());
    expect(before.groups.map((g) => [g.session, g.count, g.held])).toEqual([
      ['a#1', 4, 2],
      ['b#1', 1, 0],
    ]);
    // b takes over t9, a record held by a that the detail does not hold
    s.onEvent(grant('t9', 2, 'b#1', 1, 'a#1'), 10);
    const after = s.running(10, new Map());
    expect(after.groups.map((g) => [g.session, g.count])).toEqual([
      ['a#1', 3],
      ['b#1', 2],
    ]);
    expect(s.countsNow().running).toBe(5);
    const paged = s.running(1, new Map([['a#1', 1]])).groups[0];
    expect(paged?.items.map((i) => i.task)).toEqual(['t2']);
  });

  it('marks a session that ends as expired or closed, and forgets it after a while', () => {
    let now = 0;
    const s = new DashboardState(100, () => now);
    s.sessions.discover(
      [
        { session: 'a#1', worker: 'a', ttlMs: 1_000 },
        { session: 'b#1', worker: 'b', ttlMs: 1_000 },
      ],
      0,
    );
    s.sessions.readings(
      [
        ['a#1', 900],
        ['b#1', 950],
      ],
      500,
    );
    // a renewed (its TTL went up): its last heartbeat is placed from the TTL
    s.sessions.readings([['a#1', 800]], 700);
    expect(s.sessions.get('a#1')?.renewedAt).toBe(700 - 200);
    s.sessions.readings([['b#1', 900]], 1_400);
    // a's key is gone with nothing left of its TTL; b's with most of it
    s.sessions.readings(
      [
        ['a#1', -2],
        ['b#1', -2],
      ],
      1_450,
    );
    expect(s.sessions.get('a#1')?.gone?.reason).toBe('expired');
    expect(s.sessions.get('b#1')?.gone?.reason).toBe('closed');
    expect(s.events(0).map((e) => [e.event, e.worker, e.reason])).toEqual([
      ['session-gone', 'a', 'expired'],
      ['session-gone', 'b', 'closed'],
    ]);
    s.sessions.discover([{ session: 'c#1', worker: 'c', ttlMs: 1_000 }], 2_000);
    expect(s.events(0).at(-1)).toMatchObject({ event: 'session-new', worker: 'c' });
    now = 1_450 + GONE_KEEP_MS + 1;
    s.sessions.readings([], now);
    expect(s.sessions.rows().map((r) => r.session)).toEqual(['c#1']);
  });

  it('marks a session a connection-lost takeover ended as revoked, whether its event comes before or after the key is seen gone', () => {
    const s = new DashboardState(100, () => 0);
    s.sessions.discover(
      [
        { session: 'a#1', worker: 'a', ttlMs: 10_000 },
        { session: 'c#1', worker: 'c', ttlMs: 10_000 },
      ],
      0,
    );
    s.onEvent(grant('x', 1, 'a#1'), 10);
    s.onEvent(grant('y', 1, 'c#1'), 10);
    // the takeover's event first, then the reading that finds a's key gone (time left)
    s.onEvent(grant('x', 2, 'b#1', 5, 'a#1'), 200);
    s.sessions.readings([['a#1', -2]], 300);
    expect(s.sessions.get('a#1')?.gone?.reason).toBe('revoked');
    // the reading first (c's key gone with time left: 'closed' so far), then the event
    s.sessions.readings([['c#1', -2]], 400);
    expect(s.sessions.get('c#1')?.gone?.reason).toBe('closed');
    s.onEvent(grant('y', 2, 'b#1', 5, 'c#1'), 450);
    expect(s.sessions.get('c#1')?.gone?.reason).toBe('revoked');
  });

  it('rates per second and claim-to-outcome latency', () => {
    const base = 1_000_000;
    let now = base;
    const series = new Series(() => now);
    series.grant('t:a', 1, base);
    series.grant('t:b', 1, base + 10);
    series.grant('t:c', 2, base + 20, 'session-expired');
    series.outcome('t:a', 1, 'done', base + 110);
    series.outcome('t:b', 1, 'failed', base + 1_010);
    series.outcome('t:c', 1, 'done', base + 1_020); // token 1: not the grant seen (token 2)
    series.outcome('t:c', 2, 'released', base + 1_030);
    now = base + 2_000;
    const snap = series.snapshot();
    const last = snap.done.length - 1;
    expect(snap.done[last - 2]).toBe(1);
    expect(snap.done[last - 1]).toBe(1);
    expect(snap.failed[last - 1]).toBe(1);
    expect(snap.released[last - 1]).toBe(1);
    expect(snap.claims[last - 2]).toBe(2);
    expect(snap.takeovers[last - 2]).toBe(1);
    expect(snap.takeoverKinds).toEqual({ 'session-expired': 1 });
    expect(snap.latency).toMatchObject({ p50: 110, p99: 1_000, samples: 2 });
  });
});

describe('dashboard state: operators, round two', () => {
  it('never dates a grant after the moment it was read (no negative "running for")', () => {
    // the server clock offset is an estimate: a grant read a moment after it was made may
    // convert to a local time past the reading
    const info = {
      taskId: 'x',
      state: 'running',
      token: 1,
      attempt: 1,
      worker: 'a',
      session: 'a#1',
      claimedAt: 10_005,
      updatedAt: 10_005,
      deadlineInMs: 1_000,
      leaseRemainingMs: 1_000,
      ownerAlive: true,
      progress: undefined,
      keepMs: -1,
    } as TaskInfo;
    const e = entryOf(info, 't:x', undefined, 10_000, 0);
    expect(e.claimedAt).toBeLessThanOrEqual(10_000);
  });

  it('gives the holds of each worker and the task counts of its group from one snapshot', () => {
    const s = new DashboardState(100, () => 0);
    s.sessions.discover([{ session: 'a#1', worker: 'a', ttlMs: 10_000 }], 0);
    s.beginCensus();
    s.finishCensus(census([entry('x', 1, 'a#1'), entry('y', 1, 'a#1')]));
    s.onEvent(grant('z', 1, 'a#1'), 10);
    const r = s.running(10, new Map());
    expect(r.version).toBe(s.version);
    expect(r.holds).toEqual({ 'a#1': 3 });
    expect(r.groups[0]?.count).toBe(r.holds['a#1']);
    expect(s.workers()[0]?.holds).toBe(3);
  });

  it('keeps TIMELINE_SIZE events, and the docs and the page say the same number', () => {
    const s = new DashboardState(100, () => 0);
    for (let i = 0; i < TIMELINE_SIZE + 150; i++) s.onEvent(grant(`t${i}`, 1, 'a#1'), i);
    expect(s.events(0)).toHaveLength(TIMELINE_SIZE);
    const docs = readFileSync(new URL('../docs/cli.md', import.meta.url), 'utf8');
    const section = docs.slice(docs.indexOf('## `dashboard'), docs.indexOf('## `verify'));
    const n = TIMELINE_SIZE.toLocaleString('en');
    expect(section).toContain(`the last ${n} events`);
    // no other size of the timeline in the docs
    for (const m of section.matchAll(/([\d,]+) timeline entries|keeps the last ([\d,]+)/g))
      expect(m[1] ?? m[2]).toBe(n);
    // the page takes the number from the server, and has none of its own
    const app = readFileSync(new URL('../web/dashboard/app.js', import.meta.url), 'utf8');
    const timeline = readFileSync(new URL('../web/dashboard/timeline.js', import.meta.url), 'utf8');
    expect(app).toContain('timelineSize');
    expect(app).not.toMatch(/TIMELINE_KEEP\s*=\s*\d/);
    expect(timeline).not.toMatch(/items\.length < \d+/);
  });

  it('says Redis is unreachable in plain words, not with the client library internals', () => {
    const internals = [
      "Stream isn't writeable and enableOfflineQueue options is false",
      'Connection is closed.',
      'connect ECONNREFUSED 127.0.0.1:6390',
      'Reached the max retries per request limit (which is 0). Refer to "maxRetriesPerRequest" option for details.',
    ];
    for (const m of internals) {
      const said = redisProblem(new Error(m));
      expect(said).not.toMatch(/Stream|enableOfflineQueue|maxRetriesPerRequest/);
      expect(said).toMatch(/^no connection to Redis/);
    }
    expect(redisProblem(new Error('connect ECONNREFUSED 127.0.0.1:6390'))).toContain(
      'connection refused',
    );
    // anything else is shown as it is
    expect(redisProblem(new Error('NOPERM this user has no permissions'))).toBe(
      'NOPERM this user has no permissions',
    );
    const s = new DashboardState(100, () => 0);
    s.beginCensus();
    s.failCensus(new Error("Stream isn't writeable and enableOfflineQueue options is false"));
    expect(s.census.error).toMatch(/^no connection to Redis/);
  });

  it('shows a paused worker from its session description', () => {
    const s = new DashboardState(100, () => 0);
    s.sessions.discover(
      [
        { session: 'a#1', worker: 'a', ttlMs: 1_000, paused: true },
        { session: 'b#1', worker: 'b', ttlMs: 1_000 },
      ],
      0,
    );
    expect(s.workers().map((w) => [w.worker, w.paused ?? false])).toEqual([
      ['a', true],
      ['b', false],
    ]);
    // the TTL readings carry the description: a resume shows at the next one
    s.sessions.readings(
      [
        ['a#1', 900, { paused: false }],
        ['b#1', 900, { paused: true }],
      ],
      100,
    );
    expect(s.workers().map((w) => [w.worker, w.paused ?? false])).toEqual([
      ['a', false],
      ['b', true],
    ]);
  });

  it('lists the recent takeovers, by worker and by task id prefix, newest first', () => {
    const s = new DashboardState(100, () => 0);
    s.onEvent(grant('mail-1', 1, 'a#1'), 1);
    s.onEvent(grant('mail-1', 2, 'b#1', 1, 'a#1'), 2);
    s.onEvent(grant('job-1', 1, 'b#1'), 3);
    s.onEvent(grant('job-1', 2, 'a#1', 5, 'b#1'), 4);
    s.onEvent(grant('mail-2', 3, 'c#1', 2, 'b#1'), 5);
    const all = s.takeovers({ limit: 10 });
    expect(all.items.map((t) => t.task)).toEqual(['mail-2', 'job-1', 'mail-1']);
    expect(all.items[0]).toMatchObject({ worker: 'c', from: 'b', kind: 'deadline-passed' });
    expect(s.takeovers({ limit: 10, prefix: 'mail-' }).items.map((t) => t.task)).toEqual([
      'mail-2',
      'mail-1',
    ]);
    // by worker: the one that took over, or the one it was taken from
    expect(s.takeovers({ limit: 10, worker: 'a' }).items.map((t) => t.task)).toEqual([
      'job-1',
      'mail-1',
    ]);
    expect(s.takeovers({ limit: 1 })).toMatchObject({ more: true });
  });
});
