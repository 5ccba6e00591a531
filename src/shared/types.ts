/** The public shapes of a worker's API: handlers, outcomes, records, close options. */
import type { GrantKind } from './codes.js';
import type { SerializedError } from './serialize.js';

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
  /**
   * True while this worker cannot be certain it still holds its tasks although nothing
   * says it lost them: its connection proofs are late on a connection that stands (a
   * pause of its own or of Redis; the `lease-doubt` event). Nobody can take the task over
   * on connection evidence meanwhile, and `signal` fires if the doubt turns into a loss.
   * A handler may hold back an irreversible step until it is false again.
   */
  readonly inDoubt: boolean;
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
