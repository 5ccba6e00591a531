/**
 * Coalescing of transitions, as graphql/dataloader coalesces loads: every call made in
 * the same event-loop turn with the same group key (same kind of transition, same
 * caller arguments) joins one batch, sent as one script call.
 *
 * Scheduling rule: the first call of a turn schedules one dispatch with `setImmediate`,
 * which runs after the promise jobs of the current callback and after every other
 * callback of the same loop iteration: the replies of one socket read, and every timer
 * that is due together (a hundred handlers that each waited 5 ms), join one batch.
 * (dataloader's `process.nextTick` would dispatch between two timer callbacks, and
 * split them.) No timer: a lone call (a batch of one) waits for nothing but the end
 * of the current iteration. A turn with more than `maxBatchSize` calls is split into
 * several batches, sent back to back.
 *
 * The batch function answers one result per item, in order; an Error in the answer fails
 * that item alone; a rejected batch fails every item of it.
 */
export type BatchFn<G, I, R> = (group: G, items: readonly I[]) => Promise<readonly (R | Error)[]>;

interface Pending<G, I, R> {
  readonly group: G;
  readonly items: I[];
  readonly resolves: ((r: R) => void)[];
  readonly rejects: ((e: unknown) => void)[];
}

export class Batcher<G, I, R> {
  private queue = new Map<string, Pending<G, I, R>>();
  private scheduled = false;

  constructor(
    private readonly fn: BatchFn<G, I, R>,
    private readonly maxBatchSize = 256,
  ) {}

  /** Queue `item` in the batch of `key` (calls whose `group` arguments are equal share a key). */
  load(key: string, group: G, item: I): Promise<R> {
    let pending = this.queue.get(key);
    if (!pending) {
      pending = { group, items: [], resolves: [], rejects: [] };
      this.queue.set(key, pending);
    }
    const p = pending;
    p.items.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.dispatch());
    }
    return new Promise<R>((resolve, reject) => {
      p.resolves.push(resolve);
      p.rejects.push(reject);
    });
  }

  private dispatch(): void {
    this.scheduled = false;
    const queue = this.queue;
    this.queue = new Map();
    for (const p of queue.values()) {
      const n = p.items.length;
      // the common case, one batch: its arrays as they are, no copies
      if (n <= this.maxBatchSize) {
        this.send(p.group, p.items, p.resolves, p.rejects);
        continue;
      }
      for (let i = 0; i < n; i += this.maxBatchSize) {
        const end = i + this.maxBatchSize;
        this.send(
          p.group,
          p.items.slice(i, end),
          p.resolves.slice(i, end),
          p.rejects.slice(i, end),
        );
      }
    }
  }

  private send(
    group: G,
    items: I[],
    resolves: ((r: R) => void)[],
    rejects: ((e: unknown) => void)[],
  ): void {
    let call: Promise<readonly (R | Error)[]>;
    try {
      call = this.fn(group, items);
    } catch (err) {
      call = Promise.reject(err);
    }
    call.then(
      (results) => {
        for (let i = 0; i < resolves.length; i++) {
          const r = results[i];
          if (r instanceof Error) (rejects[i] as (e: unknown) => void)(r);
          else if (r === undefined)
            (rejects[i] as (e: unknown) => void)(
              new Error('the batch returned no result for an item'),
            );
          else (resolves[i] as (r: R) => void)(r);
        }
      },
      (err: unknown) => {
        for (const reject of rejects) reject(err);
      },
    );
  }
}
