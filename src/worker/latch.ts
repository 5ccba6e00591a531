/** A promise opened once from outside (a one-shot signal, made only when someone waits). */
export interface Latch {
  readonly promise: Promise<void>;
  open: () => void;
}

export function latch(): Latch {
  let open!: () => void;
  const promise = new Promise<void>((r) => {
    open = r;
  });
  return { promise, open };
}

/**
 * Work in flight, counted: `idle()` resolves when the count is back to 0. A count and
 * one latch made only while someone waits, rather than a set of promises and a
 * `finally` per item.
 */
export class InFlight {
  private count = 0;
  private waiting: Latch | undefined;

  get size(): number {
    return this.count;
  }

  /** Count `p` in until it settles; answers `p` as it is. */
  track<T>(p: Promise<T>): Promise<T> {
    this.count += 1;
    return p.then(
      (v) => {
        this.done();
        return v;
      },
      (err: unknown) => {
        this.done();
        throw err;
      },
    );
  }

  idle(): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    this.waiting ??= latch();
    return this.waiting.promise;
  }

  private done(): void {
    this.count -= 1;
    if (this.count === 0 && this.waiting) {
      this.waiting.open();
      this.waiting = undefined;
    }
  }
}
