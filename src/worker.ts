import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { GrantKind } from './codes.js';
import { Cover } from './cover.js';
import {
  ClosedError,
  InvalidOptionError,
  InvalidTaskIdError,
  LeaseLostError,
  PairlockError,
  RedisUnavailableError,
  RejectedError,
  ResultError,
} from './errors.js';
import {
  type PairedWorkerEvents,
  parseNamespaceMessage,
  silentLogger,
  TypedEmitter,
} from './events.js';
import { Keys, type TaskLocation } from './keys.js';
import { type PairedWorkerOptions, type ResolvedOptions, resolveOptions } from './options.js';
import {
  parseError,
  parseResult,
  type SerializedError,
  serializeError,
  serializeResult,
} from './serialize.js';
import { type ClaimReply, type OwnerReply, type Store, workerOf } from './store.js';
import { createStore } from './topology.js';

/*
 * A PairedWorker runs each task it is given in one of three roles, decided per task by
 * the claim script in Redis:
 *
 *   claim ──granted──▶ RUNNING (handler, lease watched) ──settle──▶ outcome
 *     │                    └── lease lost / settle rejected ──▶ claim again
 *     ├──held──────▶ WAITING (standby: pub/sub, holder-session timer, deadline timer,
 *     │                       safety-net re-checks) ──wake──▶ claim again
 *     ├──failed, retry later──▶ WAITING until the retry time ──▶ claim again
 *     └──done / failed (final)──▶ outcome
 *
 * Local time is only ever `performance.now()` (monotonic) and only schedules work or
 * bounds this worker's own belief in its lease; every expiry decision is the server's.
 */

/** What a handler receives. */
export interface HandlerContext {
  readonly taskId: string;
  /** Fires when this worker can no longer prove it holds the task; `signal.reason` is a LeaseLostError. */
  readonly signal: AbortSignal;
  /** Fencing token of this grant: pass it to every downstream write. */
  readonly token: number;
  /** Grants so far, this one included. */
  readonly attempt: number;
  /** How this grant came about. */
  readonly kind: GrantKind;
  /** Record progress (and an optional JSON note) in the task record. Rejects when the lease is gone. */
  progress(value: number, note?: unknown): Promise<void>;
}

export type Handler<T> = (ctx: HandlerContext) => T | Promise<T>;

/** The callback of `lock()` / `hlock()`, as in redis-paired-worker. */
export type LockCallback = (
  error: Error | null,
  acquired: boolean,
  done: (ok?: boolean) => void,
) => void;

export interface RunOptions {
  /** Hash-field mode: the task record is the field `taskId` of this hash. */
  readonly hash?: { readonly key: string };
  /**
   * Stop waiting for the outcome (the run rejects with the signal's reason). A handler
   * already running here goes on, and settles; a later run() of the task joins it.
   */
  readonly signal?: AbortSignal;
}

export type Role = 'ran' | 'watched' | 'took-over';

/** What run() resolves to on every participant. */
export interface Outcome<T = unknown> {
  readonly taskId: string;
  readonly state: 'done' | 'failed';
  /** ran: this worker ran the final attempt; took-over: it ran it after taking over; watched: a peer did. */
  readonly role: Role;
  readonly result?: T;
  readonly error?: SerializedError;
  /** Fencing token of the final attempt. */
  readonly token: number;
  /** Grants made for the task. */
  readonly attempts: number;
  /** Worker id (`<name>:<random>`) that ran the final attempt. */
  readonly worker: string;
}

/** inspect(): a task record as stored, with its remaining lease. */
export interface TaskInfo {
  readonly taskId: string;
  readonly state: 'running' | 'done' | 'failed' | 'released';
  readonly token: number;
  readonly attempt: number;
  readonly worker: string;
  readonly session: string;
  /** running: ms until the record is orphaned (owner session expiry or deadline, whichever first). */
  readonly leaseRemainingMs: number | undefined;
  /** running: ms until the deadline. failed: ms until a retry may be granted. */
  readonly deadlineInMs: number | undefined;
  readonly ownerAlive: boolean;
  readonly progress: number | undefined;
  readonly note?: unknown;
  readonly result?: unknown;
  readonly error?: SerializedError;
  /** Server ms of the grant and of the last transition. */
  readonly claimedAt: number;
  readonly updatedAt: number;
  /** ms the record is still kept (-1: no expiry). */
  readonly keepMs: number;
}

export interface CloseOptions {
  /**
   * Hand held tasks to a peer at once: each handler's signal fires first (reason
   * `handover`), the handler gets up to `graceMs` to return, and only then is its task
   * released, so the peer (token + 1) never starts while this handler still runs. A
   * handler that returned a result in that time has it settled instead.
   * @default false
   */
  readonly handover?: boolean;
  /**
   * How long an aborted handler may take to return before its task is released anyway
   * (a handler that ignores its signal then overlaps the peer; fencing tokens still
   * guard its writes).
   * @default 1000
   */
  readonly graceMs?: number;
  /**
   * Without handover: how long running handlers may take to finish and settle. Tasks
   * still running then are handed over as with `handover: true`, so close() is bounded
   * and nothing is lost.
   * @default 30000
   */
  readonly timeoutMs?: number;
}

