/**
 * Checks and translations at the edge of the worker: task ids, the callback API of redis-paired-worker
 * (`lock` / `hlock`), for migration, and a stored record as `inspect()` reports it.
 */

import type { InspectReply } from '../redis/replies.js';
import { InvalidOptionError, InvalidTaskIdError, PairlockError } from '../shared/errors.js';
import { parseError, parseResult } from '../shared/serialize.js';
import type { Handler, LockCallback, Outcome, RunOptions, TaskInfo } from '../shared/types.js';

type Run = (taskId: string, handler: Handler<undefined>, opts: RunOptions) => Promise<Outcome>;

/**
 * `cb(error, acquired, done)`: when this worker wins, `cb(null, true, done)` is called and
 * the task is held until `done(true)` (done) or `done(false)` (failed). A worker that does
 * not run the task gets `cb(null, false, noop)` once the outcome is known. Errors arrive
 * as `cb(error, false, noop)`.
 */
export function callbackRun(
  run: Run,
  taskId: string,
  hashKey: string | undefined,
  cb: LockCallback,
): void {
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
          reject(new PairlockError('ERR_REJECTED', 'the holder reported failure with done(false)'));
      });
    });
  run(taskId, handler, hashKey === undefined ? {} : { hash: { key: hashKey } }).then(
    () => {
      if (!ranHere) cb(null, false, noop);
    },
    (err: unknown) => cb(err as Error, false, noop),
  );
}

/** A record as inspect() reports it, with its remaining lease; null when there is none. */
export function toTaskInfo(taskId: string, rec: InspectReply): TaskInfo | null {
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

// a lone surrogate (a surrogate code unit outside a valid pair), found without encoding
const LONE_SURROGATE = /\p{Cs}/u;

/** A task id a worker accepts, or an InvalidTaskIdError that says why not. */
export function checkTaskId(taskId: unknown, maxBytes: number): asserts taskId is string {
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
  if (bytes > maxBytes) {
    throw new InvalidTaskIdError(
      `the task id is ${bytes} bytes, over \`maxTaskIdBytes\` (${maxBytes})`,
    );
  }
}
