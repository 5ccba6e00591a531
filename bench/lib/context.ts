import type { BullCrash } from '../scenarios/crash.js';
import type { BenchRedis } from './redis.js';

/** What every scenario gets from the runner. */
export interface Ctx {
  readonly quick: boolean;
  /** The bench's own Redis (flushed before each measured run). */
  readonly redis: BenchRedis;
  /** Progress lines (stderr), not part of the report. */
  readonly log: (s: string) => void;
  /** Unique per run: key names and namespaces carry it. */
  readonly runId: string;
  /** Long waits started when the run began, collected by their scenario. */
  readonly background?: { readonly bullDefaultCrash?: BullCrash };
}
