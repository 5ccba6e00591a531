import { performance } from 'node:perf_hooks';
import type { TaskLocation } from '../redis/keys.js';
import { workerOf } from '../redis/replies.js';
import { type GrantKind, ranItself } from '../shared/codes.js';
import { parseError, parseResult } from '../shared/serialize.js';
import type { Handler, Outcome, Role } from '../shared/types.js';
import type { CoveredRun } from './cover.js';

// setTimeout's ceiling; longer waits are re-armed
const MAX_TIMER = 2_147_483_647;

/*
 * One run() call's life on a worker. Each task a worker is given is run in one of three
 * roles, decided per task by the claim script in Redis:
 *
 *   WAKE ──claim──▶ granted / resumed ──▶ RUNNING (execution.ts: handler, lease, settle)
 *     ▲               │                        ├── settled done, or failed for good ──▶ OUTCOME
 *     │               │                        ├── failed, a retry may follow ──▶ WAITING (retry time)
 *     │               │                        └── lease lost, settle rejected ──▶ WAKE
 *     │               ├──held──▶ COVERING (cover.ts: holder session, change sequence,
 *     │               │                   task deadline, events) ──▶ WAKE
 *     │               ├──failed, retry later──▶ WAITING until the retry time ──▶ WAKE
 *     │               ├──claimable (paused: dry run)──▶ WAITING a safety-net interval ──▶ WAKE
 *     │               ├──session expired──▶ WAITING for the new session ──▶ WAKE
 *     │               └──done / failed (final)──▶ OUTCOME
 *     └── Redis unavailable ──▶ WAITING with backoff, at most unavailableTimeoutMs ──▶ REJECTED
 *
 * A run is woken by its timers, by namespace events, by the cover, and by the worker
 * (resume, a new session). Wakes while a claim is in flight are folded into one more
 * claim after it (`wakePending`). The caller's signal, a ClosedError or an outcome end
 * it (`finished`); a handler it started goes on, and a later run() of the task joins it.
 *
 * Local time is only ever `performance.now()` (monotonic) and only schedules work or
 * bounds this worker's own belief in its lease; every expiry decision is the server's.
 */

export class Deferred<T> {
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

export class TaskRun<T> implements CoveredRun {
  readonly done = new Deferred<Outcome<T>>();
  finished = false;
  claiming = false;
  wakePending = false;
  /** The holder this run covers, while covered. */
  holder: string | undefined;
  /** What this run last knew of the record (compared with a peek). */
  known: { state: string; token: number } | undefined;
  timers: NodeJS.Timeout[] = [];
  unavailableSince: number | undefined;
  announcedStandby = false;
  readonly startedAt = performance.now();
  /** This worker's last settled grant of the task (it may be the final one). */
  lastOwn: { token: number; kind: GrantKind } | undefined;
  /**
   * After this worker's own failed attempt: until then (monotonic ms) its peer retries
   * first, and this worker only looks (a dry-run claim), whatever wakes it.
   */
  peerFirstUntil: number | undefined;
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
    if (this.timers.length === 0) return;
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
  }

  /** Call `fn` after `ms` unless the run's timers are cleared first (any wait is re-armed past setTimeout's ceiling). */
  after(ms: number, fn: () => void): void {
    const t = setTimeout(
      () => {
        this.timers = this.timers.filter((x) => x !== t);
        if (ms > MAX_TIMER) this.after(ms - MAX_TIMER, fn);
        else fn();
      },
      Math.min(Math.max(0, ms), MAX_TIMER),
    );
    this.timers.push(t);
  }

  /**
   * A result this worker produced before but could not settle, which `grant` may carry
   * instead of running the handler again (the effect has happened): under the same grant
   * (resumed), any kept result; under the next grant from the same session, a done one —
   * nobody held the task in between. (Had another holder come in between, it may have
   * run the task to the end, and the kept result would be stale: the handler runs.)
   */
  keptFor(
    grant: { token: number; from: string },
    resumed: boolean,
  ): { state: 'D' | 'F'; payload: string } | undefined {
    const kept = this.unsettled;
    if (!kept) return undefined;
    if (resumed) return kept.token === grant.token ? kept : undefined;
    const next = grant.token === kept.token + 1 && grant.from === kept.session;
    return next && kept.state === 'D' ? kept : undefined;
  }

  /** The role this worker played in the grant that settled the task with `token`. */
  roleFor(token: number): Role {
    if (this.lastOwn?.token !== token) return 'watched';
    return ranItself(this.lastOwn.kind) ? 'ran' : 'took-over';
  }

  /** The outcome of a settled record (read, or carried by an event), as this run reports it. */
  outcomeOf(
    state: 'D' | 'F',
    owner: string,
    token: number,
    attempts: number,
    payload: string,
  ): Outcome<T> {
    const taskId = this.loc.taskId;
    const role = this.roleFor(token);
    const worker = workerOf(owner);
    if (state === 'D') {
      const result = parseResult(payload) as T;
      return { taskId, role, token, attempts, state: 'done', result, worker };
    }
    return { taskId, role, token, attempts, state: 'failed', error: parseError(payload), worker };
  }
}

/** A run of any result type, as the worker's parts hold it. */
export type AnyRun = TaskRun<unknown>;
