import { performance } from 'node:perf_hooks';
import { RedisUnavailableError } from './errors.js';
import type { Logger, ResolvedOptions } from './options.js';
import type { BindReply, LiveLink, Store } from './replies.js';
import { driftMs, type Session } from './session.js';

/*
 * Connection-bound sessions, the holder's side.
 *
 * The session is bound to the worker's subscriber connection, which subscribes to the
 * session's own liveness channel; a standby that sees no subscriber there (the process
 * died and the OS closed its sockets) may take the session's tasks over once that first
 * sighting is `crashGraceMs` old (lua/cover.lua, lua/claim.lua).
 *
 * Why the holder stops first: it believes its leases only until (send time of the last
 * proof answered on the bound connection) + crashGraceMs − drift. The proof (PING on the
 * subscriber) was answered while the connection existed, so before anyone could see it
 * gone; the takeover comes crashGraceMs after that sighting. Durations only, each on its
 * own side's monotonic clock.
 *
 * The grace a holder records with its binding is its own: `crashGraceMs`, or more where
 * its link needs it. A proof is sent every 100 ms, so the next one must be answered
 * within grace − 100 ms − drift; a worker far from Redis (a 40 ms round trip, say)
 * binds with grace ≥ 100 + 2 × round trip + 20 ms, and binds again with a larger one when
 * its proofs grow slower (never smaller while it lives: a proof already sent keeps the
 * grace it was sent under). The standby takes over on the grace the record holds.
 *
 * Every connect of the subscriber is a new binding (epoch + 1), never a continuation: a
 * proof counts only if no drop happened between its send and its answer. When the
 * connection drops, the holder unbinds through its command connection; once that is
 * answered no takeover on connection evidence can happen (the binding record is gone,
 * or the answer says the session was revoked), and its handlers keep running under the
 * session TTL alone until the subscriber reconnects and binds again.
 *
 *   unbound ──bind sent──▶ binding ──ok──▶ bound ──proof answered──▶ bound (belief extended)
 *      ▲                      │                │
 *      │                      └──refused───────┼──▶ unbound (or off: the server cannot)
 *      └──────────unbind answered───── dropped ◀┘  (belief runs out meanwhile: lapse)
 */

// At most 10 proofs a second whatever the worker holds.
export const PROOF_INTERVAL_MS = 100;
const RETRY_MS = 250;
const now = () => performance.now();

export interface BindingContext {
  readonly store: Pick<Store, 'bind'>;
  readonly link: LiveLink;
  readonly crashGraceMs: number;
  /** The largest grace the holder may bind with (beyond it, late proofs lapse). */
  readonly maxGraceMs: number;
  readonly logger: Logger;
  /** The session to bind ('' while none is open). */
  sessionId(): string;
  /** The connection can no longer be proven: abort what runs under `sessionId`. */
  onLapse(sessionId: string): void;
}

