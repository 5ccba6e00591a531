import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { PairedWorkerEvents } from '../shared/events.js';
import type { EventLoopMonitor, LagEvent } from './runtime.js';
import type { PairedWorker } from './worker.js';

export interface MetricsOptions {
  /** The prom-client registry to register in (e.g. `new Registry()` or prom-client's `register`). */
  readonly registry: Registry;
  /** Prefix of every metric name. @default 'pairlock_' */
  readonly prefix?: string;
  /** Also export event-loop lag from this monitor (see monitorEventLoop). */
  readonly monitor?: EventLoopMonitor;
  /** Buckets of the outcome latency histogram, in seconds. */
  readonly latencyBuckets?: readonly number[];
}

const DEFAULT_BUCKETS = [
  0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
];

interface MetricSet {
  claims: Counter<'worker' | 'result'>;
  takeovers: Counter<'worker' | 'kind'>;
  leaseLost: Counter<'worker' | 'reason'>;
  heartbeatFailures: Counter<'worker'>;
  sessionsLost: Counter<'worker'>;
  peerFailures: Counter<'worker'>;
  settled: Counter<'worker' | 'state'>;
  outcomes: Counter<'worker' | 'state' | 'role'>;
  latency: Histogram<'worker' | 'role'>;
  running: Gauge<'worker'>;
  pending: Gauge<'worker'>;
  lagEvents: Counter<'worker'>;
  lagSeconds: Gauge<'worker'>;
  /** Workers attached to this registry: the gauges read each of them at scrape time. */
  workers: Map<PairedWorker, { name: string; monitor: EventLoopMonitor | undefined }>;
}

/** One set of metrics per (registry, prefix), shared by every worker attached to it. */
const sets = new WeakMap<Registry, Map<string, MetricSet>>();

function metricSet(registry: Registry, prefix: string, buckets: readonly number[]): MetricSet {
  let byPrefix = sets.get(registry);
  if (!byPrefix) {
    byPrefix = new Map();
    sets.set(registry, byPrefix);
  }
  const existing = byPrefix.get(prefix);
  if (existing) return existing;
  const workers: MetricSet['workers'] = new Map();
  const registers = [registry];
  const set: MetricSet = {
    workers,
    claims: new Counter({
      name: `${prefix}claims_total`,
      help: 'Races for a task by their result: won (fresh grant), reclaimed (its own task taken back after a lost lease), standby (a peer holds it), took_over',
      labelNames: ['worker', 'result'],
      registers,
    }),
    takeovers: new Counter({
      name: `${prefix}takeovers_total`,
      help: 'Tasks this worker took over, by kind: session-expired, deadline-passed, retry, handover, connection-lost',
      labelNames: ['worker', 'kind'],
      registers,
    }),
    leaseLost: new Counter({
      name: `${prefix}lease_lost_total`,
      help: 'Grants this worker stopped being able to prove, by reason: session, connection, deadline, handover, closed, rejected',
      labelNames: ['worker', 'reason'],
      registers,
    }),
    heartbeatFailures: new Counter({
      name: `${prefix}heartbeat_failures_total`,
      help: 'Session renewals that failed (Redis error, or the session was gone)',
      labelNames: ['worker'],
      registers,
    }),
    sessionsLost: new Counter({
      name: `${prefix}sessions_lost_total`,
      help: 'Sessions that expired on the server before they could be renewed',
      labelNames: ['worker'],
      registers,
    }),
    peerFailures: new Counter({
      name: `${prefix}peer_failures_total`,
      help: 'Watched peer sessions that expired (a peer crashed, hung or was cut off)',
      labelNames: ['worker'],
      registers,
    }),
    settled: new Counter({
      name: `${prefix}settled_total`,
      help: 'Grants this worker settled, by state: done, failed',
      labelNames: ['worker', 'state'],
      registers,
    }),
    outcomes: new Counter({
      name: `${prefix}outcomes_total`,
      help: 'run() calls that resolved, by state and by the role this worker played: ran, watched, took-over',
      labelNames: ['worker', 'state', 'role'],
      registers,
    }),
    latency: new Histogram({
      name: `${prefix}outcome_latency_seconds`,
      help: 'Time from a run() call to its outcome, by role',
      labelNames: ['worker', 'role'],
      buckets: [...buckets],
      registers,
    }),
    running: new Gauge({
      name: `${prefix}running_tasks`,
      help: 'Handlers running on this worker now',
      labelNames: ['worker'],
      registers,
      collect() {
        this.reset();
        for (const [w, { name }] of workers) this.set({ worker: name }, w.running);
      },
    }),
    pending: new Gauge({
      name: `${prefix}pending_tasks`,
      help: 'run() calls waiting for an outcome (running or covering a peer)',
      labelNames: ['worker'],
      registers,
      collect() {
        this.reset();
        for (const [w, { name }] of workers) this.set({ worker: name }, w.pending);
      },
    }),
    lagEvents: new Counter({
      name: `${prefix}event_loop_lag_events_total`,
      help: 'Event-loop stalls over the monitor threshold',
      labelNames: ['worker'],
      registers,
    }),
    lagSeconds: new Gauge({
      name: `${prefix}event_loop_lag_seconds`,
      help: 'The last event-loop lag sample, in seconds',
      labelNames: ['worker'],
      registers,
      collect() {
        this.reset();
        for (const { name, monitor } of workers.values()) {
          if (monitor) this.set({ worker: name }, monitor.lastLagMs / 1_000);
        }
      },
    }),
  };
  byPrefix.set(prefix, set);
  return set;
}

