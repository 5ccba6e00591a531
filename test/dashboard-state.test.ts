/**
 * The dashboard's model of a namespace, without Redis: events applied by fencing token,
 * a census merged with the events seen while it ran, counts beyond --max-tasks, sessions
 * that end, and the rates and latencies.
 */
import { describe, expect, it } from 'vitest';
import { Series } from '../src/cli/dashboard/series.js';
import { GONE_KEEP_MS } from '../src/cli/dashboard/sessions.js';
import {
  type CensusResult,
  DashboardState,
  type RunningEntry,
} from '../src/cli/dashboard/state.js';
import type { NamespaceEvent } from '../src/events.js';

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
