/**
 * The holder's side of connection-bound sessions (src/worker/binding.ts), without Redis: a fake
 * link and a fake store, so each rule of the belief can be driven alone.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it, vi } from 'vitest';
import type { BindReply, LiveLink } from '../src/redis/replies.js';
import { RedisOutOfMemoryError, RedisUnavailableError } from '../src/shared/errors.js';
import { Binding, PROOF_INTERVAL_MS } from '../src/worker/binding.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const GRACE = 150;

class FakeLink extends EventEmitter implements LiveLink {
  ready = true;
  pings = 0;
  /** false: pings never answer (a stalled proof). */
  answering = true;
  followed: string[] = [];
  left: string[] = [];
  async follow(sessionId: string, previous: string): Promise<void> {
    if (this.delayMs) await sleep(this.delayMs);
    this.followed.push(sessionId);
    if (previous && previous !== sessionId) this.left.push(previous);
  }
  /** Round trip of a proof. */
  delayMs = 0;
  ping(): Promise<void> {
    this.pings += 1;
    if (!this.answering) return new Promise(() => {});
    return this.delayMs ? sleep(this.delayMs).then(() => {}) : Promise.resolve();
  }
  override on(event: 'ready' | 'close', listener: () => void): this {
    return super.on(event, listener);
  }
  drop(): void {
    this.ready = false;
    this.emit('close');
  }
  reconnect(): void {
    this.ready = true;
    this.emit('ready');
  }
}

function setup(
  answer: (op: string, epoch: number) => BindReply | Error = () => ok,
  doubtMs = 10_000,
) {
  const link = new FakeLink();
  const calls: { op: string; session: string; epoch: number; graceMs?: number }[] = [];
  const lapses: string[] = [];
  const logs: string[] = [];
  const states: string[] = [];
  let session = 'w:1#1';
  const binding = new Binding({
    store: {
      bind: async (op, s, epoch, graceMs) => {
        calls.push(
          op === 'bind' && graceMs !== GRACE
            ? { op, session: s, epoch, graceMs }
            : { op, session: s, epoch },
        );
        const r = answer(op, epoch);
        if (r instanceof Error) throw r;
        return r;
      },
    },
    link,
    crashGraceMs: GRACE,
    maxGraceMs: 5_000,
    doubtMs,
    logger: {
      debug: () => {},
      info: () => {},
      warn: (_o, msg) => logs.push(String(msg)),
      error: () => {},
    },
    sessionId: () => session,
    onLapse: (id) => lapses.push(id),
    onState: (state) => states.push(state),
  });
  return {
    link,
    calls,
    lapses,
    logs,
    states,
    binding,
    setSession: (s: string) => {
      session = s;
    },
  };
}
const ok: BindReply = { ok: true, runId: 'r' };

