/**
 * One worker process of `npm run chaos` and `pairlock verify`. The orchestrator (run.ts)
 * starts it (workerCommand) and sends its configuration as the first IPC message. It reaches
 * the coordination Redis through its own TCP proxies (so the orchestrator can cut or delay
 * just this worker), commits every task's effect to the fenced sink (reached directly: no
 * fault touches it), and logs every step as a JSON line with a monotonic timestamp. Lines
 * are written synchronously, so a SIGKILL loses none that were logged.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { Cluster, Redis } from 'ioredis';
import { fencedWrite } from '../redis/fencing.js';
import { loadScripts } from '../redis/scripts.js';
import { PairlockError } from '../shared/errors.js';
import { handleSignals } from '../worker/runtime.js';
import { type Outcome, PairedWorker } from '../worker/worker.js';
import {
  type FromWorker,
  LAG_LOG_MS,
  LAG_SAMPLE_MS,
  type SinkEntry,
  sinkJournal,
  sinkKey,
  sinkWarmup,
  stamp,
  type TaskSpec,
  type ToWorker,
  timingOf,
  type WorkerConfig,
  type WorkerLine,
  workerTiming,
} from './common.js';

const config = await new Promise<WorkerConfig>((resolve) => {
  const onMessage = (msg: ToWorker) => {
    if (msg.type !== 'config') return;
    process.off('message', onMessage);
    resolve(msg.config);
  };
  process.on('message', onMessage);
  // the orchestrator went away before it configured this process
  process.once('disconnect', () => process.exit(0));
});
const fd = openSync(config.logFile, 'a');

type Line = WorkerLine extends infer L ? (L extends { t: number } ? Omit<L, 't'> : never) : never;
function log(line: Line): void {
  writeSync(fd, `${JSON.stringify({ t: stamp(), ...line })}\n`);
}

function send(msg: FromWorker): void {
  if (process.connected) process.send?.(msg);
}

/**
 * Where this worker coordinates: one Redis, quorum nodes, or a Redis Cluster, reached through
 * its own proxies (a Cluster client learns the nodes' addresses from the cluster: natMap maps
 * each to this worker's proxy of it).
 */
function coordination() {
  if (config.cluster) {
    const [first = {}] = config.coord;
    const { host: _host, port: _port, ...options } = first;
    const cluster = new Cluster(
      config.coord.map((c) => ({ host: c.host ?? '127.0.0.1', port: c.port ?? 6379 })),
      {
        natMap: config.cluster.natMap,
        enableOfflineQueue: false,
        redisOptions: {
          ...options,
          connectTimeout: timingOf(config.pair).connectTimeoutMs,
          maxRetriesPerRequest: 0,
        },
      },
    );
    cluster.on('error', () => {});
    return { redis: cluster };
  }
  return config.coord.length > 1 ? { nodes: config.coord } : { redis: config.coord[0] };
}

const worker = new PairedWorker({
  ...coordination(),
  namespace: config.namespace,
  keyPrefix: config.keyPrefix,
  name: `w${config.slot}`,
  ...timingOf(config.pair),
  ...(config.retentionMs === undefined ? {} : { retentionMs: config.retentionMs }),
});
const sink = new Redis({ ...config.sink, maxRetriesPerRequest: 3 });
sink.on('error', () => {});
const fenceCommand = loadScripts().fencedWrite.command;

worker.on('claimed', (e) =>
  log({ ev: 'claimed', task: e.taskId, token: e.token, attempt: e.attempt, kind: e.kind }),
);
worker.on('took-over', (e) =>
  log({
    ev: 'took-over',
    task: e.taskId,
    token: e.token,
    attempt: e.attempt,
    kind: e.kind,
    from: e.from,
  }),
);
worker.on('standby', (e) =>
  log({ ev: 'standby', task: e.taskId, holder: e.holder, token: e.token }),
);
worker.on('settled', (e) => {
  log({ ev: 'settled', task: e.taskId, token: e.token, state: e.state, attempt: e.attempt });
  send({ type: 'settled', task: e.taskId });
});
worker.on('lease-lost', (e) => {
  const line: Line = { ev: 'lease-lost', task: e.taskId, token: e.token, reason: e.reason };
  if (e.rejected !== undefined) line.rejected = e.rejected;
  log(line);
});
worker.on('lease-doubt', (e) => log({ ev: 'lease-doubt', inDoubt: e.inDoubt }));
worker.on('renew-failed', (e) =>
  log({ ev: 'renew-failed', session: e.sessionId, sessionLost: e.sessionLost }),
);
worker.on('peer-failed', (e) => log({ ev: 'peer-failed', session: e.session, tasks: e.tasks }));

