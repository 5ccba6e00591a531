import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Store } from '../redis/replies.js';
import { LeaseLostError, PairlockError, RedisUnavailableError } from '../shared/errors.js';
import type { Logger } from '../shared/options.js';

/*
 * A worker's session: its one liveness lease on the server, renewed by one heartbeat
 * whatever the worker holds. Every grant the worker runs is alive exactly as long as the
 * session under which it was granted.
 *
 * Belief, on this side: the lease is believed until `sendTime + ttl − drift` of the last
 * renewal that succeeded, measured on the monotonic clock from when the renewal was
 * *sent* (the server counts its TTL from when it applied it, later). Past that point the
 * watchdog calls `onLapse`: the handlers running under the session are aborted.
 *
 *   closed ──start()──▶ open(epoch n) ──renew ok──▶ open (belief extended)
 *                          │  ├──renew failed (Redis away)──▶ retry soon; the watchdog
 *                          │  │                                may fire meanwhile
 *                          │  └──server says expired──▶ open(epoch n + 1), never revived
 *                          └──stop()──▶ closed
 */

// Lease validity, as in Redlock: 1% of the TTL for clock-rate drift, plus 2 ms for
// the precision of Redis expiry. Measured from when the request was sent.
export function driftMs(ttlMs: number): number {
  return Math.floor(ttlMs * 0.01) + 2;
}

const now = () => performance.now();

export interface SessionContext {
  readonly workerId: string;
  readonly store: Pick<Store, 'session'>;
  readonly sessionTtlMs: number;
  readonly heartbeatIntervalMs: number;
  readonly logger: Logger;
  /** The lease of `sessionId` can no longer be proven: abort what runs under it. */
  onLapse(sessionId: string): void;
  /** The server let the session expire and a new one was opened. */
  onReopened(): void;
  renewFailed(sessionId: string, error: Error, sessionLost: boolean): void;
  /** A fault the operator must see (not mere unavailability). */
  fault(error: Error): void;
}

export class Session {
  /** `<workerId>#<epoch>` ('' before the first open). */
  id = '';
  private epoch = 0;
  /** Monotonic ms until which this worker can prove its session is alive. */
  private validUntil = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private stopped = false;
  /** The connection the session is bound to, when it is (see binding.ts). */
  connection: { readonly valid: boolean; readonly inDoubt: boolean } | undefined;
  private paused = false;
  private startedAt: number | undefined;

  constructor(private readonly ctx: SessionContext) {}

  /** Whether the lease can still be proven now. */
  get valid(): boolean {
    return now() < this.validUntil;
  }

  async open(): Promise<void> {
    this.epoch += 1;
    const sessionId = `${this.ctx.workerId}#${this.epoch}`;
    this.startedAt ??= Date.now();
    const sent = now();
    const reply = await this.ctx.store.session(
      'open',
      sessionId,
      this.ctx.sessionTtlMs,
      this.description(),
    );
    if (!reply.ok)
      throw new PairlockError(
        'ERR_LEASE_LOST',
        `could not open session ${sessionId}: ${reply.reason}`,
      );
    this.id = sessionId;
    this.believeFrom(sent);
  }

  /** What the session's value says of its worker (`pairlock stats`, the dashboard). */
  private description(): string {
    return JSON.stringify({
      worker: this.ctx.workerId,
      host: hostname(),
      pid: process.pid,
      startedAt: this.startedAt,
      ...(this.paused ? { paused: true } : {}),
    });
  }

  /**
   * The worker paused or resumed: say so in the session's value, its TTL kept (best effort:
   * a session that is gone or a Redis that is away is told at the next open).
   */
  async setPaused(paused: boolean): Promise<void> {
    this.paused = paused;
    if (!this.id) return;
    await this.ctx.store.session('describe', this.id, 0, this.description());
  }

  /** Renew now (a claim found the session expired on the server), unless renewing already. */
  renewSoon(): void {
    if (!this.renewing) this.schedule(0);
  }

  /** Abort what runs under the session if its lease can no longer be proven. */
  check(): void {
    if (now() >= this.validUntil && this.id) this.ctx.onLapse(this.id);
  }

  start(): void {
    this.schedule();
  }

  /** Stop renewing; resolves once a renewal in flight has returned. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.watchdogTimer);
    await this.renewing?.catch(() => {});
  }

  private believeFrom(sentAt: number): void {
    const ttl = this.ctx.sessionTtlMs;
    this.validUntil = sentAt + ttl - driftMs(ttl);
    clearTimeout(this.watchdogTimer);
    this.watchdogTimer = setTimeout(() => this.check(), Math.max(0, this.validUntil - now()) + 1);
    this.watchdogTimer.unref();
  }

  private schedule(delay = this.ctx.heartbeatIntervalMs): void {
    if (this.stopped) return;
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => {
      this.renewing = this.heartbeat().finally(() => {
        this.renewing = undefined;
      });
    }, delay);
  }

  private async heartbeat(): Promise<void> {
    const sessionId = this.id;
    const sent = now();
    try {
      const reply = await this.ctx.store.session('renew', sessionId, this.ctx.sessionTtlMs);
      if (this.stopped) return;
      if (reply.ok) {
        this.believeFrom(sent);
        this.schedule();
        return;
      }
      // The server let the session expire (a pause or partition longer than the TTL).
      // It is never revived: its grants may already be someone else's.
      const error = new LeaseLostError('', 'session', `session ${sessionId} expired on the server`);
      this.ctx.renewFailed(sessionId, error, true);
      this.ctx.logger.warn({ sessionId }, 'pairlock: session expired; opening a new one');
      this.validUntil = 0;
      this.check();
      await this.open();
      this.schedule();
      this.ctx.onReopened();
    } catch (err) {
      if (this.stopped) return;
      this.ctx.renewFailed(sessionId, err as Error, false);
      // Redis being away is expected weather; anything else (a refused command, a
      // script error) is a fault the operator must see
      if (!(err instanceof RedisUnavailableError)) this.ctx.fault(err as Error);
      this.ctx.logger.warn({ err, sessionId }, 'pairlock: session renewal failed; retrying');
      this.check();
      // retry sooner than the interval: the lease is running out
      this.schedule(Math.min(this.ctx.heartbeatIntervalMs, 250));
    }
  }
}
