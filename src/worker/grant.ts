import type { GrantKind } from '../shared/codes.js';
import type { LeaseLostError } from '../shared/errors.js';
import type { HandlerContext } from '../shared/types.js';
import { type Latch, latch } from './latch.js';
import type { Session } from './session.js';
import type { AnyRun } from './task-run.js';

/*
 * One grant on this worker: what the claim answered, and its execution's state (the
 * handler's signal, whether it returned, whether it went back). The Executor
 * (execution.ts) runs it.
 */

/** A grant to run: a new one, or this session's own grant resumed. */
export interface Grant {
  readonly token: number;
  readonly attempt: number;
  readonly kind: GrantKind;
  /** The server's remaining ms to the grant's deadline when it answered. */
  readonly deadlineInMs: number;
  /** The previous owner's session ('' when none or unknown). */
  readonly from: string;
}

/** One grant being run on this worker. */
export class Execution {
  handlerDone = false;
  /** close(): the grant goes back to the peer instead of being settled. */
  handedOver = false;
  /** The grant was released already (the handler outlived the handover grace). */
  released = false;
  // `returned` and `over` are asked for only by close() (a handover): their promises are
  // made on first use, not for every grant
  private returnedAt: Latch | undefined;
  private overAt: Latch | undefined;
  private hasReturned = false;
  private isOver = false;
  // The AbortController is made only when the handler reads its signal: most handlers
  // of a busy pair never do, and an abort before that is kept as a reason.
  private controller: AbortController | undefined;
  private abortReason: LeaseLostError | undefined;

  constructor(
    /** The run() this execution answers; a later run() of the task joins it. */
    public run: AnyRun,
    readonly token: number,
    readonly attempt: number,
    readonly kind: GrantKind,
    readonly session: string,
  ) {}

  /** Resolves when the handler has returned (or thrown). */
  get returned(): Promise<void> {
    if (this.hasReturned) return Promise.resolve();
    this.returnedAt ??= latch();
    return this.returnedAt.promise;
  }

  /** Resolves when the execution is over: settled, handed back or given up. */
  get over(): Promise<void> {
    if (this.isOver) return Promise.resolve();
    this.overAt ??= latch();
    return this.overAt.promise;
  }

  markReturned(): void {
    this.hasReturned = true;
    this.returnedAt?.open();
  }

  markOver(): void {
    this.isOver = true;
    this.overAt?.open();
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.abortReason !== undefined;
  }

  /** Fire the handler's signal; false when it had fired already. */
  abort(reason: LeaseLostError): boolean {
    if (this.abortReason) return false;
    this.abortReason = reason;
    this.controller?.abort(reason);
    return true;
  }
}

/** Reports a grant's progress (Executor.reportProgress). */
export type ProgressReporter = (exec: Execution, value: number, note?: unknown) => Promise<void>;

/**
 * What a handler is given. A class, not an object literal with getters and a closure per
 * task; `progress` is still a function of its own once read, so that a handler may take
 * it out of the context (`({ progress }) => ...`).
 */
export class GrantContext implements HandlerContext {
  readonly #exec: Execution;
  readonly #lease: Session;
  readonly #report: ProgressReporter;
  #progress: HandlerContext['progress'] | undefined;

  constructor(exec: Execution, taskId: string, lease: Session, report: ProgressReporter) {
    this.#exec = exec;
    this.#lease = lease;
    this.#report = report;
    this.taskId = taskId;
    this.token = exec.token;
    this.attempt = exec.attempt;
    this.kind = exec.kind;
  }

  readonly taskId: string;
  readonly token: number;
  readonly attempt: number;
  readonly kind: GrantKind;

  get signal(): AbortSignal {
    return this.#exec.signal;
  }

  get inDoubt(): boolean {
    return this.#lease.connection?.inDoubt === true;
  }

  get progress(): HandlerContext['progress'] {
    this.#progress ??= (value, note) => this.#report(this.#exec, value, note);
    return this.#progress;
  }
}
