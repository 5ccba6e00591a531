import { performance } from 'node:perf_hooks';
import { type ClaimArgs, type ClaimReply, type Store, workerOf } from '../redis/replies.js';
import { RedisUnavailableError } from '../shared/errors.js';
import type { Logger, ResolvedOptions } from '../shared/options.js';
import { peerFirstMs } from '../shared/options.js';
import type { Outcome } from '../shared/types.js';
import type { Cover } from './cover.js';
import type { Executor } from './execution.js';
import type { Session } from './session.js';
import type { Slots } from './slots.js';
import type { AnyRun } from './task-run.js';

const now = () => performance.now();

/** What a claim step needs of its worker. */
export interface ClaimStepHost {
  readonly id: string;
  readonly options: ResolvedOptions;
  readonly store: Store;
  readonly lease: Session;
  readonly executor: Executor;
  readonly covering: Cover<AnyRun>;
  readonly slots: Slots;
  /** Runs that only look until the binding is valid again (woken by the worker then). */
  readonly awaitingBinding: Set<AnyRun>;
  readonly logger: Logger;
  closing(): boolean;
  paused(): boolean;
  /** The binding's validity (undefined when sessions are not connection-bound). */
  bindingValid(): boolean | undefined;
  maxAttempts(): number;
  executionOf(run: AnyRun): unknown;
  finish(run: AnyRun, outcome: Outcome<unknown> | undefined, error?: unknown): void;
  wake(run: AnyRun): void;
  /** This worker covers `taskId`, held by the session `holder` (the 'standby' event). */
  standby(taskId: string, holder: string, token: number): void;
}

/**
 * The worker's claim step: one claim of a waiting run (a dry run while paused, unbound or
 * letting its peer retry first), and what each answer leads to: run the grant, cover the
 * holder, take the outcome, wait for a retry, or try again later while Redis is away.
 */
export class ClaimStep {
  constructor(private readonly h: ClaimStepHost) {}

  private claimArgs(dryRun: boolean): ClaimArgs {
    const o = this.h.options;
    return {
      session: this.h.lease.id,
      sessionTtlMs: o.sessionTtlMs,
      taskTimeoutMs: o.taskTimeoutMs,
      retentionMs: o.retentionMs,
      maxAttempts: this.h.maxAttempts(),
      dryRun,
    };
  }

