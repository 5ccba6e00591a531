/**
 * Rates and latencies over the last minutes, from the events the dashboard receives (and,
 * at start, the transitions of the task history: see history.ts):
 * one bucket per second, a fixed number of buckets, so memory does not grow with the
 * rate of events. Latency samples are kept per bucket up to a fixed count (a uniform
 * sample beyond it), so a storm of settles costs the same memory as a calm minute.
 */

/** Seconds kept: the chart's width. */
export const SERIES_SECONDS = 300;
/** Latency samples kept per second; beyond it a uniform sample (reservoir). */
const SAMPLES_PER_SECOND = 200;
/** Grants whose claim was seen and whose settle is awaited, for the latency; oldest dropped first. */
const MAX_OPEN_GRANTS = 50_000;
/** Latency windows of the chart (10 s each over the kept minutes). */
const LATENCY_WINDOW_S = 10;

interface Bucket {
  /** Unix second of this bucket. */
  second: number;
  done: number;
  failed: number;
  released: number;
  claims: number;
  takeovers: number;
  latencies: number[];
  /** Latencies offered to this bucket (for the reservoir). */
  offered: number;
}

export interface SeriesSnapshot {
  /** Local ms of the first bucket; one value per second from there. */
  startMs: number;
  stepMs: number;
  done: number[];
  failed: number[];
  released: number[];
  claims: number[];
  takeovers: number[];
  /** Takeovers in each of the last minutes, oldest first. */
  takeoversPerMinute: number[];
  /** Takeovers by kind over the kept minutes. */
  takeoverKinds: Record<string, number>;
  /** Claim-to-outcome latency over the last minute (ms), and per 10 s window (oldest first). */
  latency: {
    p50: number | null;
    p99: number | null;
    samples: number;
    windows: { p50: number | null; p99: number | null }[];
  };
}

const emptyBucket = (second: number): Bucket => ({
  second,
  done: 0,
  failed: 0,
  released: 0,
  claims: 0,
  takeovers: 0,
  latencies: [],
  offered: 0,
});

function quantile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] as number;
}

export class Series {
  private readonly buckets: Bucket[] = [];
  /** `<ref>#<token>` → local ms the grant was seen. */
  private readonly open = new Map<string, number>();
  private readonly kinds = new Map<number, Record<string, number>>();

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * The bucket of `at`. A live event stamped before the newest bucket (clock step) counts
   * in the newest; a transition from the history (`past`) in its own second, or nowhere
   * when that second is no longer kept.
   */
  private bucket(at: number, past = false): Bucket | undefined {
    const second = Math.floor(at / 1000);
    const last = this.buckets[this.buckets.length - 1];
    if (last && last.second === second) return last;
    if (last && second < last.second) {
      if (!past) return last;
      if (second <= last.second - SERIES_SECONDS) return undefined;
      let i = this.buckets.length - 1;
      while (i > 0 && (this.buckets[i - 1]?.second ?? 0) >= second) i -= 1;
      // buckets[i] is the first one not before `second`
      if (this.buckets[i]?.second === second) return this.buckets[i];
      const b = emptyBucket(second);
      this.buckets.splice(i, 0, b);
      return b;
    }
    const b = emptyBucket(second);
    this.buckets.push(b);
    const oldest = second - SERIES_SECONDS;
    while ((this.buckets[0]?.second ?? second) <= oldest) this.buckets.shift();
    for (const s of this.kinds.keys()) if (s <= oldest) this.kinds.delete(s);
    return b;
  }

  /**
   * A grant (fresh claim or takeover) of `ref` with `token`, seen at `at`; `past`: read
   * from the history, counted in its own second.
   */
  grant(ref: string, token: number, at: number, takeoverKind?: string, past = false): void {
    // undefined: older than the kept minutes, nothing to count
    const b = this.bucket(at, past);
    if (b && takeoverKind === undefined) b.claims += 1;
    else if (b && takeoverKind !== undefined) {
      b.takeovers += 1;
      let byKind = this.kinds.get(b.second);
      if (!byKind) {
        byKind = {};
        this.kinds.set(b.second, byKind);
      }
      byKind[takeoverKind] = (byKind[takeoverKind] ?? 0) + 1;
    }
    const key = `${ref}#${token}`;
    this.open.delete(key);
    this.open.set(key, at);
    if (this.open.size > MAX_OPEN_GRANTS) {
      const first = this.open.keys().next().value;
      if (first !== undefined) this.open.delete(first);
    }
  }

  /** A settle or release of `ref`'s grant `token`, seen at `at` (`past`: as for `grant`). */
  outcome(ref: string, token: number, state: string, at: number, past = false): void {
    const b = this.bucket(at, past);
    const key = `${ref}#${token}`;
    const since = this.open.get(key);
    this.open.delete(key);
    if (!b) return;
    if (state === 'done') b.done += 1;
    else if (state === 'failed') b.failed += 1;
    else if (state === 'released') b.released += 1;
    if (since === undefined || state === 'released') return;
    const ms = Math.max(0, at - since);
    b.offered += 1;
    if (b.latencies.length < SAMPLES_PER_SECOND) b.latencies.push(ms);
    else {
      const j = Math.floor(Math.random() * b.offered);
      if (j < SAMPLES_PER_SECOND) b.latencies[j] = ms;
    }
  }

  snapshot(): SeriesSnapshot {
    const nowS = Math.floor(this.now() / 1000);
    const first = nowS - SERIES_SECONDS + 1;
    const out: SeriesSnapshot = {
      startMs: first * 1000,
      stepMs: 1000,
      done: new Array(SERIES_SECONDS).fill(0),
      failed: new Array(SERIES_SECONDS).fill(0),
      released: new Array(SERIES_SECONDS).fill(0),
      claims: new Array(SERIES_SECONDS).fill(0),
      takeovers: new Array(SERIES_SECONDS).fill(0),
      takeoversPerMinute: new Array(SERIES_SECONDS / 60).fill(0),
      takeoverKinds: {},
      latency: { p50: null, p99: null, samples: 0, windows: [] },
    };
    const windows: number[][] = Array.from({ length: SERIES_SECONDS / LATENCY_WINDOW_S }, () => []);
    const lastMinute: number[] = [];
    for (const b of this.buckets) {
      const i = b.second - first;
      if (i < 0 || i >= SERIES_SECONDS) continue;
      out.done[i] = b.done;
      out.failed[i] = b.failed;
      out.released[i] = b.released;
      out.claims[i] = b.claims;
      out.takeovers[i] = b.takeovers;
      const minute = Math.floor(i / 60);
      out.takeoversPerMinute[minute] = (out.takeoversPerMinute[minute] ?? 0) + b.takeovers;
      windows[Math.floor(i / LATENCY_WINDOW_S)]?.push(...b.latencies);
      if (b.second > nowS - 60) lastMinute.push(...b.latencies);
    }
    for (const [second, byKind] of this.kinds) {
      if (second < first) continue;
      for (const [k, n] of Object.entries(byKind))
        out.takeoverKinds[k] = (out.takeoverKinds[k] ?? 0) + n;
    }
    lastMinute.sort((a, b) => a - b);
    out.latency.p50 = quantile(lastMinute, 0.5);
    out.latency.p99 = quantile(lastMinute, 0.99);
    out.latency.samples = lastMinute.length;
    out.latency.windows = windows.map((w) => {
      w.sort((a, b) => a - b);
      return { p50: quantile(w, 0.5), p99: quantile(w, 0.99) };
    });
    return out;
  }
}