describe('Binding (the holder of a connection-bound session)', () => {
  it('binds at start and stays proven by its proofs, at most 10 a second', async () => {
    const { binding, link, calls, lapses } = setup();
    binding.start();
    await sleep(20);
    expect(calls).toEqual([{ op: 'bind', session: 'w:1#1', epoch: 1 }]);
    expect(link.followed).toEqual(['w:1#1']);
    await sleep(3 * GRACE);
    expect(binding.valid).toBe(true);
    expect(lapses).toEqual([]);
    // 470 ms: at most 5 proofs
    expect(link.pings).toBeGreaterThanOrEqual(3);
    expect(link.pings).toBeLessThanOrEqual(5);
    await binding.stop();
  });

  it('a distant Redis (70 ms round trip): bound with a grace its proofs can keep, no lapse', async () => {
    const { binding, link, calls, lapses } = setup();
    link.delayMs = 70; // 100 ms between proofs + 70 ms round trip > 150 ms grace
    binding.start();
    await sleep(1_000);
    expect(lapses).toEqual([]);
    expect(binding.valid).toBe(true);
    // 100 + 2 × 70 + 20 = 260 ms (a little more: the round trip measured includes timers)
    expect(binding.graceMs).toBeGreaterThanOrEqual(260);
    expect(calls[0]).toMatchObject({ op: 'bind', epoch: 1 });
    expect(calls[0]?.graceMs).toBeGreaterThanOrEqual(260);
    await binding.stop();
  });

  it('proofs growing slower: bound again with a longer grace (never a shorter one), no lapse', async () => {
    const { binding, link, calls, lapses } = setup();
    binding.start();
    await sleep(20);
    expect(binding.graceMs).toBe(GRACE);
    link.delayMs = 40; // the next proof still comes in time: 100 + 40 < 150 − drift
    await sleep(600);
    expect(lapses).toEqual([]);
    expect(binding.graceMs).toBeGreaterThanOrEqual(200);
    const last = calls.at(-1);
    // bound again (once, or more when a proof came slower still), with the grace it keeps
    expect(last).toMatchObject({ op: 'bind', graceMs: binding.graceMs });
    expect(last?.epoch).toBeGreaterThanOrEqual(2);
    link.delayMs = 0;
    await sleep(300);
    expect(calls.at(-1)).toBe(last);
    expect(binding.valid).toBe(true);
    await binding.stop();
  });

  it('a stalled proof on a connection that stands is doubt, not loss: nothing lapses, re-proven at once, proven again when a proof answers', async () => {
    const { binding, link, lapses, states } = setup();
    binding.start();
    await sleep(120);
    link.answering = false;
    const stalledAt = performance.now();
    while (!binding.inDoubt && performance.now() - stalledAt < 1_000) await sleep(2);
    // the belief ran out crashGraceMs − drift after the last answered proof (sent at most
    // one interval before the stall)
    expect(performance.now() - stalledAt).toBeLessThanOrEqual(GRACE + 10);
    expect(binding.state).toBe('doubt');
    const pingsAtDoubt = link.pings;
    await sleep(5 * GRACE);
    // a standing connection is one the server has not seen gone: no takeover on connection
    // evidence can come, so nothing is aborted (the session TTL bounds the doubt)
    expect(lapses).toEqual([]);
    expect(binding.valid).toBe(true);
    // proofs go on while in doubt (at most one an interval)
    expect(link.pings).toBeGreaterThan(pingsAtDoubt);
    expect(link.pings - pingsAtDoubt).toBeLessThanOrEqual(9);
    link.answering = true;
    await sleep(PROOF_INTERVAL_MS + 20);
    expect(binding.state).toBe('proven');
    expect(states).toEqual(['doubt', 'proven']);
    await binding.stop();
  });

  it('doubt has a bound: a proof unanswered for doubtMs on a connection that stands gives the leases up, until a proof answers', async () => {
    const { binding, link, lapses, states } = setup(() => ok, 300);
    binding.start();
    await sleep(120);
    link.answering = false;
    const stalledAt = performance.now();
    while (lapses.length === 0 && performance.now() - stalledAt < 2_000) await sleep(2);
    expect(lapses).toEqual(['w:1#1']);
    const after = performance.now() - stalledAt;
    // the belief's end (≤ GRACE after the stall began), then doubtMs for the re-proof
    expect(after).toBeGreaterThanOrEqual(300);
    expect(after).toBeLessThanOrEqual(GRACE + 300 + 30);
    expect(binding.state).toBe('unproven');
    link.answering = true;
    await sleep(PROOF_INTERVAL_MS + 20);
    expect(binding.state).toBe('proven');
    expect(states).toEqual(['doubt', 'unproven', 'proven']);
    await binding.stop();
  });

  it('stalls of this process one after another: each late answer is a connection that stood, never a reason to give up', async () => {
    const { binding, link, lapses } = setup(() => ok, 300);
    link.delayMs = 2;
    binding.start();
    await sleep(120);
    // synchronous work of 400 ms, again and again: the proof sent on waking is answered
    // only after the next stretch, too late to be certain, but answered
    for (let i = 0; i < 6; i++) {
      const until = performance.now() + 400;
      while (performance.now() < until) {
        // the event loop stands still
      }
      await sleep(1);
    }
    expect(lapses).toEqual([]);
    await sleep(PROOF_INTERVAL_MS + 20);
    expect(binding.state).toBe('proven');
    await binding.stop();
  });

  it('doubt ends in loss when the connection drops and cannot be unbound', async () => {
    let away = false;
    const { binding, link, lapses, states } = setup(() =>
      away ? new RedisUnavailableError('away') : ok,
    );
    binding.start();
    await sleep(120);
    link.answering = false;
    const stalledAt = performance.now();
    // reported once the watchdog looks (the state itself turns at the belief's end)
    while (!states.includes('doubt') && performance.now() - stalledAt < 1_000) await sleep(2);
    expect(binding.inDoubt).toBe(true);
    expect(lapses).toEqual([]);
    away = true;
    link.drop();
    // nothing left to believe: lapse at once
    await sleep(5);
    expect(lapses).toEqual(['w:1#1']);
    expect(binding.state).toBe('unproven');
    expect(states).toEqual(['doubt', 'unproven']);
    await binding.stop();
  });

  it('the reconnect hole: a proof answered on a reconnected link that is not bound again counts for nothing', async () => {
    // the unbind of the dropped connection and the new bind both fail (Redis away for
    // commands, the subscriber back): the server still holds the old binding, and may see
    // the old connection gone
    let away = false;
    const { binding, link, calls, lapses } = setup((_op, epoch) =>
      away && epoch >= 1 ? new RedisUnavailableError('away') : ok,
    );
    binding.start();
    await sleep(50);
    away = true;
    link.drop();
    link.reconnect(); // answers pings again at once
    const droppedAt = performance.now();
    while (lapses.length === 0 && performance.now() - droppedAt < 1_000) await sleep(2);
    expect(lapses).toEqual(['w:1#1']);
    expect(binding.valid).toBe(false);
    // the new connection answers pings, and proves nothing until it is bound
    expect(await link.ping().then(() => true)).toBe(true);
    await sleep(PROOF_INTERVAL_MS * 2);
    expect(binding.valid).toBe(false);
    // once bound again, its proofs count
    away = false;
    while (!binding.valid && performance.now() - droppedAt < 3_000) await sleep(5);
    expect(binding.valid).toBe(true);
    expect(calls.some((c) => c.op === 'bind' && c.epoch >= 2)).toBe(true);
    await binding.stop();
  });

  it('a failed unbind is retried until answered, with the link still down', async () => {
    let failures = 1;
    const { binding, link, calls, lapses } = setup((op) => {
      if (op === 'unbind' && failures > 0) {
        failures -= 1;
        return new RedisUnavailableError('away');
      }
      return ok;
    });
    binding.start();
    await sleep(50);
    link.drop();
    const droppedAt = performance.now();
    while (lapses.length === 0 && performance.now() - droppedAt < 1_000) await sleep(2);
    expect(binding.valid).toBe(false);
    while (!binding.valid && performance.now() - droppedAt < 2_000) await sleep(5);
    expect(calls.map((c) => `${c.op}:${c.epoch}`)).toEqual(['bind:1', 'unbind:1', 'unbind:1']);
    // the first failed: its belief ran out before the retry was answered
    expect(lapses).toEqual(['w:1#1']);
    // answered: no binding is left to act on, the session TTL decides until a reconnect
    expect(binding.valid).toBe(true);
    await binding.stop();
  });

  it('a dropped connection unbound through the command link in time: no lapse; re-bound on reconnect with a new epoch', async () => {
    const { binding, link, calls, lapses } = setup();
    binding.start();
    await sleep(50);
    link.drop();
    await sleep(2 * GRACE);
    expect(calls.map((c) => `${c.op}:${c.epoch}`)).toEqual(['bind:1', 'unbind:1']);
    expect(lapses).toEqual([]);
    expect(binding.valid).toBe(true);
    link.reconnect();
    await sleep(20);
    expect(calls.at(-1)).toEqual({ op: 'bind', session: 'w:1#1', epoch: 2 });
    expect(binding.valid).toBe(true);
    await binding.stop();
  });

  it('a dropped connection that cannot be unbound (Redis away): the handlers lapse; a reconnect binds again', async () => {
    let away = false;
    const { binding, link, calls, lapses } = setup(() =>
      away ? new RedisUnavailableError('away') : ok,
    );
    binding.start();
    await sleep(50);
    away = true;
    link.drop();
    await sleep(GRACE + 20);
    expect(lapses).toEqual(['w:1#1']);
    expect(binding.valid).toBe(false);
    away = false;
    link.reconnect();
    await sleep(20);
    expect(calls.at(-1)?.op).toBe('bind');
    expect(calls.at(-1)?.epoch).toBe(2);
    expect(binding.valid).toBe(true);
    await binding.stop();
  });

  it('a proof sent before a drop and answered after it does not count', async () => {
    const { binding, link, lapses } = setup((op) =>
      op === 'unbind' ? new RedisUnavailableError('away') : ok,
    );
    binding.start();
    await sleep(20);
    let answer: () => void = () => {};
    link.ping = () => {
      link.pings += 1;
      return new Promise<void>((r) => {
        answer = r;
      });
    };
    await sleep(110); // a proof is in flight
    link.drop();
    link.ready = true; // resent on the new connection, say
    answer();
    const droppedAt = performance.now();
    while (lapses.length === 0 && performance.now() - droppedAt < 1_000) await sleep(2);
    expect(lapses).toEqual(['w:1#1']);
    await binding.stop();
  });

  it('a server that cannot give the evidence: off, said once; never lapses, no proofs', async () => {
    const { binding, link, lapses, logs } = setup(() => ({
      ok: false,
      reason: 'unsupported',
      version: '6.2.14',
    }));
    binding.start();
    await sleep(20);
    link.drop();
    link.reconnect();
    await sleep(3 * GRACE);
    expect(logs.filter((l) => l.includes('connection-bound sessions are off'))).toHaveLength(1);
    expect(lapses).toEqual([]);
    expect(binding.valid).toBe(true);
    expect(link.pings).toBe(0);
    await binding.stop();
  });

  it('a bind refused for memory (noeviction, maxmemory reached) is retried, not taken as unsupported', async () => {
    let full = true;
    const { binding, link, calls, logs } = setup((op) =>
      op === 'bind' && full
        ? new RedisOutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'")
        : ok,
    );
    binding.start();
    // retried every 250 ms: 3 tries take 0.5 s on a quiet machine
    await vi.waitFor(() => expect(calls.filter((c) => c.op === 'bind').length).toBeGreaterThan(2), {
      timeout: 5_000,
    });
    expect(logs.filter((l) => l.includes('connection-bound sessions are off'))).toEqual([]);
    // warned of once while the refusals go on (then every 40th)
    expect(logs.filter((l) => l === 'pairlock: connection binding failed; retrying')).toHaveLength(
      1,
    );
    // memory back: bound, and its proofs keep it proven
    full = false;
    const tries = calls.length;
    await vi.waitFor(() => expect(calls.length).toBeGreaterThan(tries), { timeout: 5_000 });
    const pings = link.pings;
    await vi.waitFor(() => expect(link.pings).toBeGreaterThan(pings + 1), { timeout: 5_000 });
    expect(binding.valid).toBe(true);
    expect(logs.filter((l) => l.includes('connection-bound sessions are off'))).toEqual([]);
    await binding.stop();
  });

  it('a script the server refuses (renamed command, ACL) is taken as unsupported', async () => {
    const { binding, logs } = setup(() => new Error("ERR unknown command 'PUBSUB'"));
    binding.start();
    await sleep(20);
    expect(logs.filter((l) => l.includes('connection-bound sessions are off'))).toHaveLength(1);
    expect(binding.valid).toBe(true);
    await binding.stop();
  });

  it('a new session (the old one expired or was revoked) is bound in its place', async () => {
    const { binding, link, calls, setSession } = setup();
    binding.start();
    await sleep(20);
    setSession('w:1#2');
    binding.sessionChanged();
    await sleep(20);
    expect(link.followed).toEqual(['w:1#1', 'w:1#2']);
    expect(link.left).toEqual(['w:1#1']);
    expect(calls.at(-1)).toMatchObject({ op: 'bind', session: 'w:1#2' });
    expect(binding.valid).toBe(true);
    await binding.stop();
  });
});