// Lease validity, as in Redlock: 1% of the TTL for clock-rate drift, plus 2 ms for
// the precision of Redis expiry. Measured from when the request was sent.
export function driftMs(ttlMs: number): number {
  return Math.floor(ttlMs * 0.01) + 2;
}

const now = () => performance.now();
// a lone surrogate (a surrogate code unit outside a valid pair), found without encoding
const LONE_SURROGATE = /\p{Cs}/u;
// setTimeout's ceiling; longer waits are re-armed
const MAX_TIMER = 2_147_483_647;

interface Execution {
  /** The run() this execution answers; a later run() of the task joins it (see run()). */
  run: TaskRun<unknown>;
  readonly token: number;
  readonly attempt: number;
  readonly kind: GrantKind;
  readonly session: string;
  readonly controller: AbortController;
  readonly deadlineTimer: NodeJS.Timeout;
  /** Resolves when the handler has returned (or thrown). */
  readonly returned: Promise<void>;
  handlerDone: boolean;
  /** close(): the grant goes back to the peer instead of being settled (see doClose). */
  handedOver: boolean;
  /** The grant was released already (the handler outlived the handover grace). */
  released: boolean;
  /** Resolves when the execution is over: settled, handed back or given up. */
  readonly over: Promise<void>;
}

/** A grant to run: a new one, or this session's own grant resumed. */
interface Grant {
  readonly token: number;
  readonly attempt: number;
  readonly kind: GrantKind;
  /** The server's remaining ms to the grant's deadline when it answered. */
  readonly deadlineInMs: number;
  /** The previous owner's session ('' when none or unknown). */
  readonly from: string;
}

class Deferred<T> {
  readonly promise: Promise<T>;
  resolve!: (v: T) => void;
  reject!: (e: unknown) => void;
  constructor() {
    this.promise = new Promise<T>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
  }
}

/** One run() call's life on this worker. */
class TaskRun<T> {
  readonly done = new Deferred<Outcome<T>>();
  finished = false;
  claiming = false;
  wakePending = false;
  /** The holder this run covers, while waiting. */
  holder: string | undefined;
  /** What this run last knew of the record (safety-net comparison). */
  known: { state: string; token: number } | undefined;
  checks = 0;
  timers: NodeJS.Timeout[] = [];
  unavailableSince: number | undefined;
  announcedStandby = false;
  readonly startedAt = now();
  /** This worker's last settled grant of the task (it may be the final one). */
  lastOwn: { token: number; kind: GrantKind } | undefined;
  /**
   * A result this worker produced but could not settle (Redis was away until its lease
   * could no longer be proven). The effect has happened: the next grant, or the same
   * grant if the session survived, settles it instead of running the handler again.
   */
  unsettled:
    | { token: number; kind: GrantKind; session: string; state: 'D' | 'F'; payload: string }
    | undefined;

  constructor(
    readonly loc: TaskLocation,
    readonly handler: Handler<T>,
  ) {}

  clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
  }
}

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

  private sessionId = '';
  private epoch = 0;
  /** Monotonic ms until which this worker can prove its session is alive. */
  private validUntil = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;

  private started: Promise<void> | undefined;
  private closing = false;
  /** close() was called: run() and start() refuse. */
  private closeRequested = false;
  private closePromise: Promise<void> | undefined;
  private paused = false;

  private readonly runs = new Map<string, TaskRun<unknown>>();
  private readonly executions = new Map<string, Execution>();
  /** execute() calls in flight, settle included (close waits for them). */
  private readonly executing = new Set<Promise<void>>();
  private readonly covering: Cover<TaskRun<unknown>>;

  private active = 0;
  private readonly slotWaiters: (() => void)[] = [];

  constructor(opts: PairedWorkerOptions) {
    const options = resolveOptions(opts);
    super(opts.logger ?? silentLogger);
    this.options = options;
    this.keys = new Keys(options.keyPrefix, options.namespace);
    this.id = `${options.name}:${randomBytes(4).toString('hex')}`;
    // one Redis (standalone, Sentinel, Cluster) or quorum `nodes`; see src/topology.ts
    this.store = createStore(opts, options, this.keys);
    this.eventsAreRecords = this.store.eventsAreOutcomes === true;
    this.covering = new Cover<TaskRun<unknown>>({
      store: this.store,
      firstAttemptIntervalMs: options.firstAttemptIntervalMs,
      otherAttemptIntervalMs: options.otherAttemptIntervalMs,
      wake: (run) => this.wake(run),
      peerFailed: (holder, tasks) =>
        this.emit('peer-failed', { session: holder, worker: workerOf(holder), tasks }),
    });
  }

  /** The current session id, `<workerId>#<epoch>` ('' before start). */
  get session(): string {
    return this.sessionId;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Connect, open the session and subscribe. run() calls this itself; call it to fail fast. */
  start(): Promise<void> {
    if (this.closeRequested) return Promise.reject(new ClosedError());
    this.started ??= this.doStart().catch((err) => {
      this.started = undefined;
      throw err;
    });
    return this.started;
  }

  private async doStart(): Promise<void> {
    await this.store.connect();
    await this.openSession();
    await this.store.subscribe(
      (msg) => this.onMessage(msg),
      () => {
        // pub/sub is at-most-once: after a reconnect, re-check every waiting task
        this.covering.recheckAll();
        for (const run of this.runs.values())
          if (run.holder === undefined && run.known && !this.executionOf(run)) this.wake(run);
      },
    );
    this.scheduleHeartbeat();
  }

  // -------------------------------------------------------------------------------
  // Session: one liveness lease per worker, renewed by one call, whatever it holds
  // -------------------------------------------------------------------------------

  private async openSession(): Promise<void> {
    this.epoch += 1;
    const sessionId = `${this.id}#${this.epoch}`;
    const desc = JSON.stringify({
      worker: this.id,
      host: hostname(),
      pid: process.pid,
      startedAt: Date.now(),
    });
    const sent = now();
    const reply = await this.store.session('open', sessionId, this.options.sessionTtlMs, desc);
    if (!reply.ok)
      throw new PairlockError(
        'ERR_LEASE_LOST',
        `could not open session ${sessionId}: ${reply.reason}`,
      );
    this.sessionId = sessionId;
    this.setValidUntil(sent);
  }

  private setValidUntil(sentAt: number): void {
    const ttl = this.options.sessionTtlMs;
    this.validUntil = sentAt + ttl - driftMs(ttl);
    clearTimeout(this.watchdogTimer);
    this.watchdogTimer = setTimeout(
      () => this.checkLease(),
      Math.max(0, this.validUntil - now()) + 1,
    );
    this.watchdogTimer.unref();
  }

  /** The lease can no longer be proven: abort every handler running under the session. */
  private checkLease(): void {
    if (now() < this.validUntil) return;
    for (const exec of [...this.executions.values()]) {
      if (exec.session === this.sessionId) {
        this.abortExecution(
          exec,
          'session',
          `the session ${this.sessionId} could not be renewed in time`,
        );
      }
    }
  }

  private scheduleHeartbeat(delay = this.options.heartbeatIntervalMs): void {
    if (this.closing) return;
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      this.renewing = this.heartbeat().finally(() => {
        this.renewing = undefined;
      });
    }, delay);
  }

  private async heartbeat(): Promise<void> {
    const sessionId = this.sessionId;
    const sent = now();
    try {
      const reply = await this.store.session('renew', sessionId, this.options.sessionTtlMs);
      if (this.closing) return;
      if (reply.ok) {
        this.setValidUntil(sent);
        this.scheduleHeartbeat();
        return;
      }
      // The server let the session expire (a pause or partition longer than the TTL).
      // It is never revived: its grants may already be someone else's.
      const error = new LeaseLostError('', 'session', `session ${sessionId} expired on the server`);
      this.emit('renew-failed', { sessionId, error, sessionLost: true });
      this.logger.warn({ sessionId }, 'pairlock: session expired; opening a new one');
      this.validUntil = 0;
      this.checkLease();
      await this.openSession();
      this.scheduleHeartbeat();
      // waiting runs that could not claim with the old session try again
      for (const run of this.runs.values()) if (!this.executionOf(run)) this.wake(run);
    } catch (err) {
      if (this.closing) return;
      this.emit('renew-failed', { sessionId, error: err as Error, sessionLost: false });
      // Redis being away is expected weather; anything else (a refused command, a
      // script error) is a fault the operator must see
      if (!(err instanceof RedisUnavailableError)) this.emit('error', { error: err as Error });
      this.logger.warn({ err, sessionId }, 'pairlock: session renewal failed; retrying');
      this.checkLease();
      // retry sooner than the interval: the lease is running out
      this.scheduleHeartbeat(Math.min(this.options.heartbeatIntervalMs, 250));
    }
  }

  private executionOf(run: TaskRun<unknown>): Execution | undefined {
    return this.executions.get(run.loc.ref);
  }

  // -------------------------------------------------------------------------------
  // run()
  // -------------------------------------------------------------------------------

  /**
   * Race for `taskId`; run `handler` if this worker wins, otherwise cover the winner.
   * Resolves to the task's outcome on every participant.
   */
  async run<T>(taskId: string, handler: Handler<T>, opts: RunOptions = {}): Promise<Outcome<T>> {
    this.validateTaskId(taskId);
    if (typeof handler !== 'function')
      throw new InvalidOptionError('Expected `handler` to be a function');
    const hashKey = opts.hash?.key;
    if (opts.hash !== undefined && (typeof hashKey !== 'string' || hashKey.length === 0)) {
      throw new InvalidOptionError('Expected `hash.key` to be a non-empty string');
    }
    if (this.closeRequested) throw new ClosedError();
    opts.signal?.throwIfAborted();
    await this.start();
    const loc = this.keys.task(taskId, hashKey);
    const existing = this.runs.get(loc.ref) as TaskRun<T> | undefined;
    // the same task twice on one worker: one race, one outcome
    if (existing) return existing.done.promise;
    const run = new TaskRun<T>(loc, handler);
    this.runs.set(loc.ref, run as TaskRun<unknown>);
    // A handler still running here for an earlier run() that stopped waiting (its signal
    // fired): this run joins that execution and gets its outcome; nothing runs twice.
    const exec = this.executions.get(loc.ref);
    if (exec) exec.run = run as TaskRun<unknown>;
    if (opts.signal) {
      const signal = opts.signal;
      const onAbort = () => this.finish(run as TaskRun<unknown>, undefined, signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      run.done.promise.then(
        () => signal.removeEventListener('abort', onAbort),
        () => signal.removeEventListener('abort', onAbort),
      );
    }
    this.wake(run as TaskRun<unknown>);
    return run.done.promise;
  }

  private validateTaskId(taskId: unknown): asserts taskId is string {
    if (typeof taskId !== 'string') {
      throw new InvalidTaskIdError(`Expected a task id to be a string, got ${typeof taskId}`);
    }
    if (taskId.length === 0)
      throw new InvalidTaskIdError('Expected a task id to be a non-empty string');
    // A lone surrogate becomes U+FFFD in UTF-8: two different ids would name one record.
    if (LONE_SURROGATE.test(taskId)) {
      throw new InvalidTaskIdError(
        'Expected a task id to be well-formed Unicode (it has a lone surrogate)',
      );
    }
    const bytes = Buffer.byteLength(taskId);
    if (bytes > this.options.maxTaskIdBytes) {
      throw new InvalidTaskIdError(
        `the task id is ${bytes} bytes, over \`maxTaskIdBytes\` (${this.options.maxTaskIdBytes})`,
      );
    }
  }

  private finish(
    run: TaskRun<unknown>,
    outcome: Outcome<unknown> | undefined,
    error?: unknown,
  ): void {
    if (run.finished) return;
    run.finished = true;
    run.clearTimers();
    this.covering.uncover(run);
    if (this.runs.get(run.loc.ref) === run) this.runs.delete(run.loc.ref);
    if (outcome) {
      const { taskId, state, role, token, attempts } = outcome;
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
  private wake(run: TaskRun<unknown>): void {
    if (run.finished) return;
    if (run.claiming) {
      run.wakePending = true;
      return;
    }
    run.claiming = true;
    void (async () => {
      try {
        do {
          run.wakePending = false;
          await this.step(run);
        } while (run.wakePending && !run.finished);
      } catch (err) {
        this.finish(run, undefined, err);
      } finally {
        run.claiming = false;
      }
    })();
  }

  private claimArgs(dryRun: boolean) {
    const o = this.options;
    return {
      session: this.sessionId,
      sessionTtlMs: o.sessionTtlMs,
      taskTimeoutMs: o.taskTimeoutMs,
      retentionMs: o.retentionMs,
      maxAttempts: this.maxAttempts(),
      dryRun,
    };
  }

  private async step(run: TaskRun<unknown>): Promise<void> {
    if (this.closing) return;
    run.clearTimers();
    this.covering.uncover(run);
    if (this.executionOf(run)) return;
    const dryRun = this.paused;
    if (!dryRun) await this.acquireSlot();
    let slotHeld = !dryRun;
    try {
      if (run.finished || this.closing) return;
      const sent = now();
      let reply: ClaimReply;
      try {
        reply = await this.store.claim(run.loc, this.claimArgs(dryRun));
        run.unavailableSince = undefined;
      } catch (err) {
        this.retryLater(run, err);
        return;
      }
      if (run.finished || this.closing) return;
      switch (reply.type) {
        case 'granted':
          if (
            run.unsettled?.state === 'D' &&
            reply.token === run.unsettled.token + 1 &&
            reply.from === run.unsettled.session
          ) {
            // The work is done already and nobody held the task since: report it under
            // this grant. (Had another holder come in between, it may have run the task
            // to the end, and our result would be stale: then the handler runs again.)
            await this.conclude(
              run,
              { ...reply, session: this.sessionId },
              'D',
              run.unsettled.payload,
            );
            return;
          }
          run.unsettled = undefined;
          slotHeld = false; // the execution owns the slot now
          await this.track(run, reply, sent);
          return;
        case 'resumed': {
          // This session holds the task already: an earlier claim was granted and its
          // reply lost. The script answers with that grant's token, kind and remaining
          // deadline; it is never run twice under one token.
          const kept = run.unsettled;
          if (kept?.token === reply.token) {
            await this.conclude(
              run,
              { ...reply, session: this.sessionId },
              kept.state,
              kept.payload,
            );
            return;
          }
          if (!slotHeld) {
            // a paused (dry-run) claim holds no slot: the grant is ours, so it takes one
            await this.acquireSlot();
            slotHeld = true;
            if (run.finished || this.closing || this.executionOf(run)) return;
          }
          slotHeld = false;
          await this.track(run, { ...reply, from: '' }, sent);
          return;
        }
        case 'held':
          this.watch(run, reply);
          return;
        case 'done':
          this.finish(run, {
            taskId: run.loc.taskId,
            state: 'done',
            role: this.roleFor(run, reply.token),
            result: parseResult(reply.payload),
            token: reply.token,
            attempts: reply.attempt,
            worker: workerOf(reply.owner),
          });
          return;
        case 'failed': {
          if (reply.terminal) {
            this.finish(run, {
              taskId: run.loc.taskId,
              state: 'failed',
              role: this.roleFor(run, reply.token),
              error: parseError(reply.payload),
              token: reply.token,
              attempts: reply.attempt,
              worker: workerOf(reply.owner),
            });
            return;
          }
          run.known = { state: 'F', token: reply.token };
          // The worker that failed lets its peer retry first: it waits a safety-net
          // interval longer than the backoff before trying the task again itself.
          const mine = workerOf(reply.owner) === this.id;
          const delay = reply.retryInMs + (mine ? this.options.firstAttemptIntervalMs : 0);
          this.timer(run, delay, () => this.wake(run));
          return;
        }
        case 'claimable':
          // paused: covering only; the safety net and events bring it back
          run.known = { state: 'claimable', token: 0 };
          this.timer(run, this.options.otherAttemptIntervalMs, () => this.wake(run));
          return;
        case 'session-expired':
          // our session lapsed server-side; the heartbeat opens a new one and wakes us
          this.checkLease();
          this.timer(run, Math.min(this.options.heartbeatIntervalMs, 100), () => this.wake(run));
          if (!this.renewing) this.scheduleHeartbeat(0);
          return;
      }
    } finally {
      if (slotHeld) this.releaseSlot();
    }
  }

  private roleFor(run: TaskRun<unknown>, token: number): Role {
    if (run.lastOwn?.token !== token) return 'watched';
    return run.lastOwn.kind === 'fresh' ? 'ran' : 'took-over';
  }

  private retryLater(run: TaskRun<unknown>, err: unknown): void {
    if (!(err instanceof RedisUnavailableError)) {
      this.finish(run, undefined, err);
      return;
    }
    const t = now();
    run.unavailableSince ??= t;
    if (t - run.unavailableSince >= this.options.unavailableTimeoutMs) {
      this.finish(run, undefined, err);
      return;
    }
    const waited = t - run.unavailableSince;
    this.timer(run, Math.min(100 + waited / 4, 2_000), () => this.wake(run));
  }

  private timer(run: TaskRun<unknown>, ms: number, fn: () => void): void {
    const t = setTimeout(
      () => {
        run.timers = run.timers.filter((x) => x !== t);
        if (ms > MAX_TIMER) this.timer(run, ms - MAX_TIMER, fn);
        else fn();
      },
      Math.min(Math.max(0, ms), MAX_TIMER),
    );
    run.timers.push(t);
  }

  // -------------------------------------------------------------------------------
  // Running a grant
  // -------------------------------------------------------------------------------

  private track(run: TaskRun<unknown>, grant: Grant, sentAt: number): Promise<void> {
    const p = this.execute(run, grant, sentAt);
    this.executing.add(p);
    return p.finally(() => this.executing.delete(p));
  }

  private async execute(run: TaskRun<unknown>, grant: Grant, sentAt: number): Promise<void> {
    const { token, attempt, kind, from } = grant;
    const { taskId } = run.loc;
    const o = this.options;
    const controller = new AbortController();
    // The task's own lease: the server's remaining deadline (a full taskTimeoutMs for a
    // new grant), measured from when the claim was sent, less the drift margin.
    const deadlineIn = Math.max(0, sentAt + grant.deadlineInMs - driftMs(o.taskTimeoutMs) - now());
    let returned!: () => void;
    let over!: () => void;
    const exec: Execution = {
      run,
      token,
      attempt,
      kind,
      session: this.sessionId,
      controller,
      returned: new Promise<void>((r) => {
        returned = r;
      }),
      handlerDone: false,
      handedOver: false,
      released: false,
      over: new Promise<void>((r) => {
        over = r;
      }),
      deadlineTimer: setTimeout(
        () =>
          this.abortExecution(
            exec,
            'deadline',
            `task ${taskId} ran past \`taskTimeoutMs\` (${o.taskTimeoutMs} ms)`,
          ),
        Math.min(deadlineIn, MAX_TIMER),
      ),
    };
    this.executions.set(run.loc.ref, exec);
    run.known = undefined;
    if (kind === 'fresh') this.emit('claimed', { taskId, token, attempt, kind });
    else this.emit('took-over', { taskId, token, attempt, kind, from: workerOf(from) });

    let state: 'D' | 'F';
    let payload: string;
    let result: unknown;
    try {
      const ctx: HandlerContext = {
        taskId,
        signal: controller.signal,
        token,
        attempt,
        kind,
        progress: (value, note) => this.reportProgress(exec, value, note),
      };
      result = await run.handler(ctx);
      try {
        payload = serializeResult(result, o.maxResultBytes);
        state = 'D';
      } catch (err) {
        if (!(err instanceof ResultError)) throw err;
        this.logger.warn(
          { err, taskId },
          'pairlock: handler returned a result that cannot be stored',
        );
        payload = serializeError(err);
        state = 'F';
      }
    } catch (err) {
      payload = serializeError(err);
      state = 'F';
    } finally {
      clearTimeout(exec.deadlineTimer);
      exec.handlerDone = true;
      returned();
      this.releaseSlot();
    }
    try {
      if (exec.handedOver) {
        await this.handBack(exec, state, payload);
        return;
      }
      if (this.closing) return;
      // exec.run: a run() that joined while the handler ran gets this outcome
      await this.conclude(
        exec.run,
        { token, attempt, kind, session: exec.session, controller },
        state,
        payload,
      );
    } finally {
      this.executions.delete(run.loc.ref);
      over();
    }
  }

  /**
   * close() handed this grant over: a result the handler returned in its grace time is
   * settled (nothing is lost or run again); otherwise the task goes back to the peer.
   */
  private async handBack(exec: Execution, state: 'D' | 'F', payload: string): Promise<void> {
    if (exec.released) return;
    const loc = exec.run.loc;
    const o = this.options;
    try {
      if (state === 'D') {
        await this.store.settle(loc, {
          session: exec.session,
          token: exec.token,
          state,
          payload,
          retentionMs: o.retentionMs,
          backoffMs: o.failure.backoffMs,
          maxAttempts: this.maxAttempts(),
        });
      } else {
        await this.release(exec);
      }
    } catch (err) {
      this.logger.warn(
        { err, taskId: loc.taskId },
        'pairlock: hand-back failed; the peer takes over when the session expires',
      );
    }
  }

  private async release(exec: Execution): Promise<void> {
    exec.released = true;
    await this.store.release(exec.run.loc, {
      session: exec.session,
      token: exec.token,
      retentionMs: this.options.retentionMs,
    });
  }

  private maxAttempts(): number {
    const f = this.options.failure;
    return f.policy === 'give-up' ? 1 : f.maxAttempts;
  }

  /** Settle a grant and act on the answer: an outcome, a retry, or covering the new owner. */
  private async conclude(
    run: TaskRun<unknown>,
    grant: {
      token: number;
      attempt: number;
      kind: GrantKind;
      session: string;
      controller?: AbortController;
    },
    state: 'D' | 'F',
    payload: string,
  ): Promise<void> {
    const { taskId } = run.loc;
    const { token, attempt, kind, controller } = grant;
    const reply = await this.settleWithRetry(run.loc, grant.session, token, state, payload);
    if (run.finished) return;
    if (reply === 'unavailable') {
      // Redis stayed away past the lease. Keep the result: the effect happened, and
      // running the handler again would repeat it.
      run.unsettled = { token, kind, session: grant.session, state, payload };
      if (controller && !controller.signal.aborted) {
        this.emit('lease-lost', { taskId, token, reason: 'session' });
        controller.abort(
          new LeaseLostError(taskId, 'session', 'Redis was unavailable until the lease ran out'),
        );
      }
      this.wake(run);
      return;
    }
    run.unsettled = undefined;
    if (!reply.ok) {
      // reported even when the signal already fired: this is the proof the stale write was refused
      this.emit('lease-lost', { taskId, token, reason: 'rejected', rejected: reply.reason });
      if (controller && !controller.signal.aborted) {
        controller.abort(
          new LeaseLostError(taskId, 'rejected', `settle rejected: ${reply.reason}`),
        );
      }
      this.logger.warn(
        { taskId, token, reason: reply.reason },
        'pairlock: settle rejected; this worker lost the task',
      );
      this.wake(run);
      return;
    }
    this.emit('settled', { taskId, state: state === 'D' ? 'done' : 'failed', token, attempt });
    run.lastOwn = { token, kind };
    if (state === 'D') {
      this.finish(run, {
        taskId,
        state: 'done',
        role: kind === 'fresh' ? 'ran' : 'took-over',
        // the stored JSON, as every other participant gets it
        result: parseResult(payload),
        token,
        attempts: attempt,
        worker: this.id,
      });
      return;
    }
    const o = this.options;
    if (reply.final) {
      // the settle script says no retry will be granted
      this.finish(run, {
        taskId,
        state: 'failed',
        role: kind === 'fresh' ? 'ran' : 'took-over',
        error: parseError(payload),
        token,
        attempts: attempt,
        worker: this.id,
      });
      return;
    }
    // The peer retries first: it was woken by this settle. This worker tries the task
    // again itself only a safety-net interval after the backoff (a peer's claim wakes it
    // sooner, to cover the peer).
    run.known = { state: 'F', token };
    this.timer(run, o.failure.backoffMs + o.firstAttemptIntervalMs, () => this.wake(run));
  }

  private async settleWithRetry(
    loc: TaskLocation,
    session: string,
    token: number,
    state: 'D' | 'F',
    payload: string,
  ): Promise<OwnerReply | 'unavailable'> {
    const o = this.options;
    let delay = 50;
    for (;;) {
      try {
        return await this.store.settle(loc, {
          session,
          token,
          state,
          payload,
          retentionMs: o.retentionMs,
          backoffMs: o.failure.backoffMs,
          maxAttempts: this.maxAttempts(),
        });
      } catch (err) {
        if (!(err instanceof RedisUnavailableError)) throw err;
        if (now() > this.validUntil || this.closing) {
          this.logger.warn({ err, taskId: loc.taskId }, 'pairlock: settle failed');
          return 'unavailable';
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1_000);
      }
    }
  }

  private async reportProgress(exec: Execution, value: number, note: unknown): Promise<void> {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new InvalidOptionError(
        `Expected progress to be a finite number, got \`${String(value)}\``,
      );
    }
    exec.controller.signal.throwIfAborted();
    const text = note === undefined ? '' : serializeResult(note, this.options.maxResultBytes);
    const reply = await this.store.progress(exec.run.loc, {
      session: exec.session,
      token: exec.token,
      progress: value,
      note: text,
    });
    if (!reply.ok) {
      const err = new RejectedError(
        exec.run.loc.taskId,
        reply.reason,
        `progress rejected: ${reply.reason}`,
      );
      this.abortExecution(exec, 'rejected', err.message);
      throw err;
    }
  }

  private abortExecution(exec: Execution, reason: LeaseLostError['reason'], message: string): void {
    // a handler that has returned is past its lease: what remains is its settle
    if (exec.controller.signal.aborted || exec.handlerDone) return;
    const { taskId } = exec.run.loc;
    this.emit('lease-lost', { taskId, token: exec.token, reason });
    this.logger.warn({ taskId, token: exec.token, reason }, `pairlock: lease lost: ${message}`);
    exec.controller.abort(new LeaseLostError(taskId, reason, message));
  }

  // -------------------------------------------------------------------------------
  // Covering a peer (standby): see cover.ts
  // -------------------------------------------------------------------------------

  private watch(run: TaskRun<unknown>, reply: Extract<ClaimReply, { type: 'held' }>): void {
    run.known = { state: 'R', token: reply.token };
    if (!run.announcedStandby) {
      run.announcedStandby = true;
      this.emit('standby', {
        taskId: run.loc.taskId,
        holder: workerOf(reply.owner),
        token: reply.token,
      });
    }
    this.covering.watch(run, reply.owner, reply.ownerPttl, reply.deadlineInMs, reply.ownerSeq);
  }

  private onMessage(msg: string): void {
    for (const ev of parseNamespaceMessage(msg)) {
      this.emit('namespace-event', ev);
      this.covering.onEvent(ev);
      const run = this.runs.get(ev.r);
      if (!run || run.finished || this.executions.has(ev.r)) continue;
      // this worker's own transitions are handled where it made them
      if (ev.o === this.sessionId) continue;
      if (ev.e === 'settled' && ev.s === 'D' && ev.p !== undefined && this.eventsAreRecords) {
        // the event was published by the settle script itself: it is the record's outcome
        this.finish(run, {
          taskId: run.loc.taskId,
          state: 'done',
          role: this.roleFor(run, ev.k),
          result: parseResult(ev.p),
          token: ev.k,
          attempts: ev.a,
          worker: workerOf(ev.o),
        });
        continue;
      }
      this.wake(run);
    }
  }

  // -------------------------------------------------------------------------------
  // Concurrency
  // -------------------------------------------------------------------------------

  private acquireSlot(): Promise<void> {
    if (this.active < this.options.concurrency) {
      this.active += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.slotWaiters.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next) next();
    else this.active -= 1;
  }

  // -------------------------------------------------------------------------------
  // The callback API of redis-paired-worker, for migration
  // -------------------------------------------------------------------------------

  /**
   * `lock(name, cb)` as in redis-paired-worker: `cb(error, acquired, done)`. When this
   * worker wins, `cb(null, true, done)` is called and the task is held until
   * `done(true)` (done) or `done(false)` (failed). A worker that does not run the task
   * gets `cb(null, false, noop)` once the outcome is known. Errors arrive as
   * `cb(error, false, noop)`.
   */
  lock(name: string, cb: LockCallback): void {
    this.callbackRun(name, undefined, cb);
  }

  /** `hlock(key, field, cb)`: as lock(), with the record kept in a field of the hash `key`. */
  hlock(key: string, field: string, cb: LockCallback): void {
    this.callbackRun(field, key, cb);
  }

  private callbackRun(taskId: string, hashKey: string | undefined, cb: LockCallback): void {
    if (typeof cb !== 'function') throw new InvalidOptionError('Expected a callback function');
    const noop = () => {};
    let ranHere = false;
    const handler: Handler<undefined> = () =>
      new Promise<undefined>((resolve, reject) => {
        ranHere = true;
        let called = false;
        cb(null, true, (ok = true) => {
          if (called) return;
          called = true;
          if (ok) resolve(undefined);
          else
            reject(
              new PairlockError('ERR_REJECTED', 'the holder reported failure with done(false)'),
            );
        });
      });
    this.run(taskId, handler, hashKey === undefined ? {} : { hash: { key: hashKey } }).then(
      (outcome) => {
        if (!ranHere || outcome.role === 'watched') {
          if (!ranHere) cb(null, false, noop);
        }
      },
      (err: unknown) => cb(err as Error, false, noop),
    );
  }

  // -------------------------------------------------------------------------------
  // Inspection, maintenance, shutdown
  // -------------------------------------------------------------------------------

  /** The stored record of a task with its remaining lease, or null when there is none. */
  async inspect(taskId: string, opts: { hash?: { key: string } } = {}): Promise<TaskInfo | null> {
    this.validateTaskId(taskId);
    await this.store.connect();
    const rec = await this.store.inspect(this.keys.task(taskId, opts.hash?.key));
    if (!rec.found) return null;
    const running = rec.state === 'running';
    const deadlineIn = rec.deadline > 0 ? rec.deadline - rec.serverNow : undefined;
    const info: TaskInfo = {
      taskId,
      state: rec.state,
      token: rec.token,
      attempt: rec.attempt,
      worker: rec.worker,
      session: rec.session,
      leaseRemainingMs: running ? Math.max(0, Math.min(rec.ownerPttl, deadlineIn ?? 0)) : undefined,
      deadlineInMs: deadlineIn,
      ownerAlive: rec.ownerPttl > 0,
      progress: rec.progress,
      claimedAt: rec.claimedAt,
      updatedAt: rec.updatedAt,
      keepMs: rec.keepMs,
    };
    if (rec.payload === '') return info;
    if (rec.state === 'done') return { ...info, result: parseResult(rec.payload) };
    if (rec.state === 'failed') return { ...info, error: parseError(rec.payload) };
    if (running) return { ...info, note: parseResult(rec.payload) };
    return info;
  }

  /** Stop claiming: this worker keeps covering its peers as a standby (maintenance mode). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    for (const run of this.runs.values()) if (run.known?.state === 'claimable') this.wake(run);
  }

  /** Tasks this worker is running now. */
  get running(): number {
    return this.executions.size;
  }

  /** run() calls waiting for an outcome (running or covering). */
  get pending(): number {
    return this.runs.size;
  }

  /**
   * Stop. Without handover, running handlers finish and settle first. With
   * `{ handover: true }`, held tasks are released at once so a peer takes them over
   * (token + 1), and their handlers are aborted. Pending run() calls reject with
   * ClosedError.
   */
  close(opts: CloseOptions = {}): Promise<void> {
    this.closePromise ??= this.doClose(opts);
    return this.closePromise;
  }

  /**
   * Hand over whatever still runs (everything, with handover: true). The order is the
   * safety argument: the handler's signal fires first, the handler gets `graceMs` to
   * return, and only then is its task released, so the peer's grant (token + 1) does not
   * start while this handler still runs, unless the handler ignores its signal.
   */
  private async handOver(graceMs: number): Promise<void> {
    const execs = [...this.executions.values()].filter((e) => !e.handlerDone);
    for (const exec of execs) {
      exec.handedOver = true;
      this.abortExecution(exec, 'handover', 'the worker is closing and hands the task over');
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(execs.map((e) => e.returned)),
      new Promise((r) => {
        timer = setTimeout(r, graceMs);
      }),
    ]);
    clearTimeout(timer);
    await Promise.all(
      execs.map(async (exec) => {
        if (exec.handlerDone) {
          await exec.over; // settled or released by execute() itself
          return;
        }
        this.logger.warn(
          { taskId: exec.run.loc.taskId, graceMs },
          'pairlock: a handler did not return within the handover grace; releasing its task anyway',
        );
        await this.release(exec).catch((err: unknown) => {
          this.logger.warn(
            { err, taskId: exec.run.loc.taskId },
            'pairlock: release failed; the peer takes over when the session expires',
          );
        });
      }),
    );
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
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.executing]),
        new Promise((r) => {
          timer = setTimeout(r, timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      this.closing = true;
      if (this.executions.size > 0) {
        this.logger.warn(
          { running: this.executions.size, timeoutMs },
          'pairlock: handlers still running at close; handing them over',
        );
      }
    }
    await this.handOver(opts.graceMs ?? 1_000);
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.watchdogTimer);
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
    await this.renewing?.catch(() => {});
    if (wasStarted && this.sessionId)
      await this.store.session('close', this.sessionId, 0).catch(() => {});
    await this.store.close();
  }
}