// event-loop stalls (CPU starvation, SIGSTOP): a holder that cannot run cannot notice it
// lost its lease. Sampled finely: a timer 30 ms late already makes a deadline's signal late.
let tick = stamp();
setInterval(() => {
  const now = stamp();
  if (now - tick > LAG_LOG_MS) log({ ev: 'lag', ms: Math.round(now - tick - LAG_SAMPLE_MS) });
  tick = now;
}, LAG_SAMPLE_MS).unref();

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The task's effect: a fenced write to the sink, journalled in the same transaction so the
 * journal holds every attempt (accepted or not) in the order the sink applied them.
 */
async function commit(spec: TaskSpec, token: number): Promise<{ ok: boolean; current: number }> {
  const entry: SinkEntry = {
    task: spec.id,
    pair: config.pair,
    token,
    w: config.slot,
    p: config.instance,
    session: worker.session,
  };
  const value = JSON.stringify({ token, by: worker.id });
  const tx = sink.multi() as unknown as Record<string, (...a: (string | number)[]) => unknown> & {
    rpush(k: string, v: string): unknown;
    pexpire(k: string, ms: number): unknown;
    exec(): Promise<[Error | null, unknown][] | null>;
  };
  const journal = sinkJournal(config.sinkBase);
  tx[fenceCommand]?.(sinkKey(config.sinkBase, config.pair, spec), token, value, config.sinkTtlMs);
  tx.rpush(journal, JSON.stringify(entry));
  if (config.sinkTtlMs > 0) tx.pexpire(journal, config.sinkTtlMs);
  const res = await tx.exec();
  const first = res?.[0];
  if (!first || first[0]) throw first?.[0] ?? new Error('sink transaction aborted');
  const reply = first[1] as number[];
  return reply[0] === 1
    ? { ok: true, current: Number(reply[1]) }
    : { ok: false, current: Number(reply[1]) };
}

const pending = new Map<string, TaskSpec>();
/** The current run() call of each task: its number and the feed's abort controller. */
const calls = new Map<string, { call: number; controller: AbortController }>();
/** Tasks whose handler runs in this process now: when each is planned to end, and whether past its deadline. */
const handling = new Map<string, { endsAt: number; overrun: boolean }>();
let callCount = 0;
let stopping = false;

function handler(spec: TaskSpec) {
  return async ({
    signal,
    token,
    attempt,
  }: {
    signal: AbortSignal;
    token: number;
    attempt: number;
  }) => {
    log({ ev: 'exec-start', task: spec.id, token, attempt, session: worker.session });
    const onSignal = () =>
      log({
        ev: 'exec-signal',
        task: spec.id,
        token,
        reason: String((signal.reason as { reason?: string } | undefined)?.reason ?? 'unknown'),
      });
    signal.addEventListener('abort', onSignal, { once: true });
    // the first grant (token 1) overruns, not every grant of attempt 1: a grant whose
    // handler ended on its deadline goes back unused and is granted again on the same
    // attempt, so by attempt the task would overrun for ever
    const overrun = token === 1 && spec.overrunMs !== undefined;
    const ms = overrun ? workerTiming.taskTimeoutMs + (spec.overrunMs ?? 0) : spec.durationMs;
    handling.set(spec.id, { endsAt: stamp() + ms, overrun });
    send({ type: 'exec', task: spec.id, running: true });
    try {
      await sleep(ms, spec.careful ? signal : undefined);
      if (spec.fail === 'always' || (spec.fail === 'first' && attempt === 1)) {
        throw new Error(`simulated failure of ${spec.id} (attempt ${attempt})`);
      }
      const res = await commit(spec, token);
      log({ ev: 'sink', task: spec.id, token, ok: res.ok, current: res.current });
      if (!res.ok) throw new Error(`fenced out: the sink has token ${res.current}`);
      log({ ev: 'exec-end', task: spec.id, token, status: 'ok' });
      return { task: spec.id, token, by: worker.id };
    } catch (err) {
      const aborted = signal.aborted && err === signal.reason;
      log({
        ev: 'exec-end',
        task: spec.id,
        token,
        status: aborted ? 'aborted' : 'threw',
        message: (err as Error).message,
      });
      throw err;
    } finally {
      signal.removeEventListener('abort', onSignal);
      handling.delete(spec.id);
      send({ type: 'exec', task: spec.id, running: false });
    }
  };
}

/** The feed aborted this call on purpose (the `abort` fault). */
class CallerAbort extends Error {
  constructor(readonly afterMs: number) {
    super('the feed aborted run()');
    this.name = 'CallerAbort';
  }
}

