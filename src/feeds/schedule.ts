import { ClosedError, InvalidOptionError } from '../shared/errors.js';
import type { Logger } from '../shared/options.js';
import type { HandlerContext, Outcome, PairedWorker } from '../worker/worker.js';

/** One tick of a schedule, as its handler receives it. */
export interface Tick {
  readonly name: string;
  /** The tick's wall-clock time, aligned to the interval. */
  readonly at: Date;
  /** `<name>:<ISO time of the tick>`: the same on every side of the pair. */
  readonly taskId: string;
}

export interface ScheduleOptions<T> {
  /** The schedule's name; it prefixes every tick's task id. */
  readonly name: string;
  /** The interval in ms, or a string: `500ms`, `30s`, `5m`, `1h`, `1d`. */
  readonly every: number | string;
  /**
   * Shift of the ticks from the aligned boundaries, in ms: with `every: '1h'` and
   * `offsetMs: 5 * 60_000`, ticks fall at five past every hour. @default 0
   */
  readonly offsetMs?: number;
  /** Runs on exactly one side for each tick. */
  readonly handler: (tick: Tick, ctx: HandlerContext) => T | Promise<T>;
  /** Keep the tick records as fields of this hash (hash-field mode). */
  readonly hash?: { readonly key: string };
  /** Every tick's outcome, on both sides. */
  readonly onOutcome?: (outcome: Outcome<T>, tick: Tick) => void;
  /** A tick whose run() ended without an outcome (Redis unavailable for too long, ...). */
  readonly onError?: (error: Error, tick: Tick) => void;
  /** @default the worker's logger */
  readonly logger?: Logger;
}

export interface Schedule {
  /** The time of the next tick (undefined once stopped). */
  readonly nextTickAt: Date | undefined;
  /** Ticks this side started (run() calls). */
  readonly ticks: number;
  /**
   * Stop firing. With `drain` (default) wait for the outcomes of the ticks in flight.
   */
  stop(opts?: { drain?: boolean }): Promise<void>;
}

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `500ms`, `30s`, `5m`, `1h`, `1d` (or a number of ms) to ms. */
export function parseInterval(every: number | string): number {
  let ms: number;
  if (typeof every === 'number') ms = every;
  else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(String(every));
    if (!m) {
      throw new InvalidOptionError(
        `Expected \`every\` to be a number of ms or a string like '30s', '5m', '1h', got \`${String(every)}\``,
      );
    }
    ms = Number(m[1]) * (UNITS[m[2] as string] as number);
  }
  if (!Number.isFinite(ms) || !Number.isInteger(ms) || ms < 1) {
    throw new InvalidOptionError(
      `Expected \`every\` to be a whole number of ms >= 1, got \`${String(every)}\``,
    );
  }
  return ms;
}

/** The task id of the tick at `at`. */
export function tickTaskId(name: string, at: number): string {
  return `${name}:${new Date(at).toISOString()}`;
}

/** The first tick boundary strictly after `now`. */
export function nextTick(now: number, everyMs: number, offsetMs = 0): number {
  return Math.floor((now - offsetMs) / everyMs) * everyMs + offsetMs + everyMs;
}

// setTimeout's ceiling; longer waits are re-armed
const MAX_TIMER = 2_147_483_647;

/**
 * An HA cron. Every side of the pair fires at the same wall-clock boundaries (the
 * interval aligned to the epoch, plus `offsetMs`), and every tick is one task,
 * `<name>:<tick time ISO>`, so both sides compute the same id and exactly one side
 * runs each tick, including while the other side is down.
 *
 * The wall clock here only names the ticks; it decides no expiry. Hosts whose clocks
 * differ by less than the interval agree on every tick id (a side that fires late finds
 * the tick settled or running and does not run it again). A side that fires late by
 * more than an interval fires the tick it planned and the current one, and skips those
 * in between; ticks missed while both sides were down are not made up.
 *
 * @example
 * const cron = schedule(worker, { name: 'nightly-report', every: '1d', offsetMs: 2 * 3_600_000, handler: sendReport });
 */
export function schedule<T>(worker: PairedWorker, opts: ScheduleOptions<T>): Schedule {
  if (typeof opts !== 'object' || opts === null)
    throw new InvalidOptionError('Expected schedule options');
  if (typeof opts.name !== 'string' || opts.name === '') {
    throw new InvalidOptionError('Expected `name` to be a non-empty string');
  }
  if (typeof opts.handler !== 'function')
    throw new InvalidOptionError('Expected `handler` to be a function');
  const everyMs = parseInterval(opts.every);
  const offsetMs = opts.offsetMs ?? 0;
  if (!Number.isInteger(offsetMs) || offsetMs < 0 || offsetMs >= everyMs) {
    throw new InvalidOptionError(
      `Expected \`offsetMs\` to be an integer in [0, ${everyMs}), got \`${String(offsetMs)}\``,
    );
  }
  const logger = opts.logger ?? worker.logger;
  const inFlight = new Set<Promise<void>>();
  let timer: NodeJS.Timeout | undefined;
  let next: number | undefined = nextTick(Date.now(), everyMs, offsetMs);
  let stopped = false;
  let ticks = 0;

  const fire = (at: number) => {
    const tick: Tick = { name: opts.name, at: new Date(at), taskId: tickTaskId(opts.name, at) };
    ticks += 1;
    const p = worker
      .run(tick.taskId, (ctx) => opts.handler(tick, ctx), opts.hash ? { hash: opts.hash } : {})
      .then(
        (outcome) => {
          try {
            opts.onOutcome?.(outcome, tick);
          } catch (err) {
            logger.warn({ err, tick: tick.taskId }, 'pairlock: schedule onOutcome threw');
          }
        },
        (err: unknown) => {
          if (stopped && err instanceof ClosedError) return;
          if (opts.onError) opts.onError(err as Error, tick);
          else
            logger.warn(
              { err, tick: tick.taskId },
              'pairlock: a scheduled tick ended without an outcome',
            );
        },
      )
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };

  const arm = () => {
    if (stopped || next === undefined) return;
    const planned = next;
    const wait = planned - Date.now();
    timer = setTimeout(
      () => {
        if (stopped) return;
        const now = Date.now();
        if (now < planned) {
          // a long wait re-armed in pieces, or a timer a little early: wait the rest
          arm();
          return;
        }
        // Late by more than an interval (a stalled loop, a suspended host, a clock jump):
        // fire the planned tick (a peer may have run it; then it is only looked up) and
        // the current one, and skip those in between.
        const current = nextTick(now, everyMs, offsetMs) - everyMs;
        next = nextTick(now, everyMs, offsetMs);
        arm();
        fire(planned);
        if (current > planned) fire(current);
      },
      Math.min(Math.max(0, wait), MAX_TIMER),
    );
  };
  arm();

  return {
    get nextTickAt() {
      return next === undefined ? undefined : new Date(next);
    },
    get ticks() {
      return ticks;
    },
    async stop(o: { drain?: boolean } = {}) {
      stopped = true;
      next = undefined;
      clearTimeout(timer);
      if (o.drain ?? true) await Promise.allSettled([...inFlight]);
    },
  };
}
