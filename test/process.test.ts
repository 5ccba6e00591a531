/**
 * Workers in separate processes: crash (SIGKILL), pause (SIGSTOP/SIGCONT) and clock
 * skew. Takeover times are printed for the record; speed is measured by bench/, not
 * asserted here.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisServer } from '../src/testing/index.js';
import { type Child, spawnWorker as spawn } from './support/child-worker.js';

let server: RedisServer;
const children: Child[] = [];
let nsCounter = 0;

async function spawnWorker(
  ns: string,
  name: string,
  env: Record<string, string> = {},
): Promise<Child> {
  const child = await spawn(server.url, ns, name, env);
  children.push(child);
  return child;
}

beforeAll(async () => {
  server = await RedisServer.start();
});
afterEach(() => {
  for (const c of children.splice(0)) c.reap();
});
afterAll(async () => {
  await server?.stop();
});

describe('two worker processes', () => {
  it('SIGKILL of the holder mid-task: the standby runs the task (token + 1)', async () => {
    const ns = `proc-${++nsCounter}`;
    // the session TTL decides (connection-bound sessions: connection-bound.test.ts)
    const a = await spawnWorker(ns, 'a', { PAIRLOCK_CONNECTION_BOUND: '0' });
    const b = await spawnWorker(ns, 'b', { PAIRLOCK_CONNECTION_BOUND: '0' });
    a.run('job', 60_000);
    await a.waitFor((m) => m.ev === 'started', 'a started');
    b.run('job', 10);
    await b.waitFor((m) => m.ev === 'standby', 'b standby');
    const killedAt = performance.now();
    a.proc.kill('SIGKILL');
    const took = await b.waitFor((m) => m.ev === 'took-over', 'b took over');
    const outcome = (await b.waitFor((m) => m.ev === 'outcome', 'b outcome')).outcome as Record<
      string,
      unknown
    >;
    expect(took).toMatchObject({ taskId: 'job', token: 2, kind: 'session-expired', from: a.id });
    expect(outcome).toMatchObject({ state: 'done', role: 'took-over', token: 2, worker: b.id });
    const ms = (took.receivedAt as number) - killedAt;
    expect(ms).toBeGreaterThan(0);
    console.log(`takeover after SIGKILL: ${ms.toFixed(0)} ms (session TTL 1000 ms)`);
  });

  it('SIGSTOP of the holder past its session TTL: the standby takes over; after SIGCONT the old holder is aborted and its settle rejected', async () => {
    const ns = `proc-${++nsCounter}`;
    const a = await spawnWorker(ns, 'a');
    const b = await spawnWorker(ns, 'b');
    // a keeps running after its signal fires, so that it really tries to settle late
    a.run('job', 1_500, true);
    await a.waitFor((m) => m.ev === 'started', 'a started');
    b.run('job', 1_500);
    await b.waitFor((m) => m.ev === 'standby', 'b standby');
    a.proc.kill('SIGSTOP');
    await b.waitFor((m) => m.ev === 'started', 'b started after a paused');
    a.proc.kill('SIGCONT');
    const aborted = await a.waitFor((m) => m.ev === 'aborted', 'a aborted');
    // its connection proof stalled while stopped (connection), or its session lapsed
    expect(['connection', 'session', 'rejected']).toContain(aborted.reason);
    const rejected = await a.waitFor(
      (m) => m.ev === 'lease-lost' && m.reason === 'rejected',
      'a settle rejected',
    );
    expect(rejected).toMatchObject({ taskId: 'job', token: 1 });
    expect(['token-superseded', 'session-expired']).toContain(rejected.rejected);
    const oa = (await a.waitFor((m) => m.ev === 'outcome', 'a outcome')).outcome;
    const ob = (await b.waitFor((m) => m.ev === 'outcome', 'b outcome')).outcome;
    expect(ob).toMatchObject({
      state: 'done',
      role: 'took-over',
      token: 2,
      result: { by: b.id, token: 2 },
    });
    // the old holder learns the real outcome, not its own stale one
    expect(oa).toMatchObject({
      state: 'done',
      role: 'watched',
      token: 2,
      result: { by: b.id, token: 2 },
    });
    expect(a.messages.some((m) => m.ev === 'settled')).toBe(false);
  });

  it('workers whose wall clocks are an hour off (either way) behave as if in sync', async () => {
    const ns = `proc-${++nsCounter}`;
    const ahead = await spawnWorker(ns, 'ahead', { PAIRLOCK_CLOCK_SKEW_MS: String(3_600_000) });
    const behind = await spawnWorker(ns, 'behind', { PAIRLOCK_CLOCK_SKEW_MS: String(-3_600_000) });

    // 1. the holder (clock +1 h) works for 2.5 session TTLs; the standby (clock -1 h) must wait
    ahead.run('long', 2_500);
    await ahead.waitFor((m) => m.ev === 'started', 'ahead started');
    behind.run('long', 10);
    const ob = (await behind.waitFor((m) => m.ev === 'outcome', 'behind outcome')).outcome;
    expect(ob).toMatchObject({
      state: 'done',
      role: 'watched',
      token: 1,
      result: { by: ahead.id },
    });
    expect(behind.messages.some((m) => m.ev === 'started')).toBe(false);

    // 2. the holder (clock -1 h) crashes; the standby (clock +1 h) takes over after the TTL, not before
    behind.run('crash', 60_000);
    await behind.waitFor((m) => m.ev === 'started', 'behind started');
    ahead.run('crash', 10);
    await ahead.waitFor((m) => m.ev === 'standby', 'ahead standby');
    await new Promise((r) => setTimeout(r, 1_500));
    expect(ahead.messages.some((m) => m.ev === 'took-over')).toBe(false);
    behind.proc.kill('SIGKILL');
    const took = await ahead.waitFor((m) => m.ev === 'took-over', 'ahead took over');
    expect(took).toMatchObject({ taskId: 'crash', token: 2 });
  });

  it('close({ handover: true }) in a child hands its task to the peer process at once', async () => {
    const ns = `proc-${++nsCounter}`;
    const a = await spawnWorker(ns, 'a', { PAIRLOCK_SESSION_TTL_MS: '30000' });
    const b = await spawnWorker(ns, 'b', { PAIRLOCK_SESSION_TTL_MS: '30000' });
    a.run('job', 60_000);
    await a.waitFor((m) => m.ev === 'started', 'a started');
    b.run('job', 10);
    await b.waitFor((m) => m.ev === 'standby', 'b standby');
    const t0 = performance.now();
    a.proc.send({ cmd: 'close', handover: true });
    const took = await b.waitFor((m) => m.ev === 'took-over', 'b took over');
    expect(took).toMatchObject({ kind: 'handover', token: 2 });
    const ms = (took.receivedAt as number) - t0;
    // far below the 30 s session TTL: the peer did not wait for an expiry
    expect(ms).toBeLessThan(10_000);
    console.log(`handover: ${ms.toFixed(1)} ms`);
  });
});
