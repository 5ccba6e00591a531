import { performance } from 'node:perf_hooks';
import type { BindReply, LiveLink, Store } from '../redis/replies.js';
import { RedisOutOfMemoryError, RedisUnavailableError } from '../shared/errors.js';
import type { Logger, ResolvedOptions } from '../shared/options.js';
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
 * proof answered on the bound connection) + crashGraceMs − drift. The proof is a message
 * the holder publishes to its own liveness channel and receives back on the bound
 * connection (LiveLink.ping, liveness.ts): the server delivered it while that connection
 * was subscribed to the channel, so before anyone could see the channel without a
 * subscriber; the takeover comes crashGraceMs after that sighting. Durations only, each on
 * its own side's monotonic clock. (A PING would prove the connection only: a Cluster node
 * that loses the namespace's slot unsubscribes the connection and keeps it, and if the
 * slot comes back to it the scripts see no subscriber while PINGs are answered.)
 *
 * The grace a holder records with its binding is its own: `crashGraceMs`, or more where
 * its link needs it. A proof is sent every 100 ms, so the next one must be answered
 * within grace − 100 ms − drift; a worker far from Redis (a 40 ms round trip, say)
 * binds with grace ≥ 100 + 2 × round trip + 20 ms, and binds again with a larger one when
 * its proofs grow slower (never smaller while it lives: a proof already sent keeps the
 * grace it was sent under). The standby takes over on the grace the record holds.
 *
 * Every connect of the subscriber is a new binding (epoch + 1), never a continuation: a
 * proof counts only if it was sent and answered on the connection the server has bound
 * (a reconnected link proves nothing until it is bound again). The link reports as a drop
 * (`close`) a connection that closed, and one that lost its subscription while it stands
 * (an unsubscribe the server sent on its own, or a proof that reached no subscriber), so
 * that a connection that "stands" below is one still subscribed. When the connection
 * drops, the holder unbinds through its command connection, retrying until that is
 * answered or a new bind supersedes it; once answered no takeover on connection
 * evidence can happen (the binding record is gone, or the session was revoked), and its
 * handlers keep running under the session TTL alone until the subscriber binds again.
 *
 * Doubt is not loss (Chubby's jeopardy; Curator's SUSPENDED vs LOST). When the belief
 * runs out but the bound connection has not closed, the holder is in doubt: a pause of
 * its own (GC, synchronous handler code, a burst of work) or of Redis (a fork, a slow
 * command, DEBUG SLEEP) delayed the proof. It re-proves at once and aborts nothing: a
 * connection that stands is one the server has not seen gone (the sighting a takeover
 * needs), and a proof answered on it moves the belief on from that proof's send time.
 * The doubt is bounded by the session's own lease (its TTL, renewed by the heartbeat
 * on the command connection): a holder in doubt is a holder under the session TTL rule.
 * What this leaves is a double fault, written down in docs/topologies.md: the server
 * closes a live holder's connection (CLIENT KILL, a buffer limit) and the holder does
 * not learn of it (a partition at that moment, or a stall of its own); fencing tokens
 * guard what may overlap then.
 *
 *   unbound ──bind sent──▶ binding ──ok──▶ PROVEN ──proof answered──▶ PROVEN (belief moves on)
 *      ▲                      │              │  ▲
 *      │                      │   belief out │  │ proof answered on the bound connection
 *      │                      │              ▼  │
 *      │                      │            DOUBT ──session lease out──▶ lapse (session)
 *      │                      │              │
 *      │                      └──refused─────┼──▶ unbound (or off: the server cannot)
 *      └──unbind answered── UNPROVEN ◀── dropped (lapse once the belief is out)
 */

// At most 10 proofs a second whatever the worker holds.
export const PROOF_INTERVAL_MS = 100;
const RETRY_MS = 250;
/** Proof round trips kept for the grace a link needs (their median decides). */
const RTT_SAMPLES = 5;
const now = () => performance.now();

/**
 * What the holder knows of its binding:
 * - `proven`: an answered proof says no takeover on connection evidence can come yet
 *   (or the session is not bound: nothing to prove);
 * - `doubt`: the proofs are late, but the bound connection has not closed: the holder
 *   cannot be certain, and keeps running under its session TTL until a proof answers;
 * - `unproven`: the bound connection closed and its unbind is not answered yet: a
 *   standby may take the session's tasks over on connection evidence.
 */
