import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { TcpProxy } from '../src/testing/index.js';
import { attachMetrics } from '../src/worker/metrics.js';
import { EventLoopMonitor } from '../src/worker/runtime.js';
import { useRedisPair } from './support/redis-pair.js';

const pair = useRedisPair();
const worker = pair.worker;

async function value(
  registry: Registry,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return Number.NaN;
  const data = await metric.get();
  const hit = data.values.find(
    (v) =>
      (v as { metricName?: string }).metricName === undefined &&
      Object.entries(labels).every(
        ([k, x]) => String((v.labels as Record<string, unknown>)[k]) === x,
      ),
  );
  return hit ? hit.value : 0;
}

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => {
    open = r;
  });
  return { wait, open };
}

describe('attachMetrics', () => {
  it('counts claims, standbys, takeovers, lease losses, outcomes and latency from the worker events', async () => {
    const registry = new Registry();
    const a = worker('m1', 'alpha', { failure: { policy: 'give-up' } });
    const b = worker('m1', 'beta', { failure: { policy: 'give-up' } });
    const detachA = attachMetrics(a, { registry });
    const detachB = attachMetrics(b, { registry });

    // three tasks a wins while b covers
    for (let i = 0; i < 3; i++) {
      const g = gate();
      const started = gate();
      const ra = a.run(`t${i}`, async () => {
        started.open();
        await g.wait;
        return i;
      });
      await started.wait;
      let standby = false;
      const onStandby = () => {
        standby = true;
      };
      b.on('standby', onStandby);
      const rb = b.run(`t${i}`, () => -1);
      for (let k = 0; k < 400 && !standby; k++) await new Promise((r) => setTimeout(r, 25));
      b.off('standby', onStandby);
      if (i === 0) {
        expect(await value(registry, 'pairlock_running_tasks', { worker: 'alpha' })).toBe(1);
        expect(await value(registry, 'pairlock_pending_tasks', { worker: 'beta' })).toBe(1);
      }
      g.open();
      await Promise.all([ra, rb]);
    }
    // a fails one task (given up: final)
    await a.run('bad', () => {
      throw new Error('no');
    });
    // a holds a task and leaves with handover: b takes it over
    const started = gate();
    const held = a
      .run('moving', ({ signal }) => {
        started.open();
        return new Promise((_, reject) =>
          signal.addEventListener('abort', () => reject(signal.reason)),
        );
      })
      .catch(() => undefined);
    await started.wait;
    const moved = b.run('moving', () => 'moved');
    let standby = false;
    b.once('standby', () => {
      standby = true;
    });
    for (let k = 0; k < 400 && !standby; k++) await new Promise((r) => setTimeout(r, 25));
    await a.close({ handover: true });
    await held;
    expect((await moved).role).toBe('took-over');

    const v = (name: string, labels: Record<string, string>) =>
      value(registry, `pairlock_${name}`, labels);
    expect(await v('claims_total', { worker: 'alpha', result: 'won' })).toBe(5);
    expect(await v('claims_total', { worker: 'beta', result: 'standby' })).toBe(4);
    expect(await v('claims_total', { worker: 'beta', result: 'took_over' })).toBe(1);
    expect(await v('claims_total', { worker: 'beta', result: 'won' })).toBe(0);
    expect(await v('takeovers_total', { worker: 'beta', kind: 'handover' })).toBe(1);
    expect(await v('lease_lost_total', { worker: 'alpha', reason: 'handover' })).toBe(1);
    expect(await v('settled_total', { worker: 'alpha', state: 'done' })).toBe(3);
    expect(await v('settled_total', { worker: 'alpha', state: 'failed' })).toBe(1);
    expect(await v('settled_total', { worker: 'beta', state: 'done' })).toBe(1);
    expect(await v('outcomes_total', { worker: 'alpha', state: 'done', role: 'ran' })).toBe(3);
    expect(await v('outcomes_total', { worker: 'alpha', state: 'failed', role: 'ran' })).toBe(1);
    expect(await v('outcomes_total', { worker: 'beta', state: 'done', role: 'watched' })).toBe(3);
    expect(await v('outcomes_total', { worker: 'beta', state: 'done', role: 'took-over' })).toBe(1);

    const text = await registry.metrics();
    expect(text).toContain('pairlock_claims_total{worker="alpha",result="won"} 5');
    expect(text).toContain('pairlock_takeovers_total{worker="beta",kind="handover"} 1');
    expect(text).toContain('pairlock_outcome_latency_seconds_count{worker="alpha",role="ran"} 4');
    expect(text).toContain(
      'pairlock_outcome_latency_seconds_count{worker="beta",role="watched"} 3',
    );
    expect(text).toContain(
      'pairlock_outcome_latency_seconds_count{worker="beta",role="took-over"} 1',
    );
    expect(text).toMatch(/# TYPE pairlock_outcome_latency_seconds histogram/);
    expect(text).toMatch(/# TYPE pairlock_heartbeat_failures_total counter/);

    // detached: nothing more is counted
    detachB();
    await b.run('after-detach', () => 1);
    expect(await v('claims_total', { worker: 'beta', result: 'won' })).toBe(0);
    detachA();
  });

  it('counts heartbeat failures when the link to Redis breaks, and event-loop lag from a monitor', async () => {
    const registry = new Registry();
    const proxy = await TcpProxy.start({ targetPort: pair.server.port });
    const c = worker('m2', 'gamma', { redis: proxy.url, sessionTtlMs: 600, connectTimeoutMs: 500 });
    const monitor = new EventLoopMonitor({ thresholdMs: 100, intervalMs: 20 });
    const detach = attachMetrics(c, { registry, prefix: 'app_pl_', monitor });
    try {
      await c.start();
      monitor.start();
      proxy.cut();
      for (let k = 0; k < 600; k++) {
        if ((await value(registry, 'app_pl_heartbeat_failures_total', { worker: 'gamma' })) >= 1)
          break;
        await new Promise((r) => setTimeout(r, 25));
      }
      expect(
        await value(registry, 'app_pl_heartbeat_failures_total', { worker: 'gamma' }),
      ).toBeGreaterThanOrEqual(1);
      proxy.heal();

      await new Promise((r) => setTimeout(r, 60));
      const end = Date.now() + 300;
      while (Date.now() < end) {
        // block the loop
      }
      for (let k = 0; k < 100 && monitor.lagCount === 0; k++)
        await new Promise((r) => setTimeout(r, 20));
      expect(await value(registry, 'app_pl_event_loop_lag_events_total', { worker: 'gamma' })).toBe(
        monitor.lagCount,
      );
      expect(monitor.lagCount).toBeGreaterThanOrEqual(1);
      const text = await registry.metrics();
      expect(text).toMatch(/app_pl_event_loop_lag_seconds\{worker="gamma"\} [\d.e-]+/);
    } finally {
      monitor.stop();
      detach();
      await c.close();
      await proxy.close();
    }
  });

  it('lets several workers share a registry, and a worker attach again after detaching', () => {
    const registry = new Registry();
    const x = worker('m3', 'x');
    const y = worker('m3', 'y');
    const d1 = attachMetrics(x, { registry });
    const d2 = attachMetrics(y, { registry });
    d1();
    const d3 = attachMetrics(x, { registry });
    d2();
    d3();
    expect(registry.getSingleMetric('pairlock_claims_total')).toBeDefined();
  });
});