/**
 * Export a worker's activity as Prometheus metrics, built from its events only. Several
 * workers may share one registry: every series carries a `worker` label (the worker's
 * name, stable across restarts). Returns a function that detaches the listeners.
 *
 * @example
 * const registry = new Registry();
 * const detach = attachMetrics(worker, { registry, monitor: monitorEventLoop() });
 * http.createServer(async (_req, res) => res.end(await registry.metrics())).listen(9464);
 */
export function attachMetrics(worker: PairedWorker, opts: MetricsOptions): () => void {
  const prefix = opts.prefix ?? 'pairlock_';
  const m = metricSet(opts.registry, prefix, opts.latencyBuckets ?? DEFAULT_BUCKETS);
  const name = worker.options.name;
  const monitor = opts.monitor;
  m.workers.set(worker, { name, monitor });

  type Ev = PairedWorkerEvents;
  const on = {
    claimed: (e: Ev['claimed']) =>
      m.claims.inc({ worker: name, result: e.kind === 'reclaimed' ? 'reclaimed' : 'won' }),
    standby: (_e: Ev['standby']) => m.claims.inc({ worker: name, result: 'standby' }),
    'took-over': (e: Ev['took-over']) => {
      m.claims.inc({ worker: name, result: 'took_over' });
      m.takeovers.inc({ worker: name, kind: e.kind });
    },
    settled: (e: Ev['settled']) => m.settled.inc({ worker: name, state: e.state }),
    'lease-lost': (e: Ev['lease-lost']) => m.leaseLost.inc({ worker: name, reason: e.reason }),
    'peer-failed': (_e: Ev['peer-failed']) => m.peerFailures.inc({ worker: name }),
    'renew-failed': (e: Ev['renew-failed']) => {
      m.heartbeatFailures.inc({ worker: name });
      if (e.sessionLost) m.sessionsLost.inc({ worker: name });
    },
    outcome: (e: Ev['outcome']) => {
      m.outcomes.inc({ worker: name, state: e.state, role: e.role });
      m.latency.observe({ worker: name, role: e.role }, e.elapsedMs / 1_000);
    },
  };
  worker.on('claimed', on.claimed);
  worker.on('standby', on.standby);
  worker.on('took-over', on['took-over']);
  worker.on('settled', on.settled);
  worker.on('lease-lost', on['lease-lost']);
  worker.on('peer-failed', on['peer-failed']);
  worker.on('renew-failed', on['renew-failed']);
  worker.on('outcome', on.outcome);

  const onLag = (_e: LagEvent) => m.lagEvents.inc({ worker: name });
  monitor?.on('lag', onLag);

  let attached = true;
  return () => {
    if (!attached) return;
    attached = false;
    worker.off('claimed', on.claimed);
    worker.off('standby', on.standby);
    worker.off('took-over', on['took-over']);
    worker.off('settled', on.settled);
    worker.off('lease-lost', on['lease-lost']);
    worker.off('peer-failed', on['peer-failed']);
    worker.off('renew-failed', on['renew-failed']);
    worker.off('outcome', on.outcome);
    monitor?.off('lag', onLag);
    m.workers.delete(worker);
  };
}
