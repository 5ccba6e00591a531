/**
 * Due times of many items behind one timer: a standby covering thousands of tasks keeps
 * one timer for the earliest task deadline, not one per task. A binary min-heap keyed by
 * monotonic due time; an item re-added or removed is found again through its slot.
 */
const MAX_TIMER = 2_147_483_647;

export class DeadlineQueue<T> {
  private readonly heap: { at: number; item: T }[] = [];
  private readonly slot = new Map<T, number>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;

  constructor(
    private readonly onDue: (item: T) => void,
    private readonly clock: () => number,
  ) {}

  get size(): number {
    return this.heap.length;
  }

  /** Call `onDue(item)` at `at` (monotonic ms); an item already queued is moved. */
  set(item: T, at: number): void {
    this.delete(item);
    this.heap.push({ at, item });
    this.slot.set(item, this.heap.length - 1);
    this.up(this.heap.length - 1);
    this.arm();
  }

  delete(item: T): void {
    const i = this.slot.get(item);
    if (i === undefined) return;
    this.slot.delete(item);
    const last = this.heap.pop();
    if (last !== undefined && i < this.heap.length) {
      this.heap[i] = last;
      this.slot.set(last.item, i);
      this.down(i);
      this.up(i);
    }
    this.arm();
  }

  clear(): void {
    this.heap.length = 0;
    this.slot.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
  }

  /**
   * Keep the timer while it fires no later than the head: a timer that fires early finds
   * nothing due and is set again for the new head. Re-arming on every change of the head
   * (each task that ends first moves it) was a clearTimeout and a setTimeout per task.
   */
  private arm(): void {
    const head = this.heap[0];
    if (head === undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
      return;
    }
    if (this.timer !== undefined && this.timerAt <= head.at) return;
    clearTimeout(this.timer);
    this.timerAt = head.at;
    const delay = Math.min(Math.max(0, head.at - this.clock()), MAX_TIMER);
    this.timer = setTimeout(() => this.fire(), delay);
  }

  private fire(): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const t = this.clock();
    const due: T[] = [];
    while (this.heap.length > 0 && (this.heap[0] as { at: number }).at <= t) {
      const { item } = this.heap[0] as { item: T };
      this.delete(item);
      due.push(item);
    }
    this.arm();
    for (const item of due) this.onDue(item);
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if ((h[p] as { at: number }).at <= (h[i] as { at: number }).at) break;
      this.swap(i, p);
      i = p;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && (h[l] as { at: number }).at < (h[m] as { at: number }).at) m = l;
      if (r < h.length && (h[r] as { at: number }).at < (h[m] as { at: number }).at) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(a: number, b: number): void {
    const h = this.heap;
    const x = h[a] as { at: number; item: T };
    const y = h[b] as { at: number; item: T };
    h[a] = y;
    h[b] = x;
    this.slot.set(y.item, a);
    this.slot.set(x.item, b);
  }
}
