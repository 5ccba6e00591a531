export type { RunModule, RunTask, RunTaskInput } from './cli/run-module.js';
export { type GrantKind, type RejectReason, ReplyCode } from './codes.js';
export {
  ClosedError,
  CorruptRecordError,
  type ErrorCode,
  EvictionPolicyError,
  InvalidOptionError,
  InvalidTaskIdError,
  LeaseLostError,
  NoQuorumError,
  PairlockError,
  RedisAuthError,
  RedisOutOfMemoryError,
  RedisUnavailableError,
  RejectedError,
  ResultError,
} from './errors.js';
export type { NamespaceEvent, PairedWorkerEvents } from './events.js';
export {
  type CallArgs,
  nextTick,
  parseInterval,
  type Schedule,
  type ScheduleOptions,
  type StreamEntry,
  type StreamFeed,
  type StreamFeedOptions,
  type StreamFeedStats,
  schedule,
  streamFeed,
  TaskFailedError,
  type Tick,
  tickTaskId,
  type WrapOptions,
  wrap,
} from './feeds/index.js';
export { type FencedWriteResult, fencedRead, fencedWrite } from './fencing.js';
export { Keys, type TaskLocation } from './keys.js';
export { attachMetrics, type MetricsOptions } from './metrics.js';
export {
  defaults,
  type EvictionCheck,
  type FailureOptions,
  type FailurePolicy,
  type Logger,
  type PairedWorkerOptions,
  type RedisConnection,
} from './options.js';
export {
  type EventLoopMonitor,
  type EventLoopMonitorOptions,
  type HandleSignalsOptions,
  handleSignals,
  type LagEvent,
  monitorEventLoop,
  type SignalHandler,
} from './runtime.js';
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