async function runTask(spec: TaskSpec): Promise<void> {
  const opts = spec.hash === undefined ? {} : { hash: { key: spec.hash } };
  /** Closed before an answer: the task stays pending for the orchestrator (the next process). */
  let closed = false;
  // a feed that redelivers: a run that gave up (Redis away too long) is tried again
  for (let delivery = 1; delivery <= 20; ) {
    let outcome: Outcome<unknown>;
    const call = ++callCount;
    const controller = new AbortController();
    calls.set(spec.id, { call, controller });
    log({ ev: 'run-call', task: spec.id, call });
    try {
      outcome = await worker.run(spec.id, handler(spec), { ...opts, signal: controller.signal });
    } catch (err) {
      if (err instanceof CallerAbort) {
        // the feed gave up on this call while the handler runs; it asks again shortly
        log({
          ev: 'run-error',
          call,
          task: spec.id,
          code: 'CALLER_ABORT',
          message: err.message,
          final: false,
        });
        await sleep(err.afterMs);
        if (stopping) break;
        continue;
      }
      const code = err instanceof PairlockError ? err.code : 'UNKNOWN';
      // unavailability (one Redis away, or no quorum of nodes reachable): redeliver
      const retry = (code === 'ERR_REDIS_UNAVAILABLE' || code === 'ERR_NO_QUORUM') && delivery < 20;
      // closed (handover, or the end of the run): the next process gets the task again
      closed = code === 'ERR_CLOSED' && stopping;
      log({
        ev: 'run-error',
        call,
        task: spec.id,
        code,
        message: (err as Error).message,
        final: !retry && !closed,
      });
      if (!retry) break;
      delivery++;
      await sleep(250);
      continue;
    } finally {
      if (calls.get(spec.id)?.call === call) calls.delete(spec.id);
    }
    const line: Line = {
      ev: 'outcome',
      call,
      task: spec.id,
      state: outcome.state,
      role: outcome.role,
      token: outcome.token,
      attempts: outcome.attempts,
      worker: outcome.worker,
    };
    if (outcome.result !== undefined) line.result = outcome.result;
    if (outcome.error !== undefined) line.error = outcome.error;
    log(line);
    break;
  }
  pending.delete(spec.id);
  if (!closed) send({ type: 'outcome', task: spec.id });
}

process.on('message', (msg: ToWorker) => {
  if (msg.type === 'run') {
    for (const spec of msg.tasks) {
      if (stopping || pending.has(spec.id)) continue;
      pending.set(spec.id, spec);
      void runTask(spec);
    }
  } else if (msg.type === 'abort') {
    // the handler with the longest still to go, so that run() is called again while it
    // runs; one that will end within its deadline if there is one (it settles normally)
    let task: string | undefined;
    let endsAt = 0;
    let overrun = true;
    for (const [id, h] of handling) {
      if (!calls.has(id)) continue;
      const better = overrun && !h.overrun ? true : h.overrun === overrun && h.endsAt > endsAt;
      if (better) {
        task = id;
        endsAt = h.endsAt;
        overrun = h.overrun;
      }
    }
    const current = task === undefined ? undefined : calls.get(task);
    if (task === undefined || !current) return;
    log({ ev: 'caller-abort', task, call: current.call, running: true });
    const afterMs = Math.min(msg.afterMs, Math.max(5, (endsAt - stamp()) / 2));
    current.controller.abort(new CallerAbort(Math.round(afterMs)));
  } else if (msg.type === 'stall') {
    // the `stall` fault: this process's event loop blocked, as by a long GC or synchronous
    // handler code (the lag sampler logs it when the loop runs again)
    log({ ev: 'stall', ms: msg.ms });
    send({ type: 'stall', phase: 'start' });
    const until = stamp() + msg.ms;
    while (stamp() < until) {
      // busy: nothing else of this process runs
    }
    send({ type: 'stall', phase: 'end' });
  } else if (msg.type === 'stop') {
    void stop();
  }
});
process.on('disconnect', () => void stop());

// SIGTERM (the `handover` fault): close with handover, as an application using
// handleSignals does; the process exits once the worker is closed
handleSignals(worker, {
  timeoutMs: 10_000,
  beforeClose: (signal) => {
    stopping = true;
    log({ ev: 'closing', signal });
  },
});

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await worker.close().catch(() => {});
  log({ ev: 'closed' });
  sink.disconnect();
  send({ type: 'closed' });
  closeSync(fd);
  process.exit(0);
}

async function main(): Promise<void> {
  // load the fence script on the sink once, so the transaction's EVALSHA finds it
  await fencedWrite(sink, sinkWarmup(config.sinkBase, config.instance), 1, 'x', {
    ttlMs: 60_000,
  });
  for (let i = 1; ; i++) {
    try {
      await worker.start();
      break;
    } catch (err) {
      // Redis may be away (restart, cut) right when this process starts
      if (i >= 60) throw err;
      await sleep(250);
    }
  }
  log({
    ev: 'start',
    w: config.slot,
    p: config.instance,
    pid: process.pid,
    worker: worker.id,
    session: worker.session,
  });
  send({ type: 'ready', worker: worker.id });
}

main().catch((err: unknown) => {
  process.stderr.write(`worker ${config.slot} failed to start: ${String(err)}\n`);
  process.exit(2);
});
