import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { checkEviction } from '../redis/eviction.js';
import { Keys } from '../redis/keys.js';
import { type Store, workerOf } from '../redis/replies.js';
import { createStore } from '../redis/topology.js';
import { ClosedError, InvalidOptionError } from '../shared/errors.js';
import {
  type PairedWorkerEvents,
  parseNamespaceMessage,
  silentLogger,
  TypedEmitter,
} from '../shared/events.js';
import {
  type PairedWorkerOptions,
  type ResolvedOptions,
  resolveOptions,
} from '../shared/options.js';
import type {
  CloseOptions,
  Handler,
  LockCallback,
  Outcome,
  RunOptions,
  TaskInfo,
} from '../shared/types.js';
import { type Binding, type BindingState, bindSession } from './binding.js';
import { ClaimStep } from './claim-step.js';
import { callbackRun, checkTaskId, toTaskInfo } from './compat.js';
import { Cover } from './cover.js';
import { Executor } from './execution.js';
import { Session } from './session.js';
import { Slots } from './slots.js';
import { type AnyRun, TaskRun } from './task-run.js';

export type {
  CloseOptions,
  Handler,
  HandlerContext,
  LockCallback,
  Outcome,
  Role,
  RunOptions,
  TaskInfo,
} from '../shared/types.js';
export { driftMs } from './session.js';

/*
 * A PairedWorker is made of parts, each in its own file and each testable alone. src/ is
 * grouped by side: worker/ (this process's view), redis/ (what goes to Redis and back),
 * shared/ (options, errors, events, codes and types both use).
 *   worker/session.ts     its liveness lease and heartbeat; binding.ts: bound to its connection
 *   worker/claim-step.ts  one claim, and what each answer leads to
 *   worker/execution.ts   running a grant (grant.ts): handler, signal, deadline, progress, settle
 *   worker/cover.ts       covering peers as a standby, O(peers); deadlines.ts: their timers
 *   worker/task-run.ts    one run() call's life: the state machine, written in its header
 *   redis/store.ts        the transport to Redis, coalescing the transitions of one turn
 *                         (batcher.ts) into one script call per kind (script-args.ts)
 * This file ties them together: run(), events, concurrency slots, and the public API.
 */

const now = () => performance.now();

/**
 * A participant of a worker pair. Give every worker of the pair the same tasks; for
 * each, exactly one runs the handler at a time and every caller gets the outcome.
 *
 * @example
 * const worker = new PairedWorker({ redis: 'redis://127.0.0.1:6379', namespace: 'orders' });
 * const outcome = await worker.run(`order:${id}`, async ({ signal, token }) => charge(id, { signal, token }));
 */
export class PairedWorker extends TypedEmitter<PairedWorkerEvents> {
  readonly id: string;
  readonly options: ResolvedOptions;
  readonly keys: Keys;
  private readonly store: Store;
  /**
   * On one Redis an event is published by the script that made the transition, so a
   * 'settled' event is the outcome itself. In quorum mode one node's event is only a
   * hint, and with replication safety an outcome counts only once a replica has it:
   * there the standby reads the record (Store.eventsAreOutcomes).
   */
  private readonly eventsAreRecords: boolean;
  private readonly lease: Session;
  private binding: Binding | undefined;
  private readonly executor: Executor;
  private readonly covering: Cover<AnyRun>;

  private started: Promise<void> | undefined;
  /** start() has resolved (run() checks close() before it looks at this). */
  private ready = false;
  private closing = false;
  /** close() was called: run() and start() refuse. */
  private closeRequested = false;
  private closePromise: Promise<void> | undefined;
  private paused = false;

  private readonly runs = new Map<string, AnyRun>();
  /**
   * Runs that wait to claim until the session's binding is proven again: a grant made
   * while a standby may take the task over on connection evidence would be aborted at
   * once, released and claimed again, burning a token each round (see step()).
   */
  private readonly awaitingBinding = new Set<AnyRun>();

  private readonly slots: Slots;
  /** One claim and what its answer leads to (claim-step.ts). */
  private readonly claims: ClaimStep;

