import { performance } from 'node:perf_hooks';
import type { TaskLocation } from '../redis/keys.js';
import { type Store, workerOf } from '../redis/replies.js';
import { type GrantKind, ranItself } from '../shared/codes.js';
import {
  InvalidOptionError,
  LeaseLostError,
  RedisUnavailableError,
  RejectedError,
  ResultError,
} from '../shared/errors.js';
import type { PairedWorkerEvents } from '../shared/events.js';
import { type Logger, peerFirstMs, type ResolvedOptions } from '../shared/options.js';
import { parseError, parseResult, serializeError, serializeResult } from '../shared/serialize.js';
import type { Outcome } from '../shared/types.js';
import { DeadlineQueue } from './deadlines.js';
import { Execution, type Grant, GrantContext, type ProgressReporter } from './grant.js';
import { InFlight } from './latch.js';
import { driftMs, type Session } from './session.js';
import { settleWithRetry } from './settle.js';
import type { AnyRun } from './task-run.js';

/*
 * Running a grant: the handler with its signal, its deadline and its progress reports,
 * then the settle and what its answer means for the run.
 *
 *   granted / resumed ──▶ HANDLER (signal armed: session lapse, deadline, handover)
 *        └─ returns or throws ──▶ SETTLING ──ok──▶ outcome, or a retry later
 *                                   ├── rejected (lease lost) ──▶ the run claims again
 *                                   └── Redis away past the lease ──▶ result kept; claim again
 *   close(): HANDLER ──signal (handover)──▶ grace ──▶ result settled, or the task released
 */

const now = () => performance.now();

/** What the executor needs from its worker. */
export interface ExecutorContext {
  readonly workerId: string;
  readonly store: Store;
  readonly options: ResolvedOptions;
  readonly logger: Logger;
  readonly session: Session;
  emit<K extends keyof PairedWorkerEvents>(name: K, payload: PairedWorkerEvents[K]): void;
  /** Someone listens to `name` (an event nobody hears is not built). */
  listens(name: keyof PairedWorkerEvents): boolean;
  isClosing(): boolean;
  releaseSlot(): void;
  /** Give the run its outcome. */
  finish(run: AnyRun, outcome: Outcome<unknown>): void;
  /** Claim the task again now. */
  wake(run: AnyRun): void;
  /** Claim the task again after `ms`. */
  wakeLater(run: AnyRun, ms: number): void;
  maxAttempts(): number;
}

export class Executor {
  private readonly executions = new Map<string, Execution>();
  /** execute() calls in flight, settle included (close waits for them). */
  private readonly executing = new InFlight();
  /** Every running grant's deadline, behind one timer. */
  private readonly deadlines = new DeadlineQueue<Execution>(
    (exec) =>
      this.abort(
        exec,
        'deadline',
        `task ${exec.run.loc.taskId} ran past \`taskTimeoutMs\` (${this.ctx.options.taskTimeoutMs} ms)`,
      ),
    now,
  );

  private readonly report: ProgressReporter = (exec, value, note) =>
    this.reportProgress(exec, value, note);

  constructor(private readonly ctx: ExecutorContext) {}

  get(ref: string): Execution | undefined {
    return this.executions.get(ref);
  }

  get size(): number {
    return this.executions.size;
  }

