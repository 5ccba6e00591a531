import type { TaskLocation } from '../redis/keys.js';
import type { OwnerReply, Store } from '../redis/replies.js';
import { RedisOutOfMemoryError, RedisUnavailableError } from '../shared/errors.js';
import type { Logger, ResolvedOptions } from '../shared/options.js';
import type { Session } from './session.js';

/** What a settle needs of its executor. */
export interface SettleContext {
  readonly store: Store;
  readonly options: ResolvedOptions;
  readonly logger: Logger;
  readonly session: Session;
  isClosing(): boolean;
  maxAttempts(): number;
}

/**
 * Settle a grant's outcome. Redis away, or short of memory: retried with backoff while the
 * session lasts ('unavailable' after it). Any other error leaves the outcome unknown (the
 * script may have written first): sent once more, a settle that was written is answered
 * 'repeated'; a second error is raised.
 */
export async function settleWithRetry(
  ctx: SettleContext,
  loc: TaskLocation,
  session: string,
  token: number,
  attempt: number,
  state: 'D' | 'F',
  payload: string,
): Promise<OwnerReply | 'unavailable'> {
  const o = ctx.options;
  let delay = 50;
  let unknown: unknown;
  for (;;) {
    try {
      return await ctx.store.settle(loc, {
        session,
        token,
        attempt,
        state,
        payload,
        retentionMs: o.retentionMs,
        backoffMs: o.failure.backoffMs,
        maxAttempts: ctx.maxAttempts(),
      });
    } catch (err) {
      // refused for want of memory: the record stays ours; retried while the session
      // lasts, as while Redis is away (memory may come back)
      const transient =
        err instanceof RedisUnavailableError || err instanceof RedisOutOfMemoryError;
      if (!transient) {
        // A script that raised may have written first: the outcome is unknown. Sent
        // again, a settle that was written is answered 'repeated', and published again.
        if (unknown !== undefined) throw unknown;
        unknown = err;
        continue;
      }
      if (!ctx.session.valid || ctx.isClosing()) {
        ctx.logger.warn({ err, taskId: loc.taskId }, 'pairlock: settle failed');
        return 'unavailable';
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 1_000);
    }
  }
}
