import { InvalidOptionError, PairlockError } from '../shared/errors.js';
import type { SerializedError } from '../shared/serialize.js';
import type { HandlerContext, Outcome, PairedWorker } from '../worker/worker.js';

/** A wrapped call whose task ended in state failed: the error the running side reported. */
export class TaskFailedError extends PairlockError {
  /** The task id (the key of the call). */
  readonly taskId: string;
  /** The error as the running side stored it: name, message and code. */
  readonly error: SerializedError;
  readonly outcome: Outcome<unknown>;

  constructor(outcome: Outcome<unknown>) {
    const e = outcome.error ?? { name: 'Error', message: 'the task failed' };
    super(
      'ERR_TASK_FAILED',
      `task ${JSON.stringify(outcome.taskId)} failed on ${outcome.worker}: ${e.name}: ${e.message}`,
    );
    this.taskId = outcome.taskId;
    this.error = e;
    this.outcome = outcome;
  }
}

/** The arguments a caller passes: the function's parameters without a trailing HandlerContext. */
export type CallArgs<A extends unknown[]> = A extends [...infer Head, HandlerContext] ? Head : A;

export interface WrapOptions<A extends unknown[]> {
  /** The task id of a call: calls with the same key (on any side) run the function once. */
  readonly key: (...args: A) => string;
  /** Keep the records as fields of this hash (hash-field mode). */
  readonly hash?: { readonly key: string };
}

/**
 * Turn an async function into a paired, exactly-once-per-key call. Every caller of the
 * same key, on this worker or on a peer, gets the one result; the function runs on one
 * side. When its last parameter is a HandlerContext, it receives the context (abort
 * signal, fencing token) there, after the caller's arguments. While the record is
 * retained (`retentionMs`), a later call with a settled key returns the stored result
 * without running again. A failed outcome throws TaskFailedError with the error the
 * running side reported. The result must be JSON-serialisable.
 *
 * @example
 * const charge = wrap(
 *   worker,
 *   async (orderId: string, ctx: HandlerContext) => payments.charge(orderId, { fence: ctx.token }),
 *   { key: (orderId) => `charge:${orderId}` },
 * );
 * const receipt = await charge('o-17'); // the same receipt on both sides
 */
export function wrap<A extends unknown[], R>(
  worker: PairedWorker,
  fn: (...args: A) => R | Promise<R>,
  opts: WrapOptions<CallArgs<A>>,
): (...args: CallArgs<A>) => Promise<Awaited<R>> {
  if (typeof fn !== 'function') throw new InvalidOptionError('Expected a function to wrap');
  if (typeof opts?.key !== 'function')
    throw new InvalidOptionError('Expected `key` to be a function of the arguments');
  const runOpts = opts.hash ? { hash: opts.hash } : {};
  return async (...args: CallArgs<A>): Promise<Awaited<R>> => {
    const taskId = opts.key(...args);
    const call = fn as unknown as (...a: unknown[]) => R | Promise<R>;
    const outcome = await worker.run(
      taskId,
      async (ctx) => (await call(...args, ctx)) as Awaited<R>,
      runOpts,
    );
    if (outcome.state === 'failed') throw new TaskFailedError(outcome as Outcome<unknown>);
    return outcome.result as Awaited<R>;
  };
}
