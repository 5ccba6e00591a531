import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { InvalidOptionError } from '../shared/errors.js';
import { silentLogger } from '../shared/events.js';
import type { Logger } from '../shared/options.js';
import type { PairedWorker } from './worker.js';

// ---------------------------------------------------------------------------------
// Shutdown on signals
// ---------------------------------------------------------------------------------

export interface HandleSignalsOptions {
  /** Release held tasks so the peer takes them over at once (token + 1). @default true */
  readonly handover?: boolean;
  /**
   * With handover: how long an aborted handler may take to return before its task is
   * released anyway (see CloseOptions.graceMs).
   * @default 1000
   */
  readonly graceMs?: number;
  /** @default ['SIGTERM', 'SIGINT'] */
  readonly signals?: readonly NodeJS.Signals[];
  /** Exit the process once the workers are closed (code 0, or 1 when a close failed). @default true */
  readonly exit?: boolean;
  /**
   * Bound on the whole shutdown; past it the process exits with code 1 (when `exit`).
   * Without handover, running handlers are waited for, so keep this above your longest task.
   * @default 30000
   */
  readonly timeoutMs?: number;
  /** Runs first, before the workers close: stop feeds and servers here. */
  readonly beforeClose?: (signal: NodeJS.Signals) => void | Promise<void>;
  readonly logger?: Logger;
}

export interface SignalHandler {
  /** Resolves with the signal once the workers are closed after one (never without a signal). */
  readonly closed: Promise<NodeJS.Signals>;
  /** Remove the signal listeners (the workers are left as they are). */
  dispose(): void;
}

/**
 * Close workers on SIGTERM / SIGINT, by default with handover: what they hold is
 * released and the peer takes it over at once, instead of after `sessionTtlMs`. A
 * second signal during the shutdown exits at once (code 130), leaving the rest to the
 * peer's takeover on session expiry.
 *
 * @example
 * handleSignals(worker, { beforeClose: () => feed.stop({ drain: false }) });
 */
export function handleSignals(
  workers: PairedWorker | readonly PairedWorker[],
  opts: HandleSignalsOptions = {},
): SignalHandler {
  const list = Array.isArray(workers) ? [...workers] : [workers as PairedWorker];
  const signals = opts.signals ?? (['SIGTERM', 'SIGINT'] as const);
  const handover = opts.handover ?? true;
  const exit = opts.exit ?? true;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const logger = opts.logger ?? silentLogger;
  let resolveClosed!: (s: NodeJS.Signals) => void;
  const closed = new Promise<NodeJS.Signals>((r) => {
    resolveClosed = r;
  });
  let shuttingDown = false;

  const onSignal = (signal: NodeJS.Signals) => {
    if (shuttingDown) {
      logger.warn({ signal }, 'pairlock: second signal during shutdown; exiting now');
      if (exit) process.exit(130);
      return;
    }
    shuttingDown = true;
    logger.info({ signal, handover, workers: list.length }, 'pairlock: closing workers');
    const timer = setTimeout(() => {
      logger.error({ signal, timeoutMs }, 'pairlock: shutdown took too long; exiting');
      if (exit) process.exit(1);
    }, timeoutMs);
    timer.unref();
    void (async () => {
      let failed = false;
      try {
        await opts.beforeClose?.(signal);
      } catch (err) {
        failed = true;
        logger.error({ err }, 'pairlock: beforeClose failed');
      }
      const results = await Promise.allSettled(
        list.map((w) => w.close({ handover, graceMs: opts.graceMs })),
      );
      for (const r of results) {
        if (r.status === 'rejected') {
          failed = true;
          logger.error({ err: r.reason }, 'pairlock: a worker failed to close');
        }
      }
      clearTimeout(timer);
      resolveClosed(signal);
      if (exit) process.exit(failed ? 1 : 0);
    })();
  };

  for (const s of signals) process.on(s, onSignal);
  return {
    closed,
    dispose() {
      for (const s of signals) process.off(s, onSignal);
    },
  };
}

// ---------------------------------------------------------------------------------
// Event-loop lag
// ---------------------------------------------------------------------------------

export interface EventLoopMonitorOptions {
  /** A stall longer than this is reported. @default 100 */
  readonly thresholdMs?: number;
  /** How often the loop is sampled. @default 500 */
  readonly intervalMs?: number;
  /** Warned on every lag. */
  readonly logger?: Logger;
}

export interface LagEvent {
  /** How much later than planned the sampling timer ran, in ms. */
  readonly lagMs: number;
  readonly thresholdMs: number;
  /** Date.now() when it was noticed. */
  readonly at: number;
}

/**
 * Watches the event loop with a timer drift check: a timer due every `intervalMs` that
 * runs `lagMs` late means the loop was blocked that long. Heartbeats run on this loop:
 * a stall close to `sessionTtlMs` ends the session and hands this worker's tasks to its
 * peer, which is why a lag is worth a warning well before that.
 *
 * Emits 'lag' (LagEvent) for every stall over the threshold.
 */
export class EventLoopMonitor extends EventEmitter<{ lag: [LagEvent] }> {
  readonly thresholdMs: number;
  readonly intervalMs: number;
  /** Stalls over the threshold so far. */
  lagCount = 0;
  /** The longest stall seen, in ms. */
  maxLagMs = 0;
  /** The last sample's lag, in ms (0 when the loop was on time). */
  lastLagMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private expected = 0;
  private readonly logger: Logger;

  constructor(opts: EventLoopMonitorOptions = {}) {
    super();
    this.thresholdMs = opts.thresholdMs ?? 100;
    this.intervalMs = opts.intervalMs ?? 500;
    if (!Number.isFinite(this.thresholdMs) || this.thresholdMs <= 0) {
      throw new InvalidOptionError(
        `Expected \`thresholdMs\` to be a number > 0, got \`${String(opts.thresholdMs)}\``,
      );
    }
    if (!Number.isInteger(this.intervalMs) || this.intervalMs < 1) {
      throw new InvalidOptionError(
        `Expected \`intervalMs\` to be an integer >= 1, got \`${String(opts.intervalMs)}\``,
      );
    }
    this.logger = opts.logger ?? silentLogger;
  }

  get running(): boolean {
    return this.timer !== undefined;
  }

  start(): this {
    if (this.timer) return this;
    this.schedule();
    return this;
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    this.expected = performance.now() + this.intervalMs;
    this.timer = setTimeout(() => this.sample(), this.intervalMs);
    // the monitor alone never keeps a process alive
    this.timer.unref();
  }

  private sample(): void {
    const lag = Math.max(0, performance.now() - this.expected);
    this.lastLagMs = lag;
    if (lag > this.maxLagMs) this.maxLagMs = lag;
    if (lag >= this.thresholdMs) {
      this.lagCount += 1;
      const ev: LagEvent = {
        lagMs: Math.round(lag),
        thresholdMs: this.thresholdMs,
        at: Date.now(),
      };
      this.logger.warn(
        { lagMs: ev.lagMs, thresholdMs: this.thresholdMs },
        'pairlock: the event loop was blocked; session heartbeats run on it, and a stall near sessionTtlMs hands this worker’s tasks to its peer',
      );
      this.emit('lag', ev);
    }
    if (this.timer) this.schedule();
  }
}

/** Start an EventLoopMonitor. Stop it with `monitor.stop()`. */
export function monitorEventLoop(opts: EventLoopMonitorOptions = {}): EventLoopMonitor {
  return new EventLoopMonitor(opts).start();
}
