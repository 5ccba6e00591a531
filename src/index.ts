export { type GrantKind, type RejectReason, ReplyCode } from './codes.js';
export {
  ClosedError,
  CorruptRecordError,
  type ErrorCode,
  InvalidOptionError,
  InvalidTaskIdError,
  LeaseLostError,
  NoQuorumError,
  PairlockError,
  RedisUnavailableError,
  RejectedError,
  ResultError,
} from './errors.js';
export type { NamespaceEvent, PairedWorkerEvents } from './events.js';
export { type FencedWriteResult, fencedRead, fencedWrite } from './fencing.js';
export { Keys, type TaskLocation } from './keys.js';
export {
  defaults,
  type FailureOptions,
  type FailurePolicy,
  type Logger,
  type PairedWorkerOptions,
  type RedisConnection,
} from './options.js';
export type { SerializedError } from './serialize.js';
export {
  type CloseOptions,
  driftMs,
  type Handler,
  type HandlerContext,
  type LockCallback,
  type Outcome,
  PairedWorker,
  type Role,
  type RunOptions,
  type TaskInfo,
} from './worker.js';
