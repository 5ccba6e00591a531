/** Latency statistics and number formatting shared by every scenario. */
import { readFileSync } from 'node:fs';

export interface Summary {
  readonly n: number;
  readonly min: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] as number;
}

export function summarize(samples: readonly number[]): Summary {
  const s = [...samples].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const sum = s.reduce((a, b) => a + b, 0);
  return {
    n: s.length,
    min: s[0] ?? Number.NaN,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    max: s[s.length - 1] ?? Number.NaN,
    mean: s.length ? sum / s.length : Number.NaN,
  };
}

/** At most `max` samples, evenly picked from the sorted set (for the JSON and the chart). */
export function downsample(samples: readonly number[], max = 1_000): number[] {
  const s = [...samples].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length <= max) return s;
  const out: number[] = [];
  for (let i = 0; i < max; i++) out.push(s[Math.round((i * (s.length - 1)) / (max - 1))] as number);
  return out;
}

/** A duration in ms with precision that suits its size. */
export function ms(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (v >= 10_000) return `${(v / 1000).toFixed(1)} s`;
  if (v >= 100) return `${v.toFixed(0)} ms`;
  if (v >= 10) return `${v.toFixed(1)} ms`;
  if (v >= 1) return `${v.toFixed(2)} ms`;
  return `${(v * 1000).toFixed(0)} µs`;
}

/** A signed difference in ms: `+12.0 ms`, `−72 ms`. */
export function signedMs(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  return `${v < 0 ? '−' : '+'}${ms(Math.abs(v))}`;
}

/** An integer or rate with thousands separators. */
export function num(v: number, digits = 0): string {
  if (!Number.isFinite(v)) return 'n/a';
  return v.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

export function ratio(a: number, b: number): string {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return 'n/a';
  const r = a / b;
  return r >= 100 ? `${r.toFixed(0)}×` : r >= 10 ? `${r.toFixed(1)}×` : `${r.toFixed(2)}×`;
}

export function pct(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  return `${v >= 0 ? '+' : ''}${v.toFixed(1)}%`;
}

export function bytes(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (v >= 1024 * 1024 * 1024) return `${(v / 1024 ** 3).toFixed(1)} GiB`;
  if (v >= 1024 * 1024) return `${(v / 1024 ** 2).toFixed(1)} MiB`;
  if (v >= 1024) return `${(v / 1024).toFixed(1)} KiB`;
  return `${v.toFixed(0)} B`;
}

export const sleep = (t: number) => new Promise<void>((r) => setTimeout(r, t));

/** Wall-clock ms with sub-ms precision, comparable across processes of one machine. */
export const absNow = (): number => performance.timeOrigin + performance.now();

/** CPU time (user + system, ms) a process has used so far; NaN where /proc is missing. */
export function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name may hold spaces: fields start after the closing parenthesis
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1000) / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}

// USER_HZ: 100 on every Linux build Node supports
const CLOCK_TICKS = 100;

/** `n` task indexes, at most `concurrency` in flight, until done or `stopAt` (abs ms). */
export async function pool(
  n: number,
  concurrency: number,
  stopAt: number,
  fn: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < n && absNow() < stopAt) {
      const i = next++;
      await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
}