  constructor(opts: PairedWorkerOptions) {
    const options = resolveOptions(opts);
    super(opts.logger ?? silentLogger);
    this.options = options;
    this.keys = new Keys(options.keyPrefix, options.namespace);
    this.id = `${options.name}:${randomBytes(4).toString('hex')}`;
    // one Redis (standalone, Sentinel, Cluster) or quorum `nodes`; see src/redis/topology.ts
    this.store = createStore(opts, options, this.keys);
    this.eventsAreRecords = this.store.eventsAreOutcomes === true;
    this.slots = new Slots(options.concurrency);
    this.lease = new Session({
      workerId: this.id,
      store: this.store,
      sessionTtlMs: options.sessionTtlMs,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      logger: this.logger,
      onLapse: (sessionId) => this.executor.lapse(sessionId),
      onReopened: () => {
        this.binding?.sessionChanged();
        // waiting runs that could not claim with the old session try again
        for (const run of this.runs.values()) if (!this.executionOf(run)) this.wake(run);
      },
      renewFailed: (sessionId, error, sessionLost) =>
        this.emit('renew-failed', { sessionId, error, sessionLost }),
      fault: (error) => this.emit('error', { error }),
    });
    this.executor = new Executor({
      workerId: this.id,
      store: this.store,
      options,
      logger: this.logger,
      session: this.lease,
      emit: (name, payload) => this.emit(name, payload),
      listens: (name) => this.listenerCount(name) > 0,
      isClosing: () => this.closing,
      releaseSlot: () => this.slots.release(),
      finish: (run, outcome) => this.finish(run, outcome),
      wake: (run) => this.wake(run),
      wakeLater: (run, ms) => run.after(ms, () => this.wake(run)),
      maxAttempts: () => this.maxAttempts(),
    });
    this.covering = new Cover<AnyRun>({
      store: this.store,
      firstAttemptIntervalMs: options.firstAttemptIntervalMs,
      otherAttemptIntervalMs: options.otherAttemptIntervalMs,
      connectionCheckIntervalMs:
        this.store.bind && options.connectionBound ? options.connectionCheckIntervalMs : 0,
      wake: (run) => this.wake(run),
      peerFailed: (holder, tasks) =>
        this.emit('peer-failed', { session: holder, worker: workerOf(holder), tasks }),
    });
    this.claims = new ClaimStep({
      id: this.id,
      options,
      store: this.store,
      lease: this.lease,
      executor: this.executor,
      covering: this.covering,
      slots: this.slots,
      awaitingBinding: this.awaitingBinding,
      logger: this.logger,
      closing: () => this.closing,
      paused: () => this.paused,
      bindingValid: () => this.binding?.valid,
      maxAttempts: () => this.maxAttempts(),
      executionOf: (run) => this.executionOf(run),
      finish: (run, outcome, error) => this.finish(run, outcome, error),
      wake: (run) => this.wake(run),
      standby: (taskId, holder, token) => {
        if (this.listenerCount('standby') > 0)
          this.emit('standby', { taskId, holder: workerOf(holder), token });
      },
    });
  }