export type BindingState = 'proven' | 'doubt' | 'unproven';

export interface BindingContext {
  readonly store: Pick<Store, 'bind'>;
  readonly link: LiveLink;
  readonly crashGraceMs: number;
  /** The largest grace the holder may bind with (beyond it, late proofs lapse). */
  readonly maxGraceMs: number;
  /**
   * How long a holder in doubt waits for the proof it sent when the doubt began before
   * it gives its leases up (0: at once).
   */
  readonly doubtMs: number;
  readonly logger: Logger;
  /** The session to bind ('' while none is open). */
  sessionId(): string;
  /** The connection can no longer be proven: abort what runs under `sessionId`. */
  onLapse(sessionId: string): void;
  /** The state changed (see BindingState). */
  onState?(state: BindingState, sessionId: string, was: BindingState): void;
}

export class Binding {
  /** Whether the server may hold a binding of ours (then the belief below counts). */
  private required = false;
  /** Monotonic ms until which the bound connection is proven. */
  private validUntil = 0;
  private epoch = 0;
  /** +1 on every drop of the connection: a proof counts only within one connection. */
  private generation = 0;
  /**
   * The connection generation the server's binding is on (-1: none). A proof counts only
   * when sent and answered on it: a reconnected link that is not bound again yet proves
   * nothing about the binding the server still holds (the old connection's, seen gone).
   */
  private boundGeneration = -1;
  private bound = '';
  /** A drop's unbind that is not answered yet: retried until it is, or a bind supersedes it. */
  private unbinding: { session: string; epoch: number } | undefined;
  private off = false;
  private stopped = false;
  private chain: Promise<void> = Promise.resolve();
  /** The grace recorded with the binding (only grows). */
  private grace: number;
  /** Round trips of the latest proofs, the newest last. */
  private readonly rtts: number[] = [];
  private growing = false;
  private lastProofAt = Number.NEGATIVE_INFINITY;
  /** In doubt: when the proof that may end it was sent (the doubt's bound counts from it). */
  private doubtProofAt: number | undefined;
  /** The doubt outlasted doubtMs: given up until a proof answers. */
  private gaveUp = false;
  /** The handlers were told (onLapse) of this loss already. */
  private lapsed = false;
  private reported: BindingState = 'proven';
  private proofTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0; // binding steps failed since the last bind

  constructor(private readonly ctx: BindingContext) {
    this.grace = ctx.crashGraceMs;
    ctx.link.on('close', () => this.dropped());
    ctx.link.on('ready', () => this.rebind());
  }

  /** The bound connection has stood since the server bound it (no drop seen). */
  private get stands(): boolean {
    return this.boundGeneration === this.generation;
  }

  get state(): BindingState {
    if (!this.required || now() < this.validUntil) return 'proven';
    return this.stands && !this.gaveUp ? 'doubt' : 'unproven';
  }

  /**
   * False while the session's tasks may be taken over on connection evidence unproven.
   * A holder in doubt is still valid: its connection stands, so the server has not seen
   * it gone (the session TTL bounds the doubt).
   */
  get valid(): boolean {
    return this.state !== 'unproven';
  }

