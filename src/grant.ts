import type { GrantKind } from './codes.js';
import type { LeaseLostError } from './errors.js';
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
  /** Resolves when the handler has returned (or thrown). */
  readonly returned: Promise<void>;
  /** Resolves when the execution is over: settled, handed back or given up. */
  readonly over: Promise<void>;
  markReturned!: () => void;
  markOver!: () => void;
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
  ) {
    this.returned = new Promise<void>((r) => {
      this.markReturned = r;
    });
    this.over = new Promise<void>((r) => {
      this.markOver = r;
    });
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
