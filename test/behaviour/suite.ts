import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  LeaseLostError,
  type Outcome,
  PairedWorker,
  type PairedWorkerOptions,
} from '../../src/index.js';

/**
 * The behavioural suite of a worker pair. One suite, run against every topology: each
 * topology only says how a worker reaches Redis.
 */
export interface BehaviourTopology {
  /** Options that connect a worker: `redis` or `nodes`. Called once per worker. */
  workerOptions(): Partial<PairedWorkerOptions>;
  close(): Promise<void>;
}

export interface SuiteOptions {
  /** Tasks in the race tests. @default 1000 */
  tasks?: number;
}

let nsCounter = 0;

export function defineBehaviourSuite(
  name: string,
  setup: () => Promise<BehaviourTopology>,
  suiteOpts: SuiteOptions = {},
): void {
  const N = suiteOpts.tasks ?? 1_000;

  describe(`pair behaviour on ${name}`, () => {
    let topo: BehaviourTopology;
    const workers: PairedWorker[] = [];

    beforeAll(async () => {
      topo = await setup();
    });
    afterEach(async () => {
      await Promise.allSettled(workers.splice(0).map((w) => w.close()));
    });
    afterAll(async () => {
      await topo?.close();
    });

    /** A worker on a fresh namespace per test (pass the same `ns` to pair two). */
    function worker(ns: string, workerName: string, extra: Partial<PairedWorkerOptions> = {}) {
      const w = new PairedWorker({
        ...topo.workerOptions(),
        namespace: ns,
        name: workerName,
        sessionTtlMs: 1_000,
        firstAttemptIntervalMs: 300,
        otherAttemptIntervalMs: 600,
        failure: { backoffMs: 20 },
        ...extra,
      } as PairedWorkerOptions);
      workers.push(w);
      return w;
    }
    const freshNs = () => `t${process.pid}-${++nsCounter}`;

    async function race(hashKeys?: string[]) {
      const ns = freshNs();
      // these tests are about the race, not takeovers: a session TTL that a loaded
      // machine cannot starve
      const a = worker(ns, 'a', { sessionTtlMs: 10_000 });
      const b = worker(ns, 'b', { sessionTtlMs: 10_000 });
      const executions = new Map<string, number>();
      const handler =
        (side: string) =>
        async ({ taskId, token }: { taskId: string; token: number }) => {
          executions.set(taskId, (executions.get(taskId) ?? 0) + 1);
          return { side, taskId, token };
        };
      const ids = Array.from({ length: N }, (_, i) => `task-${i}`);
      const opts = (i: number) =>
        hashKeys ? { hash: { key: hashKeys[i % hashKeys.length]! } } : {};
      const [ra, rb] = await Promise.all([
        Promise.all(ids.map((id, i) => a.run(id, handler('a'), opts(i)))),
        Promise.all(ids.map((id, i) => b.run(id, handler('b'), opts(i)))),
      ]);
      return { a, b, ids, ra, rb, executions };
    }

    function expectAgreement(
      ra: Outcome[],
      rb: Outcome[],
      ids: string[],
      executions: Map<string, number>,
    ) {
      expect(executions.size).toBe(ids.length);
      for (const [id, count] of executions) expect(count, `executions of ${id}`).toBe(1);
      for (let i = 0; i < ids.length; i++) {
        const x = ra[i]!;
        const y = rb[i]!;
        expect(x.state).toBe('done');
        expect(y.state).toBe('done');
        expect(y.result).toEqual(x.result);
        expect(y.token).toBe(x.token);
        expect(y.worker).toBe(x.worker);
        // exactly one side ran it, the other watched
        expect([x.role, y.role].sort()).toEqual(['ran', 'watched']);
      }
    }

    it(`two workers race for ${N} tasks (plain keys): each runs once, both get the same outcome`, async () => {
      const { ra, rb, ids, executions, a, b } = await race();
      expectAgreement(ra, rb, ids, executions);
      // both sides won some: the race is real, not a fixed order
      const aRan = ra.filter((o) => o.worker === a.id).length;
      expect(aRan + ra.filter((o) => o.worker === b.id).length).toBe(N);
    });

    it(`two workers race for ${N} tasks (hash fields): each runs once, both get the same outcome`, async () => {
      const { ra, rb, ids, executions, a } = await race(['h1', 'h2', 'h3']);
      expectAgreement(ra, rb, ids, executions);
      const info = await a.inspect('task-1', { hash: { key: 'h2' } });
      expect(info?.state).toBe('done');
      expect(await a.inspect('task-1')).toBeNull(); // plain key and hash field are separate records
    });

    it('winner reports failure: the standby takes over with token + 1 (default policy)', async () => {
      const ns = freshNs();
      const a = worker(ns, 'a');
      const b = worker(ns, 'b');
      const pa = a.run('job', async () => {
        throw new Error('boom');
      });
      // let a win the race
      await new Promise<void>((r) => a.once('settled', () => r()));
      let bToken = 0;
      const pb = b.run('job', async ({ token }) => {
        bToken = token;
        return 'recovered';
      });
      const [oa, ob] = await Promise.all([pa, pb]);
      expect(bToken).toBe(2);
      expect(ob).toMatchObject({
        state: 'done',
        role: 'took-over',
        result: 'recovered',
        token: 2,
        attempts: 2,
      });
      expect(oa).toMatchObject({
        state: 'done',
        role: 'watched',
        result: 'recovered',
        token: 2,
        worker: b.id,
      });
    });

    it("winner reports failure with policy 'give-up': nobody takes over, both learn the failure", async () => {
      const ns = freshNs();
      const a = worker(ns, 'a', { failure: { policy: 'give-up' } });
      const b = worker(ns, 'b', { failure: { policy: 'give-up' } });
      const pa = a.run('job', async () => {
        const e = new Error('card declined') as Error & { code: string };
        e.code = 'DECLINED';
        throw e;
      });
      await new Promise<void>((r) => a.once('settled', () => r()));
      let bRan = false;
      const ob = await b.run('job', async () => {
        bRan = true;
      });
      const oa = await pa;
      expect(bRan).toBe(false);
      expect(oa).toMatchObject({ state: 'failed', role: 'ran', token: 1, attempts: 1 });
      expect(ob).toMatchObject({ state: 'failed', role: 'watched', token: 1 });
      expect(ob.error).toEqual({ name: 'Error', message: 'card declined', code: 'DECLINED' });
    });

    it('failures stop after maxAttempts grants', async () => {
      const ns = freshNs();
      const a = worker(ns, 'a', { failure: { maxAttempts: 2, backoffMs: 10 } });
      const b = worker(ns, 'b', { failure: { maxAttempts: 2, backoffMs: 10 } });
      let runs = 0;
      const fail = async () => {
        runs += 1;
        throw new Error(`attempt ${runs}`);
      };
      const [oa, ob] = await Promise.all([a.run('job', fail), b.run('job', fail)]);
      expect(runs).toBe(2);
      expect(oa.state).toBe('failed');
      expect(ob.state).toBe('failed');
      expect(oa.attempts).toBe(2);
      expect(oa.error?.message).toBe('attempt 2');
    });

    it('graceful handover: close({ handover: true }) lets the standby take over at once', async () => {
      const ns = freshNs();
      const a = worker(ns, 'a');
      const b = worker(ns, 'b', {
        sessionTtlMs: 30_000,
        firstAttemptIntervalMs: 10_000,
        otherAttemptIntervalMs: 10_000,
      });
      let reason: unknown;
      const started = new Promise<void>((resolve) => {
        void a
          .run('long', ({ signal }) => {
            resolve();
            return new Promise((_, reject) =>
              signal.addEventListener('abort', () => {
                reason = signal.reason;
                reject(signal.reason);
              }),
            );
          })
          .catch(() => {});
      });
      await started;
      const pb = b.run('long', async ({ token, kind }) => ({ token, kind }));
      await new Promise<void>((r) => b.once('standby', () => r()));
      const t0 = performance.now();
      await a.close({ handover: true });
      const ob = await pb;
      // far sooner than any session TTL or safety-net interval of b
      expect(performance.now() - t0).toBeLessThan(5_000);
      expect(ob).toMatchObject({
        state: 'done',
        role: 'took-over',
        result: { token: 2, kind: 'handover' },
      });
      expect(reason).toBeInstanceOf(LeaseLostError);
      expect((reason as LeaseLostError).reason).toBe('handover');
    });

    it('a hung handler is taken over after its deadline; its signal fires and its late settle is rejected', async () => {
      const ns = freshNs();
      const a = worker(ns, 'a', { taskTimeoutMs: 400, firstAttemptIntervalMs: 200 });
      const b = worker(ns, 'b', { taskTimeoutMs: 400, firstAttemptIntervalMs: 200 });
      const lost: string[] = [];
      a.on('lease-lost', (e) => lost.push(e.reason));
      let releaseA!: () => void;
      const aDone = new Promise<void>((r) => {
        releaseA = r;
      });
      let aborted: unknown;
      const pa = a.run('hang', async ({ signal }) => {
        signal.addEventListener('abort', () => {
          aborted = signal.reason;
        });
        await aDone; // ignores its signal: a hung handler
        return 'late';
      });
      await new Promise<void>((r) => a.once('claimed', () => r()));
      const ob = await b.run('hang', async ({ token }) => `fresh ${token}`);
      expect(ob).toMatchObject({ state: 'done', role: 'took-over', result: 'fresh 2', token: 2 });
      expect(aborted).toBeInstanceOf(LeaseLostError);
      expect((aborted as LeaseLostError).code).toBe('ERR_TASK_TIMEOUT');
      releaseA();
      const oa = await pa;
      // a's late settle was turned away: it learns b's outcome instead of its own
      expect(oa).toMatchObject({ state: 'done', role: 'watched', result: 'fresh 2', token: 2 });
      expect(lost).toContain('deadline');
    });

    it('progress is recorded in the record and visible to inspect', async () => {
      const ns = freshNs();
      const a = worker(ns, 'a');
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      const pa = a.run('p', async ({ progress }) => {
        await progress(42, { step: 'upload' });
        await gate;
        return 1;
      });
      for (let i = 0; i < 100; i++) {
        const info = await a.inspect('p');
        if (info?.progress === 42) {
          expect(info.state).toBe('running');
          expect(info.note).toEqual({ step: 'upload' });
          expect(info.ownerAlive).toBe(true);
          expect(info.leaseRemainingMs).toBeGreaterThan(0);
          break;
        }
        if (i === 99) throw new Error('progress never showed up');
        await new Promise((r) => setTimeout(r, 20));
      }
      release();
      expect((await pa).result).toBe(1);
    });

    it('results travel to the standby; results over maxResultBytes fail on both sides with a clear error', async () => {
      const ns = freshNs();
      const a = worker(ns, 'a', { maxResultBytes: 64, failure: { policy: 'give-up' } });
      const b = worker(ns, 'b', { maxResultBytes: 64, failure: { policy: 'give-up' } });
      const big = 'x'.repeat(100);
      const [oa, ob] = await Promise.all([a.run('big', () => big), b.run('big', () => big)]);
      for (const o of [oa, ob]) {
        expect(o.state).toBe('failed');
        expect(o.error?.code).toBe('ERR_RESULT_TOO_LARGE');
      }
    });

    it('lock() / hlock(): the original callback API on the same engine', async () => {
      const ns = freshNs();
      const a = worker(ns, 'a');
      const b = worker(ns, 'b');
      const calls: string[] = [];
      const both = (w: PairedWorker, side: string, hash: boolean) =>
        new Promise<void>((resolve, reject) => {
          const cb = (err: Error | null, acquired: boolean, done: (ok?: boolean) => void) => {
            if (err) return reject(err);
            calls.push(`${side}:${hash ? 'h' : 'k'}:${acquired}`);
            if (acquired) {
              setTimeout(() => {
                done(true);
                resolve();
              }, 10);
            } else resolve();
          };
          if (hash) w.hlock('locks', 'x', cb);
          else w.lock('x', cb);
        });
      await Promise.all([both(a, 'a', false), both(b, 'b', false)]);
      await Promise.all([both(a, 'a', true), both(b, 'b', true)]);
      for (const mode of ['k', 'h']) {
        const mine = calls.filter((c) => c.includes(`:${mode}:`));
        expect(mine.filter((c) => c.endsWith('true'))).toHaveLength(1);
        expect(mine.filter((c) => c.endsWith('false'))).toHaveLength(1);
      }
    });

    it('paused worker covers but never claims; resume lets it claim again', async () => {
      const ns = freshNs();
      const a = worker(ns, 'a');
      a.pause();
      let ran = false;
      const pa = a.run('m', () => {
        ran = true;
        return 'a';
      });
      await new Promise((r) => setTimeout(r, 200));
      expect(ran).toBe(false);
      const b = worker(ns, 'b');
      expect((await b.run('m', () => 'b')).role).toBe('ran');
      expect(await pa).toMatchObject({ role: 'watched', result: 'b' });
      a.resume();
      expect((await a.run('n', () => 'a2')).role).toBe('ran');
    });
  });
}
