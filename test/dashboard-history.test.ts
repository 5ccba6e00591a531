/**
 * The dashboard and the task history: a dashboard started after a pair ran its tasks shows
 * their transitions (a failure and a takeover among them) on its timeline, in its rates
 * and takeover lists, and a task's attempts in the lookup; a transition that also arrives
 * live is shown and counted once. The page in a browser: dashboard-browser.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { AttemptRow, PastEntry } from '../src/cli/dashboard/history.js';
import { Series } from '../src/cli/dashboard/series.js';
import type { summary } from '../src/cli/dashboard/server.js';
import { DashboardState, type TimelineItem } from '../src/cli/dashboard/state.js';
import type { NamespaceEvent } from '../src/shared/events.js';
import { startDashboard, until } from './support/dashboard.js';
import { useRedisPair } from './support/redis-pair.js';

const pair = useRedisPair();

type Summary = ReturnType<typeof summary> & {
  series: ReturnType<DashboardState['seriesNow']>;
};
type TaskAnswer = { found: boolean; history: AttemptRow[]; historyError?: string };

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  expect(res.status, url).toBe(200);
  return (await res.json()) as T;
}

const total = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** A handler that runs until `release()` is called. */
function gate() {
  let release!: () => void;
  let started!: () => void;
  const open = new Promise<void>((r) => {
    release = r;
  });
  const running = new Promise<void>((r) => {
    started = r;
  });
  return {
    release,
    running,
    handler: async () => {
      started();
      await open;
      return 'ok';
    },
  };
}

describe('pairlock dashboard: the task history', () => {
  it('a dashboard started after the pair ran shows the transitions, counts the takeover and the failure, and lists the attempts of a task', async () => {
    const ns = pair.namespace('dhist');
    const opts = { failure: { policy: 'give-up' as const } };
    const a = pair.worker(ns, 'alpha', opts);
    const b = pair.worker(ns, 'beta', opts);
    await Promise.all([a.start(), b.start()]);
    await a.run('mail-1', () => ({ sent: 1 }));
    await a.run('mail-2', () => {
      throw Object.assign(new Error('mailbox full'), { code: 'E_FULL' });
    });
    // held by alpha, which leaves with a handover: beta covers and takes it over
    const g = gate();
    const held = a.run('move-1', g.handler).catch(() => undefined);
    await g.running;
    const covering = new Promise((r) => b.once('standby', r));
    const moved = b.run('move-1', () => 'moved');
    await covering;
    await a.close({ handover: true });
    g.release();
    await held;
    expect(await moved).toMatchObject({ state: 'done', role: 'took-over' });

    // now the dashboard starts: nothing of the above came to it live
    const d = await startDashboard(pair.url, ns);
    try {
      const events = await getJson<TimelineItem[]>(`${d.url}api/events`);
      const rows = events
        .filter((e) => e.task !== undefined)
        .map((e) => `${e.task} ${e.event} ${e.token}`);
      expect(rows).toEqual([
        'mail-1 claimed 1',
        'mail-1 done 1',
        'mail-2 claimed 1',
        'mail-2 failed 1',
        'move-1 claimed 1',
        // alpha hands it over as it leaves, and beta takes it
        'move-1 released 1',
        'move-1 took-over 2',
        'move-1 done 2',
      ]);
      const byName = (task: string, event: string) =>
        events.find((e) => e.task === task && e.event === event);
      expect(byName('move-1', 'took-over')).toMatchObject({
        worker: b.id,
        from: a.id,
        kind: 'handover',
        history: true,
      });
      expect(byName('mail-2', 'failed')).toMatchObject({
        worker: a.id,
        error: 'E_FULL: mailbox full',
      });
      // in the dashboard's time: before it started, not after
      const s = await getJson<Summary>(`${d.url}api/summary`);
      for (const e of events.filter((x) => x.history))
        expect(e.at).toBeLessThanOrEqual(s.startedAt + 50);
      expect(s.historyFrom).not.toBeNull();
      expect(s.historyFrom as number).toBeLessThanOrEqual(s.startedAt);

      // the rates and the takeover list include them
      expect(total(s.series.takeovers)).toBe(1);
      expect(total(s.series.takeoversPerMinute)).toBe(1);
      expect(s.series.takeoverKinds).toEqual({ handover: 1 });
      expect(total(s.series.failed)).toBe(1);
      expect(total(s.series.done)).toBe(2);
      expect(total(s.series.released)).toBe(1);
      expect(total(s.series.claims)).toBe(3);
      const takeovers = await getJson<{ items: TimelineItem[] }>(
        `${d.url}api/tasks?state=takeovers`,
      );
      expect(takeovers.items).toMatchObject([
        { task: 'move-1', worker: b.id, from: a.id, kind: 'handover' },
      ]);

      // the attempts of a task
      const move = await getJson<TaskAnswer>(`${d.url}api/task?id=move-1`);
      expect(move.found).toBe(true);
      expect(move.history.map((t) => [t.kind, t.token, t.worker])).toEqual([
        ['fresh', 1, a.id],
        ['released', 1, a.id],
        ['handover', 2, b.id],
        ['done', 2, b.id],
      ]);
      expect(move.history[2]?.detail).toBe(a.session);
      expect(typeof move.history[1]?.durationMs).toBe('number');
      expect(typeof move.history[3]?.durationMs).toBe('number');
      const mail = await getJson<TaskAnswer>(`${d.url}api/task?id=mail-2`);
      expect(mail.history.map((t) => [t.kind, t.detail])).toEqual([
        ['fresh', undefined],
        ['failed', 'E_FULL: mailbox full'],
      ]);
      // a task the history does not know: no attempts, said so with found: false
      expect(await getJson<TaskAnswer>(`${d.url}api/task?id=nope`)).toMatchObject({
        found: false,
        history: [],
      });

      // what comes after the start comes live, once
      await b.run('later-1', () => 'ok');
      const after = await until(async () => {
        const all = await getJson<TimelineItem[]>(`${d.url}api/events`);
        return all.some((e) => e.task === 'later-1' && e.event === 'done') ? all : undefined;
      }, 'later-1 on the timeline');
      const keys = after
        .filter((e) => e.token !== undefined)
        .map((e) => `${e.task} ${e.event} ${e.token}`);
      expect(new Set(keys).size).toBe(keys.length);
      expect(after.find((e) => e.task === 'later-1')?.history).toBeUndefined();
      const s2 = await getJson<Summary>(`${d.url}api/summary`);
      expect(total(s2.series.done)).toBe(3);
      expect(total(s2.series.takeovers)).toBe(1);
    } finally {
      await d.stop();
    }
  });
});