  /** Resolves when every execution in flight has ended, or after `ms`. */
  async drain(ms: number): Promise<void> {
    if (this.executing.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.executing.idle(),
      new Promise((r) => {
        timer = setTimeout(r, ms);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Run a grant (the slot taken for it is the execution's from now on). */
  track(run: AnyRun, grant: Grant, sentAt: number): Promise<void> {
    return this.executing.track(this.execute(run, grant, sentAt));
  }

  /** The session's lease can no longer be proven: abort every handler running under it. */
  lapse(sessionId: string, reason: 'session' | 'connection' = 'session'): void {
    const message =
      reason === 'session'
        ? `the session ${sessionId} could not be renewed in time`
        : `the connection the session ${sessionId} is bound to could not be proven in time`;
    for (const exec of [...this.executions.values()]) {
      if (exec.session === sessionId) this.abort(exec, reason, message);
    }
  }

  private async execute(run: AnyRun, grant: Grant, sentAt: number): Promise<void> {
    const { token, attempt, kind, from } = grant;
    const { taskId } = run.loc;
    const o = this.ctx.options;
    const exec = new Execution(run, token, attempt, kind, this.ctx.session.id);
    // The task's own lease: the server's remaining deadline (a full taskTimeoutMs for a
    // new grant), measured from when the claim was sent, less the drift margin.
    this.deadlines.set(exec, sentAt + grant.deadlineInMs - driftMs(o.taskTimeoutMs));
    this.executions.set(run.loc.ref, exec);
    run.known = undefined;
    if (ranItself(kind)) {
      // the commonest events are built only for a listener
      if (this.ctx.listens('claimed')) this.ctx.emit('claimed', { taskId, token, attempt, kind });
    } else
      this.ctx.emit('took-over', {
        taskId,
        token,
        attempt,
        kind,
        from: workerOf(from),
      });

    let state: 'D' | 'F';
    let payload: string;
    let lostLease: LeaseLostError['reason'] | undefined;
    const lease = this.ctx.session;
    try {
      const pending = run.handler(new GrantContext(exec, taskId, lease, this.report));
      // granted while the bound connection is unproven: a standby may take it over soon.
      // Fired once the handler has started, so that a listener it added sees the abort.
      if (this.ctx.session.connection?.valid === false) this.lapse(exec.session, 'connection');
      const result = await pending;
      try {
        payload = serializeResult(result, o.maxResultBytes);
        state = 'D';
      } catch (err) {
        if (!(err instanceof ResultError)) throw err;
        this.ctx.logger.warn(
          { err, taskId },
          'pairlock: handler returned a result that cannot be stored',
        );
        payload = serializeError(err);
        state = 'F';
      }
    } catch (err) {
      payload = serializeError(err);
      state = 'F';
      // stopped because its lease was lost (the signal's own reason): not the task's failure
      if (exec.aborted && err instanceof LeaseLostError) lostLease = err.reason;
    } finally {
      this.deadlines.delete(exec);
      exec.handlerDone = true;
      exec.markReturned();
      this.ctx.releaseSlot();
    }
    try {
      if (exec.handedOver) {
        await this.handBack(exec, state, payload);
        return;
      }
      if (this.ctx.isClosing()) return;
      // A handler that ended on its lost lease reports nothing: the grant goes back (if it
      // is still ours), and the task is claimed again by this worker or its peer. A lease
      // lost to its session or its connection uses up no attempt (the task did nothing
      // wrong). One that ran to its deadline is a failure (ERR_TASK_TIMEOUT): it uses its
      // attempt and the failure policy decides, so a task that always hangs ends at
      // maxAttempts. Should Redis not answer the give-back, the failure is reported as
      // any other (never run again under this token).
      const unused = lostLease === 'session' || lostLease === 'connection';
      if (lostLease && lostLease !== 'deadline' && (await this.giveBack(exec, unused))) {
        this.forget(exec);
        this.ctx.wake(exec.run);
        return;
      }
      // exec.run: a run() that joined while the handler ran gets this outcome
      await this.conclude(
        exec.run,
        { token, attempt, kind, session: exec.session, exec },
        state,
        payload,
      );
    } finally {
      this.forget(exec);
      exec.markOver();
    }
  }

  private forget(exec: Execution): void {
    const ref = exec.run.loc.ref;
    if (this.executions.get(ref) === exec) this.executions.delete(ref);
  }

  /** Settle a grant and act on the answer: an outcome, a retry, or claiming again. */
  async conclude(
    run: AnyRun,
    grant: { token: number; attempt: number; kind: GrantKind; session: string; exec?: Execution },
    state: 'D' | 'F',
    payload: string,
  ): Promise<void> {
    const { taskId } = run.loc;
    const { token, attempt, kind, exec } = grant;
    const reply = await settleWithRetry(
      this.ctx,
      run.loc,
      grant.session,
      token,
      attempt,
      state,
      payload,
    );
    // The execution is over from here: a run woken below claims again (a run that joined
    // the execution has no claim of its own in flight to fold the wake into). A run() that
    // joined while this settle was on its way is the one the answer is for.
    if (exec) {
      this.forget(exec);
      run = exec.run;
    }
    if (run.finished) return;
    if (reply === 'unavailable') {
      // Redis stayed away past the lease. Keep the result: the effect happened, and
      // running the handler again would repeat it.
      run.unsettled = { token, kind, session: grant.session, state, payload };
      if (
        exec?.abort(
          new LeaseLostError(taskId, 'session', 'Redis was unavailable until the lease ran out'),
        )
      ) {
        this.ctx.emit('lease-lost', { taskId, token, reason: 'session' });
      }
      this.ctx.wake(run);
      return;
    }
    run.unsettled = undefined;
    if (!reply.ok) {
      // reported even when the signal already fired: this is the proof the stale write was refused
      this.ctx.emit('lease-lost', { taskId, token, reason: 'rejected', rejected: reply.reason });
      exec?.abort(new LeaseLostError(taskId, 'rejected', `settle rejected: ${reply.reason}`));
      this.ctx.logger.warn(
        { taskId, token, reason: reply.reason },
        'pairlock: settle rejected; this worker lost the task',
      );
      this.ctx.wake(run);
      return;
    }
    if (this.ctx.listens('settled'))
      this.ctx.emit('settled', {
        taskId,
        state: state === 'D' ? 'done' : 'failed',
        token,
        attempt,
      });
    run.lastOwn = { token, kind };
    const role = ranItself(kind) ? 'ran' : 'took-over';
    if (state === 'D') {
      // the stored JSON, as every other participant gets it
      const result = parseResult(payload);
      const worker = this.ctx.workerId;
      this.ctx.finish(run, {
        taskId,
        state: 'done',
        role,
        result,
        token,
        attempts: attempt,
        worker,
      });
      return;
    }
    if (reply.final) {
      // the settle script says no retry will be granted
      const error = parseError(payload);
      const worker = this.ctx.workerId;
      this.ctx.finish(run, {
        taskId,
        state: 'failed',
        role,
        error,
        token,
        attempts: attempt,
        worker,
      });
      return;
    }
    // The peer retries first: it was woken by this settle. This worker tries the task
    // again itself a moment after the backoff (a peer's claim wakes it sooner, to cover
    // the peer); alone, it honours the backoff.
    const o = this.ctx.options;
    run.known = { state: 'F', token };
    const wait = o.failure.backoffMs + peerFirstMs(o);
    run.peerFirstUntil = now() + wait;
    this.ctx.wakeLater(run, wait);
  }

  /**
   * Give back a grant whose handler stopped on its lost lease (`unused`: it uses no attempt),
   * retried while Redis is away and the session may still be ours: a lease lost to a cut
   * link is given back once the link is back. False: not answered (reported as a failure).
   */
  private async giveBack(exec: Execution, unused: boolean): Promise<boolean> {
    let delay = 50;
    for (;;) {
      try {
        await this.release(exec, unused);
        return true;
      } catch (err) {
        if (!(err instanceof RedisUnavailableError)) return false;
        if (!this.ctx.session.valid || this.ctx.isClosing()) return false;
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
    exec.signal.throwIfAborted();
    const text = note === undefined ? '' : serializeResult(note, this.ctx.options.maxResultBytes);
    const reply = await this.ctx.store.progress(exec.run.loc, {
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
      this.abort(exec, 'rejected', err.message);
      throw err;
    }
  }

  abort(exec: Execution, reason: LeaseLostError['reason'], message: string): void {
    // a handler that has returned is past its lease: what remains is its settle
    if (exec.aborted || exec.handlerDone) return;
    const { taskId } = exec.run.loc;
    this.ctx.emit('lease-lost', { taskId, token: exec.token, reason });
    // a handover is the worker's own close, asked for by its operator: news, not a fault
    const log = reason === 'handover' ? this.ctx.logger.info : this.ctx.logger.warn;
    log.call(
      this.ctx.logger,
      { taskId, token: exec.token, reason },
      `pairlock: lease lost: ${message}`,
    );
    exec.abort(new LeaseLostError(taskId, reason, message));
  }

  /**
   * Hand over whatever still runs. The order is the safety argument: the handler's
   * signal fires first, the handler gets `graceMs` to return, and only then is its task
   * released, so the peer's grant (token + 1) does not start while this handler still
   * runs, unless the handler ignores its signal.
   */
  async handOver(graceMs: number): Promise<void> {
    const execs = [...this.executions.values()].filter((e) => !e.handlerDone);
    for (const exec of execs) {
      exec.handedOver = true;
      this.abort(exec, 'handover', 'the worker is closing and hands the task over');
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
        this.ctx.logger.warn(
          { taskId: exec.run.loc.taskId, graceMs },
          'pairlock: a handler did not return within the handover grace; releasing its task anyway',
        );
        await this.release(exec).catch((err: unknown) => {
          this.ctx.logger.warn(
            { err, taskId: exec.run.loc.taskId },
            'pairlock: release failed; the peer takes over when the session expires',
          );
        });
      }),
    );
    this.deadlines.clear();
  }

  /**
   * close() handed this grant over: a result the handler returned in its grace time is
   * settled (nothing is lost or run again); otherwise the task goes back to the peer.
   */
  private async handBack(exec: Execution, state: 'D' | 'F', payload: string): Promise<void> {
    if (exec.released) return;
    const loc = exec.run.loc;
    const o = this.ctx.options;
    try {
      if (state === 'D') {
        await this.ctx.store.settle(loc, {
          session: exec.session,
          token: exec.token,
          attempt: exec.attempt,
          state,
          payload,
          retentionMs: o.retentionMs,
          backoffMs: o.failure.backoffMs,
          maxAttempts: this.ctx.maxAttempts(),
        });
      } else {
        await this.release(exec);
      }
    } catch (err) {
      this.ctx.logger.warn(
        { err, taskId: loc.taskId },
        'pairlock: hand-back failed; the peer takes over when the session expires',
      );
    }
  }

  /** Give the grant back; `unused`: its handler stopped on a lost lease (no attempt used). */
  private async release(exec: Execution, unused = false): Promise<void> {
    exec.released = true;
    await this.releaseGrant(exec.run.loc, exec.session, exec.token, unused);
  }

  private releaseGrant(loc: TaskLocation, session: string, token: number, unused: boolean) {
    return this.ctx.store.release(loc, {
      session,
      token,
      retentionMs: this.ctx.options.retentionMs,
      unused,
    });
  }

  /**
   * A grant that reached a run() which ended meanwhile (its caller's signal, close): nobody
   * will run it, so it goes back at once, unused, instead of holding the peer off until
   * the deadline.
   */
  giveBackUnrun(loc: TaskLocation, token: number): void {
    this.releaseGrant(loc, this.ctx.session.id, token, true).catch((err: unknown) => {
      this.ctx.logger.warn(
        { err, taskId: loc.taskId },
        'pairlock: could not give back an unused grant; the peer takes over when the session expires',
      );
    });
  }
}