  async step(run: AnyRun): Promise<void> {
    if (this.h.closing()) return;
    run.clearTimers();
    this.h.covering.uncover(run);
    this.h.awaitingBinding.delete(run);
    if (this.h.executionOf(run)) return;
    // The bound connection dropped and its unbind is not answered yet (or its proofs went
    // unanswered past doubtMs): a grant now could be taken over on that evidence, and
    // would be aborted at once. Such a run only looks (a dry run: it still covers a
    // holder, learns an outcome, and gives up when Redis stays away), and claims once the
    // binding is settled (bindingState).
    const unbound = !this.h.paused() && this.h.bindingValid() === false;
    // after its own failure the peer retries first, even when an event wakes this run
    // sooner (say, a quorum claim of the peer that was undone): until then it only looks
    const peerFirstIn = run.peerFirstUntil === undefined ? 0 : run.peerFirstUntil - now();
    const dryRun = this.h.paused() || unbound || peerFirstIn > 0;
    if (!dryRun && !this.h.slots.tryAcquire()) await this.h.slots.acquire();
    let slotHeld = !dryRun;
    try {
      if (run.finished || this.h.closing()) return;
      const sent = now();
      let reply: ClaimReply;
      try {
        reply = await this.h.store.claim(run.loc, this.claimArgs(dryRun));
        run.unavailableSince = undefined;
      } catch (err) {
        // A script that raised an error may have written before it (Redis does not roll a
        // script back): the outcome is unknown, not failed. A look at the task (a dry run
        // answers 'resumed' to a grant this session holds) tells; such a grant is run.
        const held = dryRun ? undefined : await this.heldAfterError(run, err);
        if (!held) {
          this.retryLater(run, err);
          return;
        }
        reply = held;
      }
      if (run.finished || this.h.closing()) {
        // a run() that joins the task later is another run of it: this grant goes back
        if (reply.type === 'granted' || reply.type === 'resumed')
          this.h.executor.giveBackUnrun(run.loc, reply.token);
        return;
      }
      switch (reply.type) {
        case 'granted':
        case 'resumed': {
          // resumed: this session holds the task already (an earlier claim was granted
          // and its reply lost); the script answers with that grant's token, kind and
          // remaining deadline, and it never runs twice under one token
          const grant = reply.type === 'granted' ? reply : { ...reply, from: '' };
          const kept = run.keptFor(grant, reply.type === 'resumed');
          if (kept) {
            const owner = { ...grant, session: this.h.lease.id };
            await this.h.executor.conclude(run, owner, kept.state, kept.payload);
            return;
          }
          run.unsettled = undefined;
          if (!slotHeld) {
            // a paused (dry-run) claim holds no slot: the grant is ours, so it takes one
            await this.h.slots.acquire();
            slotHeld = true;
            if (run.finished || this.h.closing() || this.h.executionOf(run)) return;
          }
          slotHeld = false; // the execution owns the slot now
          // returned, not awaited: this step's frame need not live as long as the handler
          return this.h.executor.track(run, grant, sent);
        }
        case 'held':
          this.watch(run, reply);
          return;
        case 'done':
        case 'failed': {
          if (reply.type === 'done' || reply.terminal) {
            const { owner, token, attempt, payload } = reply;
            const state = reply.type === 'done' ? 'D' : 'F';
            this.h.finish(run, run.outcomeOf(state, owner, token, attempt, payload));
            return;
          }
          run.known = { state: 'F', token: reply.token };
          // The worker that failed lets its peer retry first: it tries the task again itself
          // a moment after the backoff (peerFirstMs); a peer's claim wakes it sooner.
          const mine = workerOf(reply.owner) === this.h.id;
          const delay = reply.retryInMs + (mine ? peerFirstMs(this.h.options) : 0);
          if (mine) run.peerFirstUntil = now() + delay;
          run.after(delay, () => this.h.wake(run));
          return;
        }
        case 'claimable':
          run.known = { state: 'claimable', token: 0 };
          if (peerFirstIn > 0 && !this.h.paused() && !unbound) {
            run.after(peerFirstIn, () => this.h.wake(run));
            return;
          }
          if (unbound) {
            // woken when the binding is valid again; meanwhile it looks again now and then
            this.h.awaitingBinding.add(run);
            if (this.h.bindingValid() !== false) this.h.wake(run);
            else
              run.after(Math.min(this.h.options.otherAttemptIntervalMs, 1_000), () =>
                this.h.wake(run),
              );
            return;
          }
          // paused: covering only; the safety net and events bring it back
          run.after(this.h.options.otherAttemptIntervalMs, () => this.h.wake(run));
          return;
        case 'session-expired':
          // our session lapsed server-side; the heartbeat opens a new one and wakes us
          this.h.lease.check();
          run.after(Math.min(this.h.options.heartbeatIntervalMs, 100), () => this.h.wake(run));
          this.h.lease.renewSoon();
          return;
      }
    } finally {
      if (slotHeld) this.h.slots.release();
    }
  }

  /** After a claim that raised: the grant this session holds of the task, if any. */
  private async heldAfterError(run: AnyRun, err: unknown): Promise<ClaimReply | undefined> {
    if (err instanceof RedisUnavailableError) return undefined; // retried: a claim resumes
    const look = await this.h.store.claim(run.loc, this.claimArgs(true)).catch(() => undefined);
    if (look?.type !== 'resumed') return undefined;
    this.h.logger.warn({ err, taskId: run.loc.taskId }, 'pairlock: a claim failed after granting');
    return look;
  }

  private retryLater(run: AnyRun, err: unknown): void {
    if (!(err instanceof RedisUnavailableError)) {
      this.h.finish(run, undefined, err);
      return;
    }
    const t = now();
    run.unavailableSince ??= t;
    if (t - run.unavailableSince >= this.h.options.unavailableTimeoutMs) {
      this.h.finish(run, undefined, err);
      return;
    }
    const waited = t - run.unavailableSince;
    run.after(Math.min(100 + waited / 4, 2_000), () => this.h.wake(run));
  }

  private watch(run: AnyRun, reply: Extract<ClaimReply, { type: 'held' }>): void {
    run.known = { state: 'R', token: reply.token };
    if (!run.announcedStandby) {
      run.announcedStandby = true;
      this.h.standby(run.loc.taskId, reply.owner, reply.token);
    }
    this.h.covering.watch(run, reply.owner, reply.ownerPttl, reply.deadlineInMs, reply.ownerSeq);
  }
}
