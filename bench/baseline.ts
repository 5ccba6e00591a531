/**
 * The original `redis-paired-worker` 0.3.1 algorithm, re-implemented step by step for
 * the benchmark (DESIGN.md, appendix). It is kept deliberately as it was, defects
 * included: expiry from the worker's own `Date.now()`, separate SETNX / GET / DEL
 * commands, a plain SET for the status, no TTL on keys, and timed retries only.
 *
 * The one point the description leaves open: a GET that finds no value (the peer
 * deleted the key between our SETNX and our GET) goes back to SETNX at once.
 */
import type { Redis } from 'ioredis';

export interface OriginalOptions {
  /** @default 'lock:' */
  readonly keyPrefix?: string;
  /** @default 100000 */
  readonly lockTimeout?: number;
  /** @default 10000 */
  readonly firstAttemptInterval?: number;
  /** @default 30000 */
  readonly otherAttemptInterval?: number;
  /** Called on a Redis error; the default reports it to the callback. */
  readonly clientErrorPolicy?: (error: Error, cb: OriginalCallback) => void;
  /** Instrumentation: the worker found the task held and waits `ms` before retrying. */
  readonly onWait?: (name: string, attempt: number, ms: number) => void;
}

export type OriginalCallback = (
  error: Error | null,
  acquired: boolean,
  done: (ok?: boolean) => Promise<void>,
) => void;

const STATUS_UNDONE = '0';
const STATUS_DONE = '1';
const STATUS_FAILED = '2';

const noopDone = async () => {};

interface Ops {
  setnx(value: string): Promise<number>;
  get(): Promise<string | null>;
  del(): Promise<unknown>;
  set(value: string): Promise<unknown>;
}

export class OriginalPairedWorker {
  readonly keyPrefix: string;
  readonly lockTimeout: number;
  readonly firstAttemptInterval: number;
  readonly otherAttemptInterval: number;
  /** Redis commands this worker sent. */
  commands = 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly client: Redis,
    private readonly opts: OriginalOptions = {},
  ) {
    this.keyPrefix = opts.keyPrefix ?? 'lock:';
    this.lockTimeout = opts.lockTimeout ?? 100_000;
    this.firstAttemptInterval = opts.firstAttemptInterval ?? 10_000;
    this.otherAttemptInterval = opts.otherAttemptInterval ?? 30_000;
  }

  lock(name: string, cb: OriginalCallback): void {
    const key = this.keyPrefix + name;
    const c = this.client;
    this.acquire(name, cb, {
      setnx: (v) => this.count(c.setnx(key, v)),
      get: () => this.count(c.get(key)),
      del: () => this.count(c.del(key)),
      set: (v) => this.count(c.set(key, v)),
    });
  }

  hlock(key: string, field: string, cb: OriginalCallback): void {
    const k = this.keyPrefix + key;
    const c = this.client;
    this.acquire(field, cb, {
      setnx: (v) => this.count(c.hsetnx(k, field, v)),
      get: () => this.count(c.hget(k, field)),
      del: () => this.count(c.hdel(k, field)),
      set: (v) => this.count(c.hset(k, field, v)),
    });
  }

  /** Cancel every pending retry (a bounded benchmark ends with this). */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private count<T>(p: Promise<T>): Promise<T> {
    this.commands += 1;
    return p;
  }

  private acquire(name: string, cb: OriginalCallback, ops: Ops): void {
    // step 1: this worker's own clock, once per call
    const expiry = Date.now() + this.lockTimeout;
    const fail = (err: unknown) => {
      const error = err instanceof Error ? err : new Error(String(err));
      if (this.opts.clientErrorPolicy) this.opts.clientErrorPolicy(error, cb);
      else cb(error, false, noopDone);
    };
    const attempt = async (n: number): Promise<void> => {
      if (this.stopped) return;
      // step 2
      const won = await ops.setnx(`${expiry}:${STATUS_UNDONE}`);
      if (won === 1) {
        let reported = false;
        cb(null, true, async (ok = true) => {
          if (reported) return;
          reported = true;
          // a plain SET, no ownership check
          await ops.set(`${expiry}:${ok ? STATUS_DONE : STATUS_FAILED}`);
        });
        return;
      }
      // step 3
      const stored = await ops.get();
      if (stored === null) return attempt(n + 1);
      const sep = stored.lastIndexOf(':');
      const storedExpiry = Number(stored.slice(0, sep));
      const status = stored.slice(sep + 1);
      if (status === STATUS_DONE) {
        await ops.del();
        cb(null, false, noopDone);
        return;
      }
      const now = Date.now();
      if (storedExpiry <= now) {
        await ops.del();
        return attempt(n + 1);
      }
      if (status === STATUS_FAILED) {
        cb(null, false, noopDone);
        return;
      }
      const wait = Math.min(
        expiry - now,
        n === 1 ? this.firstAttemptInterval : this.otherAttemptInterval,
      );
      this.opts.onWait?.(name, n, wait);
      const t = setTimeout(() => {
        this.timers.delete(t);
        attempt(n + 1).catch(fail);
      }, wait);
      this.timers.add(t);
    };
    attempt(1).catch(fail);
  }
}

export type TaskResult = { acquired: boolean };

/**
 * Promise form for the benchmark: runs `handler` when this worker wins and reports
 * done(true) once it returns (resolving after the SET is acknowledged, as pairlock's
 * run() resolves after its settle); resolves `{ acquired: false }` once the peer's
 * outcome is known.
 */
export function runOriginal(
  worker: OriginalPairedWorker,
  name: string,
  handler: () => unknown,
): Promise<TaskResult> {
  return new Promise((resolve, reject) => {
    worker.lock(name, (error, acquired, done) => {
      if (error) {
        reject(error);
        return;
      }
      if (!acquired) {
        resolve({ acquired: false });
        return;
      }
      Promise.resolve()
        .then(handler)
        .then(
          () => done(true),
          () => done(false),
        )
        .then(() => resolve({ acquired: true }), reject);
    });
  });
}
