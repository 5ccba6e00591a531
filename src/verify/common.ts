/**
 * Pieces shared by the orchestrator (run.ts), its worker processes (worker.ts) and the
 * checker (check.ts) of `npm run chaos` and `pairlock verify`: the seeded random source, the
 * task plan, the fault schedule, the key layout of the fenced sink, and the shapes of the
 * JSON lines every process logs.
 */
import { performance } from 'node:perf_hooks';
import type { RedisOptions } from 'ioredis';
import { defaults } from '../shared/options.js';
import { type FaultKind, faultKinds, faultWeights } from './fault-kinds.js';

/** Monotonic ms on a clock shared (to ~1 ms) by every process of the run. */
export function stamp(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Every process samples its event loop every LAG_SAMPLE_MS and logs a stall ('lag') when a
 * sample comes more than LAG_LOG_MS after the previous one: a loop that cannot run cannot
 * fire a handler's signal on time, and the checker needs to see stalls of a few tens of ms.
 */
export const LAG_SAMPLE_MS = 10;
export const LAG_LOG_MS = 35;

/** mulberry32: small, fast, good enough to derive a schedule from a seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A sub-stream of the seed, so that adding draws to one part does not shift another. */
export function derive(seed: number, salt: number): () => number {
  return rng((Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(salt, 0xc2b2ae35)) >>> 0);
}

export const PAIRS = 2;
export const SIDES = 2;

/**
 * Chaos-run settings of every worker: small leases, so that faults cause takeovers quickly.
 * `connectTimeoutMs` stays well below the session TTL so that a reply that comes too late for
 * the client (the `timeout` fault) can leave the lease intact (a renewal sent after the
 * late replies still answers in time); `taskTimeoutMs` is short enough
 * for some handlers to run past it (the deadline path is exercised too).
 */
export const workerTiming = {
  sessionTtlMs: 1_000,
  heartbeatIntervalMs: 250,
  taskTimeoutMs: 3_000,
  firstAttemptIntervalMs: 1_000,
  otherAttemptIntervalMs: 2_000,
  connectTimeoutMs: 400,
  unavailableTimeoutMs: 15_000,
  failure: { policy: 'takeover' as const, maxAttempts: 3, backoffMs: 100 },
  concurrency: 64,
};

/**
 * The pair whose workers keep the library's default session TTL and heartbeat (10 s, one
 * renewal every 3.3 s): a holder of that pair that crashes is taken over on evidence of
 * its closed connection, or else only past its deadline or its session TTL. The other pair
 * keeps the short test TTL above.
 */
export const DEFAULT_SESSION_PAIR = 1;

/** The timing of a pair's workers (see DEFAULT_SESSION_PAIR). */
export function timingOf(pair: number): typeof workerTiming {
  if (pair !== DEFAULT_SESSION_PAIR) return workerTiming;
  return {
    ...workerTiming,
    sessionTtlMs: defaults.sessionTtlMs,
    heartbeatIntervalMs: Math.floor(defaults.sessionTtlMs / 3),
  };
}

/**
 * The longest a run() call may take before the checker calls it hung: Redis away for
 * `unavailableTimeoutMs`, then every attempt running to its deadline and being taken over
 * after a session TTL and a safety-net interval, plus 10 s of slack for pauses and stalls.
 */
export function runCallBoundMs(t: typeof workerTiming = timingOf(DEFAULT_SESSION_PAIR)): number {
  return (
    t.unavailableTimeoutMs +
    t.failure.maxAttempts * (t.taskTimeoutMs + t.sessionTtlMs + t.otherAttemptIntervalMs) +
    10_000
  );
}

/**
 * How long a run() call may go on once its task has an outcome in Redis: it learns of it at
 * the latest at its next safety-net check, or gives up after `unavailableTimeoutMs` when
 * Redis stays away, plus a pause's worth of slack.
 */
export function noticeBoundMs(t: typeof workerTiming = timingOf(DEFAULT_SESSION_PAIR)): number {
  return t.unavailableTimeoutMs + t.otherAttemptIntervalMs + 3 * t.sessionTtlMs;
}

export type FailMode = 'none' | 'first' | 'always';

/** One task as the feed hands it to both workers of its pair. */
export interface TaskSpec {
  /** Index in the plan (0-based). */
  i: number;
  id: string;
  pair: number;
  /** Hash-field mode: the hash's name. */
  hash?: string;
  /** How long the handler works before it commits its effect. */
  durationMs: number;
  fail: FailMode;
  /** A careful handler stops when its signal fires; a careless one carries on to the sink. */
  careful: boolean;
  /**
   * The first grant (token 1) runs this long past `taskTimeoutMs` (a handler that overruns
   * its deadline; by grant, not attempt: a grant that ends on its deadline goes back unused,
   * and the next one keeps the attempt).
   */
  overrunMs?: number;
}

/** Which task ids carry characters that need care (separators, braces, newlines...). */
const oddIds = ['a|b', '{x}', 'x}{', 'line\nbreak', 'nul\u0000', 'é🙂', '1|R|9|9|s|0|0|0||'];

export function planTasks(seed: number, count: number): TaskSpec[] {
  const r = derive(seed, 1);
  const out: TaskSpec[] = [];
  for (let i = 0; i < count; i++) {
    const odd = i % 53 === 7 ? oddIds[((i / 53) % oddIds.length) | 0] : undefined;
    const id = odd === undefined ? `task-${i}` : `task-${i}:${odd}`;
    const roll = r();
    const durationMs =
      roll < 0.7
        ? 2 + Math.floor(r() * 30)
        : roll < 0.95
          ? 50 + Math.floor(r() * 250)
          : 500 + Math.floor(r() * 1_500);
    const f = r();
    const fail: FailMode = f < 0.003 ? 'always' : f < 0.03 ? 'first' : 'none';
    const spec: TaskSpec = {
      i,
      id,
      pair: i % PAIRS,
      durationMs,
      fail,
      careful: r() < 0.5,
    };
    if (i % 3 === 0) spec.hash = `batch-${Math.floor(i / 60)}`;
    // 3%: the first grant overruns the task's deadline (the task is granted again)
    if (r() < 0.03) spec.overrunMs = 100 + Math.floor(r() * 900);
    out.push(spec);
  }
  return out;
}

export * from './fault-kinds.js';
/**
 * The shortest freeze (of the holder, of its links or of Redis) after which a holder of
 * `pair` may have lost its session on the server: its last renewal may have been sent a
 * heartbeat interval before the freeze began, and the session lapses a TTL after it (less
 * 100 ms of slack for the renewal's round trip and the holder's margin). 650 ms for the
 * pair with the 1-s test TTL, 6.6 s for the pair with the default TTL.
 */
export function stallCanLapseMs(pair: number): number {
  const t = timingOf(pair);
  return t.sessionTtlMs - t.heartbeatIntervalMs - 100;
}

/** A planned fault: when (ms after the start), what, on which worker slot, for how long. */
export interface FaultPlan {
  atMs: number;
  kind: FaultKind;
  /** Worker slot index (pair * SIDES + side); kill, pause and handover prefer a slot that holds a task. */
  slot: number;
  /**
   * pause/cut/delay/partition/cut-node: how long; kill/handover: how long until the restart;
   * node-loss: how long the node stays down; abort: how long until run() is called again;
   * timeout/slow-minority: how long replies are held back; stall/stall-close: how long the
   * worker's event loop is blocked; redis-stall/client-pause: how long Redis answers nobody;
   * migrate: the pauses between keys add up to this much at most; failover: the longest wait
   * for the replica to become master.
   */
  durationMs: number;
  /** delay: one-way ms added per chunk. */
  delayMs?: number;
  /** timeout/slow-minority/handover: ms each reply is held back (handover: 0 for none). */
  replyDelayMs?: number;
  /**
   * cut-node/node-loss/slow-minority/redis-restart/redis-stall/client-pause: which node
   * (quorum; one Redis: 0).
   */
  node?: number;
  /** redis-restart: a crash (SIGKILL) or a clean stop (SIGTERM). */
  crash?: boolean;
}

export function planFaults(
  seed: number,
  horizonMs: number,
  meanGapMs: number,
  kinds: readonly FaultKind[] = faultKinds,
  nodes = 1,
): FaultPlan[] {
  const r = derive(seed, 2);
  const out: FaultPlan[] = [];
  const ttl = workerTiming.sessionTtlMs;
  const timeout = workerTiming.connectTimeoutMs;
  const weights = kinds.map((k) => faultWeights[k] ?? 1);
  const total = weights.reduce((a, b) => a + b, 0);
  /** A kind drawn by weight (all weights 1: the same draw as a uniform pick). */
  const pick = (x: number): FaultKind => {
    let sum = 0;
    for (const [i, k] of kinds.entries()) {
      sum += weights[i] ?? 1;
      if (x < sum) return k;
    }
    return kinds[kinds.length - 1] ?? 'kill';
  };
  let t = 1_500 + r() * meanGapMs;
  while (t < horizonMs) {
    const kind = pick(r() * total);
    const slot = Math.floor(r() * PAIRS * SIDES);
    const f: FaultPlan = { atMs: Math.round(t), kind, slot, durationMs: 0 };
    switch (kind) {
      case 'kill':
        f.durationMs = 200 + Math.round(r() * 1_500);
        break;
      case 'pause':
        // past the session TTL, so the peer takes over while this holder sleeps
        f.durationMs = Math.round(ttl * (1.5 + r() * 1.5));
        break;
      case 'redis-restart':
        f.crash = r() < 0.5;
        f.node = Math.floor(r() * nodes);
        break;
      case 'cut':
      case 'partition':
        f.durationMs = Math.round(ttl * (0.3 + r() * 2.7));
        break;
      case 'delay':
        f.durationMs = Math.round(1_000 + r() * 3_000);
        // a round trip stays under connectTimeoutMs: slow, not timed out
        f.delayMs = 20 + Math.round(r() * (timeout / 2 - 70));
        // (a round trip of at most connectTimeoutMs - 100 ms)
        break;
      case 'abort':
        f.durationMs = 20 + Math.round(r() * 480);
        break;
      case 'timeout':
        // past connectTimeoutMs, but short enough that the lease survives: the commands
        // sent in this window were applied, the client gave up on their replies
        f.durationMs = 30 + Math.round(r() * 70);
        f.replyDelayMs = timeout + 50 + Math.round(r() * 100);
        break;
      case 'handover':
        f.durationMs = 200 + Math.round(r() * 1_500);
        // half of them on a slow link: the release's reply comes late (well past the
        // lateness the checker grants an event loop, but within connectTimeoutMs)
        f.replyDelayMs = r() < 0.5 ? 0 : 100 + Math.round(r() * 250);
        break;
      case 'cut-node':
        f.durationMs = Math.round(ttl * (0.3 + r() * 2.7));
        f.node = Math.floor(r() * nodes);
        break;
      case 'node-loss':
        f.durationMs = 500 + Math.round(r() * 2_500);
        f.node = Math.floor(r() * nodes);
        break;
      case 'slow-minority':
        f.durationMs = 500 + Math.round(r() * 2_500);
        f.replyDelayMs = timeout + 100 + Math.round(r() * 1_400);
        f.node = Math.floor(r() * nodes);
        break;
      case 'stall':
        // a holder's event loop blocked (GC, synchronous handler code): doubt, not loss
        f.durationMs = 50 + Math.round(r() * 950);
        break;
      case 'redis-stall':
      case 'client-pause':
        // a Redis that answers nobody for a while (a fork, a slow script, an fsync)
        f.durationMs = 100 + Math.round(r() * 400);
        f.node = Math.floor(r() * nodes);
        break;
      case 'stall-close':
        // long enough for the standby to see the closed subscriber a grace long
        f.durationMs = 500 + Math.round(r() * 200);
        break;
      case 'migrate':
        // the pauses between the keys' moves add up to this much at most (the rest move at once)
        f.durationMs = 300 + Math.round(r() * 1_200);
        break;
      case 'failover':
        // the longest wait for the replica to report itself master
        f.durationMs = 10_000;
        break;
    }
    out.push(f);
    t += meanGapMs * (0.3 + r() * 1.4);
  }
  return out;
}

export function percentile(sorted: readonly number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

// -------------------------------------------------------------------------------------
// Log lines (one JSON object per line; `t` is stamp())
// -------------------------------------------------------------------------------------

/** Lines written by a worker process (`w` = worker slot, `p` = process instance). */
export type WorkerLine =
  | { t: number; ev: 'start'; w: number; p: string; pid: number; worker: string; session: string }
  | {
      t: number;
      ev: 'claimed' | 'took-over';
      task: string;
      token: number;
      attempt: number;
      kind: string;
      from?: string;
    }
  | { t: number; ev: 'standby'; task: string; holder: string; token: number }
  /** run() is called (`call` counts the calls of this process). */
  | { t: number; ev: 'run-call'; task: string; call: number }
  | { t: number; ev: 'exec-start'; task: string; token: number; attempt: number; session: string }
  /** The handler's signal fired (the worker told it that it lost the task). */
  | { t: number; ev: 'exec-signal'; task: string; token: number; reason: string }
  | { t: number; ev: 'sink'; task: string; token: number; ok: boolean; current: number }
  | {
      t: number;
      ev: 'exec-end';
      task: string;
      token: number;
      status: 'ok' | 'threw' | 'aborted';
      message?: string;
    }
  | { t: number; ev: 'settled'; task: string; token: number; state: string; attempt: number }
  | { t: number; ev: 'lease-lost'; task: string; token: number; reason: string; rejected?: string }
  /** The holder's proofs are late on a connection that stands (`inDoubt`), or on time again. */
  | { t: number; ev: 'lease-doubt'; inDoubt: boolean }
  /** The orchestrator asked for a stall: the event loop is blocked for `ms` from now. */
  | { t: number; ev: 'stall'; ms: number }
  | {
      t: number;
      ev: 'outcome';
      call: number;
      task: string;
      state: string;
      role: string;
      token: number;
      attempts: number;
      worker: string;
      result?: unknown;
      error?: { name: string; message: string; code?: string };
    }
  | {
      t: number;
      ev: 'run-error';
      call: number;
      task: string;
      code: string;
      message: string;
      final: boolean;
    }
  /** The feed aborted run() call `call` through its signal (`running`: the handler was running). */
  | { t: number; ev: 'caller-abort'; task: string; call: number; running: boolean }
  /** A signal (SIGTERM) started a close with handover. */
  | { t: number; ev: 'closing'; signal: string }
  | { t: number; ev: 'renew-failed'; session: string; sessionLost: boolean }
  | { t: number; ev: 'peer-failed'; session: string; tasks: number }
  /** The event loop ran `ms` late (a stall or a SIGSTOP); logged when it resumes. */
  | { t: number; ev: 'lag'; ms: number }
  | { t: number; ev: 'closed' };

/** Lines written by the orchestrator. */
export type ParentLine =
  | {
      t: number;
      ev: 'run';
      seed: number;
      tasks: number;
      maxSeconds: number;
      rate: number;
      topology: string;
      argv: string[];
    }
  | { t: number; ev: 'spawn'; w: number; p: string; pid: number }
  | { t: number; ev: 'exit'; w: number; p: string; code: number | null; signal: string | null }
  | {
      t: number;
      ev: 'fault';
      kind: FaultKind;
      w?: number;
      p?: string;
      /** The node a node fault hit (quorum), or 0 on one Redis. */
      node?: number;
      phase: 'start' | 'end';
      detail?: string;
    }
  | { t: number; ev: 'released'; count: number }
  /** The orchestrator's event loop (which carries every proxied byte) ran `ms` late. */
  | { t: number; ev: 'lag'; ms: number }
  | { t: number; ev: 'end'; reason: string; released: number };

/** A parent line as written (the timestamp is added by the writer). */
export type ParentEntry = ParentLine extends infer L
  ? L extends { t: number }
    ? Omit<L, 't'>
    : never
  : never;

/** An entry of the sink's journal: every write attempt, in the order the sink applied them. */
export interface SinkEntry {
  task: string;
  pair: number;
  token: number;
  w: number;
  p: string;
  session: string;
}

/** What the orchestrator tells a worker process (the first IPC message). */
export interface WorkerConfig {
  slot: number;
  pair: number;
  instance: string;
  namespace: string;
  keyPrefix: string;
  /** One: a single Redis; three or more: quorum mode. Each reaches its node through a proxy. */
  coord: RedisOptions[];
  /**
   * A Redis Cluster: `coord` are its nodes' proxies (the startup nodes of a Cluster client),
   * and `natMap` maps each node's address, as the cluster announces it, to its proxy.
   */
  cluster?: { natMap: Record<string, { host: string; port: number }> };
  /** The fenced sink's Redis, reached directly. */
  sink: RedisOptions;
  /** Prefix of the sink's keys (see sinkKey). */
  sinkBase: string;
  /** Expiry of the sink's keys; 0: none. */
  sinkTtlMs: number;
  /** How long task records are kept (PairedWorker option); undefined: the default. */
  retentionMs?: number;
  logFile: string;
}

/** IPC: parent → worker. */
export type ToWorker =
  /** The first message: the process's configuration (worker.ts WorkerConfig). */
  | { type: 'config'; config: WorkerConfig }
  | { type: 'run'; tasks: TaskSpec[] }
  /**
   * Abort, through its signal, the run() of the task whose handler has the longest still to
   * go, and call run() again at most `afterMs` later (while the handler still runs).
   */
  | { type: 'abort'; afterMs: number }
  /** Block the event loop for `ms` (a synchronous busy loop: the `stall` fault). */
  | { type: 'stall'; ms: number }
  | { type: 'stop' };
/** IPC: worker → parent. */
export type FromWorker =
  | { type: 'ready'; worker: string }
  | { type: 'exec'; task: string; running: boolean }
  | { type: 'outcome'; task: string }
  /** This worker's settle of `task` was accepted. */
  | { type: 'settled'; task: string }
  /** A stall asked for begins now (sent just before the busy loop), or has ended. */
  | { type: 'stall'; phase: 'start' | 'end' }
  | { type: 'closed' };

/**
 * Where the fenced sink keeps its keys: `base` is prepended to every one of them (the chaos
 * run's sink is a Redis of its own and uses none; `pairlock verify` keeps them in its
 * namespace, `<prefix>:{<namespace>}:`, so that they share its hash tag and its cleanup).
 */
export function sinkKey(base: string, pair: number, spec: { id: string; hash?: string }): string {
  return `${base}sink:${pair}:${spec.hash ?? ''}:${spec.id}`;
}
export function sinkJournal(base: string): string {
  return `${base}sink:journal`;
}
export function sinkWarmup(base: string, instance: string): string {
  return `${base}sink:warmup:${instance}`;
}
