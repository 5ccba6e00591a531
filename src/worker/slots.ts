/**
 * Concurrency slots: at most `limit` handlers run at once on a worker. A slot is taken
 * before a claim that may grant (a worker at its limit does not claim), and handed to the
 * execution when the claim grants; the execution gives it back when its handler returns.
 */
export class Slots {
  private active = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  /** Take a slot now if one is free (no promise, no turn); false when all are taken. */
  tryAcquire(): boolean {
    if (this.active >= this.limit) return false;
    this.active += 1;
    return true;
  }

  acquire(): Promise<void> {
    if (this.tryAcquire()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.active -= 1;
  }
}
