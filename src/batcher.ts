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
  readonly waiters: { resolve: (r: R) => void; reject: (e: unknown) => void }[];
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
      pending = { group, items: [], waiters: [] };
      this.queue.set(key, pending);
    }
    const p = new Promise<R>((resolve, reject) => {
      (pending as Pending<G, I, R>).waiters.push({ resolve, reject });
    });
    pending.items.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.dispatch());
    }
    return p;
  }

  private dispatch(): void {
    this.scheduled = false;
    const queue = this.queue;
    this.queue = new Map();
    for (const pending of queue.values()) {
      for (let i = 0; i < pending.items.length; i += this.maxBatchSize) {
        this.send(
          pending.group,
          pending.items.slice(i, i + this.maxBatchSize),
          pending.waiters.slice(i, i + this.maxBatchSize),
        );
      }
    }
  }

  private send(group: G, items: I[], waiters: Pending<G, I, R>['waiters']): void {
    let call: Promise<readonly (R | Error)[]>;
    try {
      call = this.fn(group, items);
    } catch (err) {
      call = Promise.reject(err);
    }
    call.then(
      (results) => {
        waiters.forEach((w, i) => {
          const r = results[i];
          if (r instanceof Error) w.reject(r);
          else if (r === undefined) w.reject(new Error('the batch returned no result for an item'));
          else w.resolve(r);
        });
      },
      (err: unknown) => {
        for (const w of waiters) w.reject(err);
      },
    );
  }
}
