/** Task feeds: where a pair's tasks come from. */
export {
  nextTick,
  parseInterval,
  type Schedule,
  type ScheduleOptions,
  schedule,
  type Tick,
  tickTaskId,
} from './schedule.js';
export {
  type StreamEntry,
  type StreamFeed,
  type StreamFeedOptions,
  type StreamFeedStats,
  streamFeed,
} from './stream.js';
export { type CallArgs, TaskFailedError, type WrapOptions, wrap } from './wrap.js';