  /** The current session id, `<workerId>#<epoch>` ('' before start). */
  get session(): string {
    return this.lease.id;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Connect, open the session and subscribe. run() calls this itself; call it to fail fast. */
  start(): Promise<void> {
    if (this.closeRequested) return Promise.reject(new ClosedError());
    this.started ??= this.doStart().then(
      () => {
        this.ready = true;
      },
      (err: unknown) => {
        this.started = undefined;
        throw err;
      },
    );
    return this.started;
  }

  private async doStart(): Promise<void> {
    await this.store.connect();
    // an evicting Redis may delete sessions and records (src/redis/eviction.ts): 'refuse' waits
    // for every node's answer; 'warn' does not hold the start up (a slow quorum node)
    const eviction = checkEviction({
      store: this.store,
      keys: this.keys,
      mode: this.options.evictionCheck,
      connectionBound: this.options.connectionBound,
      timeoutMs: this.options.connectTimeoutMs,
      logger: this.logger,
    });
    if (this.options.evictionCheck === 'refuse') await eviction;
    else eviction.catch((err: unknown) => this.logger.debug({ err }, 'pairlock: eviction check'));
    await this.lease.open();
    await this.store.subscribe(
      (msg) => this.onMessage(msg),
      () => {
        // pub/sub is at-most-once: after a reconnect, re-check every waiting task
        this.covering.recheckAll();
        for (const run of this.runs.values())
          if (run.holder === undefined && run.known && !this.executionOf(run)) this.wake(run);
      },
    );
    this.lease.start();
    this.binding = bindSession(
      this.store,
      this.lease,
      this.options,
      this.logger,
      this.executor,
      (state, sessionId, was) => this.bindingState(state, sessionId, was),
    );
  }

  /** The binding's state changed: say so, and let waiting runs claim once it is valid. */
  private bindingState(state: BindingState, sessionId: string, was: BindingState): void {
    if (state === 'doubt') this.emit('lease-doubt', { sessionId, inDoubt: true });
    else if (was === 'doubt') this.emit('lease-doubt', { sessionId, inDoubt: false });
    if (state === 'unproven') return;
    const waiting = [...this.awaitingBinding];
    this.awaitingBinding.clear();
    for (const run of waiting) this.wake(run);
  }

  private executionOf(run: AnyRun) {
    return this.executor.get(run.loc.ref);
  }

  private maxAttempts(): number {
    const f = this.options.failure;
    return f.policy === 'give-up' ? 1 : f.maxAttempts;
  }

  // ---- run() ----

  /**
   * Race for `taskId`; run `handler` if this worker wins, otherwise cover the winner.
   * Resolves to the task's outcome on every participant.
   */
  run<T>(taskId: string, handler: Handler<T>, opts: RunOptions = {}): Promise<Outcome<T>> {
    try {
      checkTaskId(taskId, this.options.maxTaskIdBytes);
      if (typeof handler !== 'function')
        throw new InvalidOptionError('Expected `handler` to be a function');
      const hashKey = opts.hash?.key;
      if (opts.hash !== undefined && (typeof hashKey !== 'string' || hashKey.length === 0)) {
        throw new InvalidOptionError('Expected `hash.key` to be a non-empty string');
      }
      if (this.closeRequested) throw new ClosedError();
      opts.signal?.throwIfAborted();
      // once started, a run begins in this very call (no await: a task costs no extra turn)
      if (this.ready) return this.begin(taskId, hashKey, handler, opts);
      return this.start().then(() => this.begin(taskId, hashKey, handler, opts));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private begin<T>(
    taskId: string,
    hashKey: string | undefined,
    handler: Handler<T>,
    opts: RunOptions,
  ): Promise<Outcome<T>> {
    const loc = this.keys.task(taskId, hashKey);
    const existing = this.runs.get(loc.ref) as TaskRun<T> | undefined;
    // the same task twice on one worker: one race, one outcome
    if (existing) return existing.done.promise;
    const run = new TaskRun<T>(loc, handler);
    this.runs.set(loc.ref, run as AnyRun);
    // A handler still running here for an earlier run() that stopped waiting (its signal
    // fired): this run joins that execution and gets its outcome; nothing runs twice.
    const exec = this.executor.get(loc.ref);
    if (exec) exec.run = run as AnyRun;
    if (opts.signal) {
      const signal = opts.signal;
      const onAbort = () => this.finish(run as AnyRun, undefined, signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      run.done.promise.then(
        () => signal.removeEventListener('abort', onAbort),
        () => signal.removeEventListener('abort', onAbort),
      );
    }
    this.wake(run as AnyRun);
    return run.done.promise;
  }

  private finish(run: AnyRun, outcome: Outcome<unknown> | undefined, error?: unknown): void {
    if (run.finished) return;
    run.finished = true;
    run.clearTimers();
    this.covering.uncover(run);
    this.awaitingBinding.delete(run);
    if (this.runs.get(run.loc.ref) === run) this.runs.delete(run.loc.ref);
    if (outcome) {
      const { taskId, state, role, token, attempts } = outcome;
      if (this.listenerCount('outcome') > 0)
        this.emit('outcome', {
          taskId,
          state,
          role,
          token,
          attempts,
          elapsedMs: now() - run.startedAt,
        });
      run.done.resolve(outcome);
    } else run.done.reject(error);
  }

  /** Claim again now (or as soon as the current claim returns). */
  private wake(run: AnyRun): void {
    if (run.finished) return;
    if (run.claiming) {
      run.wakePending = true;
      return;
    }
    run.claiming = true;
    this.stepOnce(run);
  }

  /** One claim step; then another while a wake came in meanwhile (`wakePending`). */
  private stepOnce(run: AnyRun): void {
    run.wakePending = false;
    let step: Promise<void>;
    try {
      step = this.claims.step(run);
    } catch (err) {
      step = Promise.reject(err);
    }
    step.then(
      () => {
        if (run.wakePending && !run.finished) this.stepOnce(run);
        else run.claiming = false;
      },
      (err: unknown) => {
        run.claiming = false;
        this.finish(run, undefined, err);
      },
    );
  }

  private onMessage(msg: string): void {
    // A message is one script call's events, all made by its caller (o): this worker's own
    // are handled where it made them, and need no parse unless someone listens to them.
    if (
      this.listenerCount('namespace-event') === 0 &&
      this.lease.id !== '' &&
      msg.includes(`"o":"${this.lease.id}"`)
    )
      return;
    for (const ev of parseNamespaceMessage(msg)) {
      this.emit('namespace-event', ev);
      this.covering.onEvent(ev);
      const run = this.runs.get(ev.r);
      if (!run || run.finished || this.executor.get(ev.r) !== undefined) continue;
      // this worker's own transitions are handled where it made them
      if (ev.o === this.lease.id) continue;
      if (ev.e === 'settled' && ev.s === 'D' && ev.p !== undefined && this.eventsAreRecords) {
        // the event was published by the settle script itself: it is the record's outcome
        this.finish(run, run.outcomeOf('D', ev.o, ev.k, ev.a, ev.p));
        continue;
      }
      this.wake(run);
    }
  }

  // ---- The callback API of redis-paired-worker, for migration (see compat.ts) ----

  /**
   * `lock(name, cb)` as in redis-paired-worker: `cb(error, acquired, done)`. When this
   * worker wins, `cb(null, true, done)` is called and the task is held until
   * `done(true)` (done) or `done(false)` (failed). A worker that does not run the task
   * gets `cb(null, false, noop)` once the outcome is known. Errors arrive as
   * `cb(error, false, noop)`.
   */
  lock(name: string, cb: LockCallback): void {
    callbackRun((t, h, o) => this.run(t, h, o), name, undefined, cb);
  }

  /** `hlock(key, field, cb)`: as lock(), with the record kept in a field of the hash `key`. */
  hlock(key: string, field: string, cb: LockCallback): void {
    callbackRun((t, h, o) => this.run(t, h, o), field, key, cb);
  }

  // ---- Inspection, maintenance, shutdown ----

  /** The stored record of a task with its remaining lease, or null when there is none. */
  async inspect(taskId: string, opts: { hash?: { key: string } } = {}): Promise<TaskInfo | null> {
    checkTaskId(taskId, this.options.maxTaskIdBytes);
    await this.store.connect();
    return toTaskInfo(taskId, await this.store.inspect(this.keys.task(taskId, opts.hash?.key)));
  }

  /** Stop claiming: this worker keeps covering its peers as a standby (maintenance mode). */
  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.describePaused();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.describePaused();
    for (const run of this.runs.values()) if (run.known?.state === 'claimable') this.wake(run);
  }

  /** A paused worker shows as such (`pairlock stats`, the dashboard): its session says so. */
  private describePaused(): void {
    if (this.closing) return;
    this.lease.setPaused(this.paused).catch((err: unknown) => {
      this.logger.debug({ err }, 'pairlock: could not record the pause in the session');
    });
  }

  /** Tasks this worker is running now. */
  get running(): number {
    return this.executor.size;
  }

  /** run() calls waiting for an outcome (running or covering). */
  get pending(): number {
    return this.runs.size;
  }

  /**
   * Stop. Without handover, running handlers get `timeoutMs` to finish and settle; then,
   * or at once with `{ handover: true }`, what still runs is handed over (see
   * CloseOptions.handover). Pending run() calls reject with ClosedError.
   */
  close(opts: CloseOptions = {}): Promise<void> {
    this.closePromise ??= this.doClose(opts);
    return this.closePromise;
  }

  private async doClose(opts: CloseOptions): Promise<void> {
    this.closeRequested = true;
    const wasStarted = this.started !== undefined;
    if (wasStarted) await this.started?.catch(() => {});
    this.closing = true;
    if (!opts.handover) {
      // let running handlers finish and settle; paused, the worker grants itself nothing new
      this.closing = false;
      this.paused = true;
      const timeoutMs = opts.timeoutMs ?? 30_000;
      await this.executor.drain(timeoutMs);
      this.closing = true;
      if (this.executor.size > 0) {
        this.logger.warn(
          { running: this.executor.size, timeoutMs },
          'pairlock: handlers still running at close; handing them over',
        );
      }
    }
    await this.executor.handOver(opts.graceMs ?? 1_000);
    await Promise.all([this.lease.stop(), this.binding?.stop()]);
    this.covering.clear();
    for (const run of [...this.runs.values()]) {
      this.finish(
        run,
        undefined,
        new ClosedError(
          `the worker closed before task ${JSON.stringify(run.loc.taskId)} had an outcome`,
        ),
      );
    }
    if (wasStarted && this.lease.id)
      await this.store.session('close', this.lease.id, 0).catch(() => {});
    await this.store.close();
  }
}