export class Binding {
  /** Whether the server may hold a binding of ours (then the belief below counts). */
  private required = false;
  /** Monotonic ms until which the bound connection is proven. */
  private validUntil = 0;
  private epoch = 0;
  /** +1 on every drop of the connection: a proof counts only within one connection. */
  private generation = 0;
  private bound = '';
  private off = false;
  private stopped = false;
  private chain: Promise<void> = Promise.resolve();
  /** The grace recorded with the binding (only grows). */
  private grace: number;
  /** Round trips of the latest proofs, the newest last. */
  private readonly rtts: number[] = [];
  private growing = false;
  private proofTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly ctx: BindingContext) {
    this.grace = ctx.crashGraceMs;
    ctx.link.on('close', () => this.dropped());
    ctx.link.on('ready', () => this.rebind());
  }

  /** False while the session's tasks may be taken over on connection evidence unproven. */
  get valid(): boolean {
    return !this.required || now() < this.validUntil;
  }

  start(): void {
    this.rebind();
    this.proof();
  }

  /** A new session was opened (the old one expired or was revoked): bind it instead. */
  sessionChanged(): void {
    // the new session has no binding on the server yet (`bound` still names the old one,
    // whose liveness channel the rebind leaves)
    this.required = false;
    this.rebind();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.proofTimer);
    clearTimeout(this.watchdog);
    clearTimeout(this.retryTimer);
    await this.chain;
  }

  private serial(step: () => Promise<void>): void {
    this.chain = this.chain.then(step).catch((err) => {
      this.ctx.logger.warn({ err }, 'pairlock: connection binding failed; retrying');
      this.retry();
    });
  }

  private retry(): void {
    if (this.stopped || this.off) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.rebind(), RETRY_MS);
  }

  /** The grace a link with this round trip needs, in 20 ms steps, within the bounds. */
  private graceFor(rttMs: number): number {
    const need = Math.ceil((PROOF_INTERVAL_MS + 2 * rttMs + 20) / 20) * 20;
    return Math.min(Math.max(this.ctx.crashGraceMs, need), this.ctx.maxGraceMs);
  }

  /** The grace of the binding now (for tests and logs). */
  get graceMs(): number {
    return this.grace;
  }

  private believeFrom(sentAt: number, grace: number): void {
    this.validUntil = Math.max(this.validUntil, sentAt + grace - driftMs(grace));
    this.arm();
  }

  private arm(): void {
    clearTimeout(this.watchdog);
    // Decided after the I/O of the turn: after a stall of the event loop, timers run
    // before the replies that arrived meanwhile, and an answered proof must count first.
    this.watchdog = setTimeout(
      () => setImmediate(() => this.check()),
      Math.max(0, this.validUntil - now()) + 1,
    );
    this.watchdog.unref();
  }

  /** Abort what runs under the session if its connection can no longer be proven. */
  check(): void {
    if (this.stopped) return;
    if (this.valid) {
      // a timer may fire a little early (the event loop's cached clock): look again then
      if (this.required) this.arm();
      return;
    }
    const session = this.ctx.sessionId();
    if (session) this.ctx.onLapse(session);
  }

  private rebind(): void {
    if (this.stopped || this.off) return;
    this.serial(async () => {
      const session = this.ctx.sessionId();
      if (!session || !this.ctx.link.ready || this.stopped) return;
      const generation = this.generation;
      const asked = now();
      await this.ctx.link.follow(session, this.bound);
      if (generation !== this.generation) return; // dropped meanwhile: 'ready' comes again
      const grace = Math.max(this.grace, this.graceFor(Math.max(now() - asked, ...this.rtts)));
      this.epoch += 1;
      const sent = now();
      // With no binding of ours on the server before, none can be acted on before this
      // one is recorded, and then only its grace after a later sighting.
      if (!this.required) {
        this.required = true;
        this.validUntil = 0;
        this.believeFrom(sent, grace);
      }
      let reply: BindReply | undefined;
      try {
        reply = await this.ctx.store.bind?.('bind', session, this.epoch, grace);
      } catch (err) {
        if (err instanceof RedisUnavailableError) throw err;
        // the server refused the script itself (a command renamed or denied by an ACL)
        reply = { ok: false, reason: 'unsupported', version: String((err as Error).message) };
      }
      if (!reply) return;
      if (reply.ok) {
        this.bound = session;
        this.grace = grace;
        if (generation === this.generation) this.believeFrom(sent, grace);
        else this.check();
        return;
      }
      if (reply.reason === 'unsupported') {
        // said once: nothing was recorded, so the session TTL decides as without binding
        this.off = true;
        this.required = false;
        clearTimeout(this.watchdog);
        this.ctx.logger.warn(
          { server: reply.version },
          'pairlock: connection-bound sessions are off: the server cannot show a connection gone (Redis 7 or newer, with PUBSUB and INFO allowed in scripts); the session TTL decides takeovers',
        );
        return;
      }
      // session-expired: the heartbeat opens a new one (sessionChanged); not-subscribed or
      // newer-binding: try again with a new epoch. Nothing was recorded by this call.
      if (reply.reason !== 'session-expired') this.retry();
    });
  }

  /** The bound connection dropped: no proof counts past this, and the binding is undone. */
  private dropped(): void {
    this.generation += 1;
    if (!this.required || this.stopped) return;
    const session = this.bound;
    const epoch = this.epoch;
    this.serial(async () => {
      if (!session || this.stopped) return;
      const reply = await this.ctx.store.bind?.('unbind', session, epoch, 0);
      // newer-binding: a reconnect bound again meanwhile, which is the state to keep
      if (reply?.ok && this.bound === session && this.epoch === epoch) {
        this.required = false;
      }
    });
  }

  /** A proof's round trip: bind again with a larger grace when the link needs one. */
  private slower(rttMs: number): void {
    this.rtts.push(rttMs);
    if (this.rtts.length > 10) this.rtts.shift();
    if (this.growing || this.graceFor(rttMs) <= this.grace) return;
    this.growing = true;
    this.ctx.logger.info(
      { rttMs: Math.round(rttMs), graceMs: this.graceFor(rttMs) },
      'pairlock: connection proofs are slow; binding with a longer crash grace',
    );
    this.rebind();
    this.chain = this.chain.finally(() => {
      this.growing = false;
    });
  }

  private proof(): void {
    if (this.stopped || this.off) return;
    this.proofTimer = setTimeout(() => {
      const generation = this.generation;
      const sent = now();
      const grace = this.grace;
      if (this.required && this.bound === this.ctx.sessionId() && this.ctx.link.ready) {
        this.ctx.link.ping().then(
          () => {
            if (generation !== this.generation || this.stopped) return;
            this.believeFrom(sent, grace);
            this.slower(now() - sent);
          },
          () => {},
        );
      }
      this.proof();
    }, PROOF_INTERVAL_MS);
    this.proofTimer.unref();
  }
}

/** Bind the worker's session to its subscriber, where the options and the store allow. */
export function bindSession(
  store: Store,
  session: Session,
  options: ResolvedOptions,
  logger: Logger,
  executor: { lapse(sessionId: string, reason: 'connection'): void },
): Binding | undefined {
  const link = options.connectionBound ? store.liveLink?.() : undefined;
  if (!link || !store.bind) return undefined;
  const binding = new Binding({
    store,
    link,
    crashGraceMs: options.crashGraceMs,
    maxGraceMs: Math.max(options.crashGraceMs, Math.floor(options.sessionTtlMs / 2)),
    logger,
    sessionId: () => session.id,
    onLapse: (id) => executor.lapse(id, 'connection'),
  });
  session.connection = binding;
  binding.start();
  return binding;
}