describe('dashboard state: seeded from the history', () => {
  const past = (
    task: string,
    event: string,
    token: number,
    at: number,
    extra: Partial<PastEntry> = {},
  ): PastEntry => ({
    at,
    event,
    task,
    token,
    attempt: token,
    state: event === 'claimed' || event === 'took-over' ? 'running' : event,
    worker: 'a',
    session: 'a#1',
    ref: `t:${task}`,
    history: true,
    ...extra,
  });
  const live = (task: string, e: string, s: string, token: number, kind?: number) =>
    ({ e, r: `t:${task}`, s, k: token, a: token, o: 'b#1', kind }) as NamespaceEvent;

  it('puts the history before the live events, each transition once, and counts each once', () => {
    let now = 1_000_000;
    const s = new DashboardState(100, () => now);
    // arrived live before the history was read: its copy in the history is skipped
    s.onEvent(live('x', 'settled', 'D', 2), now);
    s.seedHistory(
      [
        past('x', 'claimed', 1, now - 9_000, { kind: 'fresh' }),
        past('x', 'took-over', 2, now - 5_000, { kind: 'session-expired', from: 'a' }),
        past('x', 'done', 2, now - 100),
        past('y', 'claimed', 1, now - 50, { kind: 'fresh' }),
      ],
      now - 9_000,
    );
    expect(s.historyFrom).toBe(now - 9_000);
    expect(s.events(0).map((e) => [e.seq, e.task, e.event, e.history ?? false])).toEqual([
      [1, 'x', 'claimed', true],
      [2, 'x', 'took-over', true],
      [3, 'y', 'claimed', true],
      [4, 'x', 'done', false],
    ]);
    // published just after the history was read: not shown, not counted again
    now += 1_000;
    s.onEvent(live('y', 'claimed', 'R', 1, 0), now);
    s.onEvent(live('y', 'settled', 'D', 1), now);
    expect(s.events(0).map((e) => `${e.task} ${e.event}`)).toEqual([
      'x claimed',
      'x took-over',
      'y claimed',
      'x done',
      'y done',
    ]);
    const se = s.seriesNow();
    expect(total(se.takeovers)).toBe(1);
    expect(se.takeoverKinds).toEqual({ 'session-expired': 1 });
    expect(total(se.claims)).toBe(2);
    expect(total(se.done)).toBe(2);
    // the takeover counted in its own second, 5 s before the dashboard started
    const i = se.takeovers.indexOf(1);
    expect(se.startMs + i * se.stepMs).toBe(Math.floor((now - 1_000 - 5_000) / 1000) * 1000);
    // y's latency: from its grant in the history to its live settle
    expect(se.latency.samples).toBe(1);
    expect(se.latency.p50).toBe(1_050);
  });

  it('the series counts a past transition in its own second, and none older than the kept minutes', () => {
    const now = 10_000_000;
    const se = new Series(() => now);
    se.outcome('t:a', 1, 'done', now - 500, false);
    se.outcome('t:b', 1, 'failed', now - 30_000, true);
    se.outcome('t:c', 1, 'failed', now - 20_000, true);
    se.outcome('t:d', 1, 'failed', now - 30_000, true);
    se.outcome('t:e', 1, 'failed', now - 400_000, true);
    const snap = se.snapshot();
    const at = (ms: number) => Math.floor(ms / 1000) - Math.floor(snap.startMs / 1000);
    expect(snap.failed[at(now - 30_000)]).toBe(2);
    expect(snap.failed[at(now - 20_000)]).toBe(1);
    expect(total(snap.failed)).toBe(3);
    expect(snap.done[at(now - 500)]).toBe(1);
  });
});
