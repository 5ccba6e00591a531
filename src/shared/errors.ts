import type { RejectReason } from './codes.js';

/** Stable error codes: match on `error.code`, never on the message. */
export type ErrorCode =
  | 'ERR_INVALID_OPTION'
  | 'ERR_INVALID_TASK_ID'
  | 'ERR_RESULT_NOT_SERIALISABLE'
  | 'ERR_RESULT_TOO_LARGE'
  | 'ERR_REDIS_UNAVAILABLE'
  | 'ERR_REDIS_AUTH'
  | 'ERR_CORRUPT_RECORD'
  | 'ERR_NEWER_FORMAT'
  | 'ERR_WRONG_TYPE'
  | 'ERR_LEASE_LOST'
  | 'ERR_REJECTED'
  | 'ERR_CLOSED'
  | 'ERR_NO_QUORUM'
  | 'ERR_TASK_TIMEOUT'
  | 'ERR_TASK_FAILED'
  | 'ERR_HANDOVER'
  | 'ERR_EVICTION_POLICY'
  | 'ERR_REDIS_OOM';

/** Base class of every error pairlock throws or reports. */
export class PairlockError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An option or argument is out of its domain. The message names the option. */
export class InvalidOptionError extends PairlockError {
  constructor(message: string) {
    super('ERR_INVALID_OPTION', message);
  }
}

export class InvalidTaskIdError extends PairlockError {
  constructor(message: string) {
    super('ERR_INVALID_TASK_ID', message);
  }
}

/** The handler's result cannot be stored: not JSON-serialisable, or over `maxResultBytes`. */
export class ResultError extends PairlockError {}

/** Redis did not answer within the bounded wait. */
export class RedisUnavailableError extends PairlockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_REDIS_UNAVAILABLE', message, options);
  }
}

/**
 * Redis refused the credentials while connecting (WRONGPASS, NOAUTH, an invalid
 * username-password pair, NOPERM on AUTH): start() and run() reject with this at once,
 * not after `connectTimeoutMs`. Not a kind of unavailability: retrying cannot help until
 * the user or password given in `redis` (or `nodes`) is corrected. The message names the
 * address and Redis's reply, never the password.
 */
export class RedisAuthError extends PairlockError {
  constructor(message: string) {
    super('ERR_REDIS_AUTH', message);
  }
}

/**
 * Redis refused a write for want of memory (`maxmemory` reached under `noeviction`). A
 * claim is refused whole, before it grants anything: run() rejects with this at once. A
 * settle refused so is retried while the session lasts (the record stays the holder's).
 */
export class RedisOutOfMemoryError extends PairlockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_REDIS_OOM', message, options);
  }
}

/** A record in Redis that pairlock cannot read: garbage, a newer format, or a key of another type. */
export class CorruptRecordError extends PairlockError {
  readonly key: string;
  readonly field: string | undefined;
  constructor(
    code: 'ERR_CORRUPT_RECORD' | 'ERR_NEWER_FORMAT' | 'ERR_WRONG_TYPE',
    message: string,
    key: string,
    field?: string,
  ) {
    super(code, message);
    this.key = key;
    this.field = field;
  }
}

/**
 * The holder can no longer prove it holds the task (its session lapsed, the connection its
 * session is bound to went unproven — reason `connection` —, the task's deadline passed,
 * or it handed the task over). The handler's AbortSignal carries this as `signal.reason`.
 */
export class LeaseLostError extends PairlockError {
  readonly taskId: string;
  readonly reason: 'session' | 'connection' | 'deadline' | 'handover' | 'closed' | 'rejected';
  constructor(taskId: string, reason: LeaseLostError['reason'], message: string) {
    super(reason === 'deadline' ? 'ERR_TASK_TIMEOUT' : 'ERR_LEASE_LOST', message);
    this.taskId = taskId;
    this.reason = reason;
  }
}

/** Redis turned away a settle, release or progress: this worker no longer owns the grant. */
export class RejectedError extends PairlockError {
  readonly reason: RejectReason;
  readonly taskId: string;
  constructor(taskId: string, reason: RejectReason, message: string) {
    super('ERR_REJECTED', message);
    this.taskId = taskId;
    this.reason = reason;
  }
}

/** The worker was closed before the task's outcome was known. */
export class ClosedError extends PairlockError {
  constructor(message = 'the worker is closed') {
    super('ERR_CLOSED', message);
  }
}

/**
 * Quorum mode: a majority of the Redis nodes could not be reached or did not agree. A kind
 * of unavailability: a waiting run() retries it, as it retries one Redis that is away, and
 * reports it once `unavailableTimeoutMs` has passed.
 */
export class NoQuorumError extends RedisUnavailableError {
  override readonly code: ErrorCode = 'ERR_NO_QUORUM';
}

/**
 * The Redis a worker coordinates through may evict keys (its `maxmemory-policy` is not
 * `noeviction`), and the worker was told to refuse that (option `evictionCheck: 'refuse'`).
 */
export class EvictionPolicyError extends PairlockError {
  /** Each node with an evicting policy: its address, `maxmemory-policy` and `maxmemory`. */
  readonly nodes: readonly { node: string; policy: string; maxmemory: number }[];
  constructor(message: string, nodes: EvictionPolicyError['nodes']) {
    super('ERR_EVICTION_POLICY', message);
    this.nodes = nodes;
  }
}