  /** Proofs are late on a connection that stands (see BindingState). */
  get inDoubt(): boolean {
    return this.state === 'doubt';
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
    this.unbinding = undefined;
    this.endDoubt();
    this.report();
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
      const log = this.ctx.logger; // warns of the 1st failure in a row, then each 40th (10 s)
      const failures = ++this.failures;
      const msg = 'pairlock: connection binding failed; retrying';
      (failures % 40 === 1 ? log.warn : log.debug).call(log, { err, failures }, msg);
      this.retry();
    });
  }

  private retry(): void {
    if (this.stopped || this.off) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (this.unbinding) this.unbind();
      else this.rebind();
    }, RETRY_MS);
  }

  /** The grace a link with this round trip needs, in 20 ms steps, within the bounds. */
  private graceFor(rttMs: number): number {
    const need = Math.ceil((PROOF_INTERVAL_MS + 2 * rttMs + 20) / 20) * 20;
    return Math.min(Math.max(this.ctx.crashGraceMs, need), this.ctx.maxGraceMs);
  }

  /**
   * The round trip the link has: the median of the latest proofs, so that one proof
   * slowed by a stall (of this process or of Redis) does not lengthen every takeover.
   */
  private typicalRtt(): number {
    if (this.rtts.length === 0) return 0;
    const sorted = [...this.rtts].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)] ?? 0;
  }

  /** The grace of the binding now (for tests and logs). */
  get graceMs(): number {
    return this.grace;
  }

  private believeFrom(sentAt: number, grace: number): void {
    this.validUntil = Math.max(this.validUntil, sentAt + grace - driftMs(grace));
    if (now() < this.validUntil) this.endDoubt();
    this.arm();
    this.report();
  }

  private endDoubt(): void {
    this.doubtProofAt = undefined;
    this.gaveUp = false;
    this.lapsed = false;
  }

  private arm(at = this.validUntil): void {
    clearTimeout(this.watchdog);
    // Decided after the I/O of the turn: after a stall of the event loop, timers run
    // before the replies that arrived meanwhile, and an answered proof (or the close of
    // the connection) must count first.
    this.watchdog = setTimeout(() => setImmediate(() => this.check()), Math.max(0, at - now()) + 1);
    this.watchdog.unref();
  }

  /** Tell the worker when the state changed. */
  private report(): void {
    const state = this.state;
    const was = this.reported;
    if (state === was) return;
    this.reported = state;
    const session = this.ctx.sessionId();
    if (session) this.ctx.onState?.(state, session, was);
  }

  /**
   * The belief ran out (or the connection dropped): decide. A connection that stands is
   * re-proven before anything is aborted: a proof answered on it shows the server never
   * saw it gone before, so nobody can have taken over on that evidence (a pause of this
   * process, or of Redis, ends here). Only a connection that closed lapses.
   */
  check(): void {
    if (this.stopped) return;
    const state = this.state;
    this.report();
    if (state === 'proven') {
      // a timer may fire a little early (the event loop's cached clock): look again then
      if (this.required) this.arm();
      return;
    }
    if (state === 'doubt') {
      const t = now();
      if (this.doubtProofAt === undefined) {
        // re-prove now rather than at the next interval (after a stall of this process,
        // the first proof since it woke); the doubt's bound counts from that proof
        if (t - this.lastProofAt > 10) this.sendProof();
        this.doubtProofAt = Math.min(t, Math.max(this.lastProofAt, t - 10));
      }
      const until = this.doubtProofAt + this.ctx.doubtMs;
      if (t < until) {
        this.arm(until);
        return;
      }
      // that proof stayed unanswered on a connection that stands: a partition, or a Redis
      // stalled longer than the bound; give up until a proof answers
      this.gaveUp = true;
      this.report();
    }
    const session = this.ctx.sessionId();
    if (session && !this.lapsed) {
      // once per loss (the watchdog may look again): grants made meanwhile are aborted as
      // they start (see Executor), and the worker claims nothing new while unproven
      this.lapsed = true;
      this.ctx.onLapse(session);
    }
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
      const rtt = Math.max(now() - asked, this.typicalRtt());
      const grace = Math.max(this.grace, this.graceFor(rtt));
      this.epoch += 1;
      const sent = now();
      // With no binding of ours on the server before, none can be acted on before this one
      // is recorded, then only its grace after a later sighting; none it could leave
      // behind either: the binding it may record is on this connection from now on.
      if (!this.required) {
        this.required = true;
        this.validUntil = 0;
        this.boundGeneration = generation;
        this.believeFrom(sent, grace);
      }
      let reply: BindReply | undefined;
      try {
        reply = await this.ctx.store.bind?.('bind', session, this.epoch, grace);
      } catch (err) {
        // Redis away, or full (its SET refused under noeviction): retried; a binding held
        // before stays, proven under the grace it was recorded with
        if (err instanceof RedisUnavailableError || err instanceof RedisOutOfMemoryError) throw err;
        // the server refused the script itself (a command renamed or denied by an ACL)
        reply = { ok: false, reason: 'unsupported', version: String((err as Error).message) };
      }
      if (!reply) return;
      if (reply.ok) {
        this.failures = 0;
        this.bound = session;
        this.grace = grace;
        // a newer binding supersedes an unbind not yet answered
        this.unbinding = undefined;
        if (generation === this.generation) {
          this.boundGeneration = generation;
          this.believeFrom(sent, grace);
        } else this.check();
        return;
      }
      if (reply.reason === 'unsupported') {
        // said once: nothing was recorded, so the session TTL decides as without binding
        this.off = true;
        this.required = false;
        this.unbinding = undefined;
        clearTimeout(this.watchdog);
        this.report();
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
    this.unbinding = { session: this.bound, epoch: this.epoch };
    // proofs answered before the drop still count until their belief runs out; a holder
    // in doubt has nothing left to believe
    this.check();
    this.unbind();
  }

  /** Undo the binding a drop left on the server, until answered or superseded. */
  private unbind(): void {
    this.serial(async () => {
      const pending = this.unbinding;
      if (!pending || this.stopped) return;
      if (!pending.session) {
        this.unbinding = undefined;
        return;
      }
      const reply = await this.ctx.store.bind?.('unbind', pending.session, pending.epoch, 0);
      if (this.unbinding !== pending) return; // a bind superseded it meanwhile
      if (reply?.ok === false && reply.reason === 'newer-binding' && this.epoch > pending.epoch) {
        // a bind of ours whose reply was lost (Redis away) was recorded after all, on a
        // connection that may be gone too: undo that one as well
        this.unbinding = { session: pending.session, epoch: this.epoch };
        this.unbind();
        return;
      }
      this.unbinding = undefined;
      // answered: no binding of ours is left (removed, or the session gone, which the
      // heartbeat learns): nothing can be taken over on evidence of the dropped
      // connection. The session TTL decides until the link binds again, which it does now
      // if it is back already (its 'ready' may have come while Redis was away).
      if (this.bound === pending.session) {
        this.required = false;
        this.endDoubt();
        this.report();
      }
      if (this.ctx.link.ready) this.rebind();
    });
  }

  /** A proof's round trip: bind again with a larger grace when the link needs one. */
  private slower(rttMs: number): void {
    this.rtts.push(rttMs);
    if (this.rtts.length > RTT_SAMPLES) this.rtts.shift();
    const typical = this.typicalRtt();
    if (this.growing || this.graceFor(typical) <= this.grace) return;
    this.growing = true;
    this.ctx.logger.info(
      { rttMs: Math.round(typical), graceMs: this.graceFor(typical) },
      'pairlock: connection proofs are slow; binding with a longer crash grace',
    );
    this.rebind();
    this.chain = this.chain.finally(() => {
      this.growing = false;
    });
  }

  /** Send one proof, counted only if sent and answered on the bound connection. */
  private sendProof(): void {
    const generation = this.generation;
    if (
      !this.required ||
      generation !== this.boundGeneration ||
      this.bound !== this.ctx.sessionId() ||
      !this.ctx.link.ready
    )
      return;
    const sent = now();
    const grace = this.grace;
    this.lastProofAt = sent;
    this.ctx.link.ping(this.bound).then(
      () => {
        if (generation !== this.generation || generation !== this.boundGeneration) return;
        if (this.stopped) return;
        this.believeFrom(sent, grace);
        this.slower(now() - sent);
        if (this.doubtProofAt !== undefined && sent >= this.doubtProofAt && this.inDoubt) {
          // the doubt's proof was answered, but too late to be certain (this process
          // stalled before it read the answer): the connection stood; prove again now,
          // and bound the new doubt from that proof
          this.doubtProofAt = undefined;
          this.check();
        }
      },
      () => {},
    );
  }

  private proof(): void {
    if (this.stopped || this.off) return;
    this.proofTimer = setTimeout(() => {
      this.sendProof();
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
  onState?: (state: BindingState, sessionId: string, was: BindingState) => void,
): Binding | undefined {
  const link = options.connectionBound ? store.liveLink?.() : undefined;
  if (!link || !store.bind) return undefined;
  const binding = new Binding({
    store,
    link,
    crashGraceMs: options.crashGraceMs,
    maxGraceMs: Math.max(options.crashGraceMs, Math.floor(options.sessionTtlMs / 2)),
    doubtMs: options.doubtMs,
    logger,
    sessionId: () => session.id,
    onLapse: (id) => executor.lapse(id, 'connection'),
    onState,
  });
  session.connection = binding;
  binding.start();
  return binding;
}
