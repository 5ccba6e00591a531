import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidOptionError } from '../shared/errors.js';
import type { PairedWorkerOptions } from '../shared/options.js';
import type { HandlerContext, PairedWorker } from '../worker/worker.js';

/** One task as a `pairlock run` handler receives it. */
export interface RunTask {
  /** The task id (the same on every side). */
  readonly id: string;
  /** What the source attached: the item's `data`, the stream entry, or the schedule tick. */
  readonly data?: unknown;
}

/** What `tasks()` may yield: a task id, or an id with data. */
export type RunTaskInput = string | { readonly id: string; readonly data?: unknown };

/**
 * The module `pairlock run <module>` loads (its default export, or the module itself).
 * It names a handler and exactly one task source; every worker of the pair reads the
 * same source and runs `handler` for the tasks it wins.
 *
 * @example
 * // tasks.ts
 * export default {
 *   stream: { stream: 'orders' },
 *   async handler(task, { signal, token }) {
 *     const entry = task.data as { fields: Record<string, string> };
 *     await ship(entry.fields.order, { signal, fence: token });
 *   },
 * } satisfies RunModule;
 */
export interface RunModule<T = unknown> {
  /** Runs on the side that wins the task. Its result (JSON) is the task's result. */
  handler(task: RunTask, ctx: HandlerContext): T | Promise<T>;
  /**
   * Source 1: the tasks, as an (async) iterable. Both workers call it and must yield the
   * same ids. When it ends, the worker waits for the outcomes and exits.
   */
  tasks?(ctx: {
    worker: PairedWorker;
    signal: AbortSignal;
  }): AsyncIterable<RunTaskInput> | Iterable<RunTaskInput>;
  /** Source 2: a Redis stream, read by each worker through its own consumer group (see streamFeed). */
  stream?: {
    readonly stream: string;
    /** @default '$' */
    readonly startId?: string;
    /** @default `<stream>:<entry id>` */
    readonly taskId?: (entry: { id: string; fields: Record<string, string> }) => string;
    readonly count?: number;
    readonly maxInFlight?: number;
  };
  /** Source 3: an HA cron (see schedule). */
  schedule?: { readonly name: string; readonly every: number | string; readonly offsetMs?: number };
  /** Further worker options; `redis`, `namespace`, `keyPrefix`, `name` and `concurrency` come from the command line. */
  worker?: Omit<PairedWorkerOptions, 'redis' | 'nodes' | 'namespace' | 'keyPrefix' | 'name'>;
}

/** Load and check a run module. */
export async function loadRunModule(path: string): Promise<RunModule> {
  const abs = isAbsolute(path) ? path : resolve(process.cwd(), path);
  const ns = (await import(pathToFileURL(abs).href)) as { default?: unknown } & Record<
    string,
    unknown
  >;
  const candidate = (
    ns.default && typeof ns.default === 'object' && 'handler' in (ns.default as object)
      ? ns.default
      : ns
  ) as Partial<RunModule>;
  if (typeof candidate.handler !== 'function') {
    throw new InvalidOptionError(
      `${path}: expected a \`handler\` function (as a named export or in the default export)`,
    );
  }
  const sources = (['tasks', 'stream', 'schedule'] as const).filter(
    (k) => candidate[k] !== undefined,
  );
  if (sources.length !== 1) {
    throw new InvalidOptionError(
      `${path}: expected exactly one task source, \`tasks\`, \`stream\` or \`schedule\`; found ${
        sources.length === 0 ? 'none' : sources.join(', ')
      }`,
    );
  }
  if (candidate.tasks !== undefined && typeof candidate.tasks !== 'function') {
    throw new InvalidOptionError(
      `${path}: \`tasks\` must be a function returning an (async) iterable of task ids`,
    );
  }
  return candidate as RunModule;
}
