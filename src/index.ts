export type { RunModule, RunTask, RunTaskInput } from './cli/run-module.js';
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
export { type FencedWriteResult, fencedRead, fencedWrite } from './redis/fencing.js';
export { Keys, type TaskLocation } from './redis/keys.js';
export { type GrantKind, type RejectReason, ReplyCode } from './shared/codes.js';
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
} from './shared/errors.js';
export type { NamespaceEvent, PairedWorkerEvents } from './shared/events.js';
export {
  defaults,
  type EvictionCheck,
  type FailureOptions,
  type FailurePolicy,
  type Logger,
  type PairedWorkerOptions,
  type RedisConnection,
} from './shared/options.js';
export type { SerializedError } from './shared/serialize.js';
export { attachMetrics, type MetricsOptions } from './worker/metrics.js';
export {
  type EventLoopMonitor,
  type EventLoopMonitorOptions,
  type HandleSignalsOptions,
  handleSignals,
  type LagEvent,
  monitorEventLoop,
  type SignalHandler,
} from './worker/runtime.js';
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
} from './worker/worker.js';
