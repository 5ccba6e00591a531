import { performance } from 'node:perf_hooks';
import type { TaskLocation } from '../redis/keys.js';
import type { HolderState, PeekEntry, Store } from '../redis/replies.js';
import type { NamespaceEvent } from '../shared/events.js';
import { DeadlineQueue } from './deadlines.js';

/*
 * Covering peers: what a standby does while a peer holds tasks it also waits for.
 *
 * It costs O(peers), in the worker and on the server. Covered tasks are grouped by their
 * holder's session; each group has one timer, at the holder's server-reported session
 * expiry or the safety-net interval, whichever comes first. When it fires, one `cover`
 * call (the checks of one turn share it) answers whether the holder is alive and how far
 * its change sequence is: the holder adds one to it for every batch of its settles and
 * releases, and their events carry it (`q`). Only when the holder is gone (wake every
 * task to claim it) or its sequence moved past the last one seen in events (an event was
 * missed: pub/sub is at-most-once) are the group's records read again, in batched peeks.
 * A holder that keeps heartbeating and whose events arrive costs its standby one small
 * call per session TTL, whatever it holds. A hung handler is caught at its task's own
 * deadline, through one timer for the earliest deadline of every covered task.
 *
 * Connection evidence (connection-bound sessions, see binding.ts): while it covers anyone,
 * the standby also checks every `connectionCheckIntervalMs` — one call for all holders,
 * the same `cover` call — whether their bound connections still exist. The script records
 * the first sighting of one gone and answers how long until a claim may act on it
 * (`lostInMs`); the group's timer is set to that moment, and its tasks are then claimed.
 *
 * Shared checks (lua/cover.lua's check record): with N workers each covering the N − 1
 * others, a check per standby per interval would cost Redis O(N²). A check any standby
 * made less than SHARE_OF_INTERVAL of an interval ago answers for every standby instead
 * (`shared`), so each holder is checked about once per interval in all. And a standby
 * answered from the record for a holder polls it less often, every 2nd, then every 4th
 * tick (MAX_PERIOD), while one whose call checked keeps the interval: some standby always
 * checks each holder about once per interval (whoever checked last calls again one
 * interval later and finds the record expired), and the others' calls, which cost Redis
 * O(1) each, stay few. A holder seen gone is never answered from the record: every
 * standby covering it then checks it at every tick, as without sharing, and a standby
 * that polled it less often learns of it within MAX_PERIOD ticks (4 × 40 ms by default,
 * about the default crash grace: a task only such a standby covers is claimed at most
 * about 20 ms after the takeover is allowed; the standby that checks claims on time).
 */

/** The part of a waiting run() the cover needs. */
export interface CoveredRun {
  readonly loc: TaskLocation;
  readonly finished: boolean;
  readonly claiming: boolean;
  /** The holder session this run covers, while covered. */
  holder: string | undefined;
  /** What the run last knew of the record, to compare a peek with. */
  known: { state: string; token: number } | undefined;
}

export interface CoverContext<R extends CoveredRun> {
  readonly store: Pick<Store, 'cover' | 'peek'>;
  readonly firstAttemptIntervalMs: number;
  readonly otherAttemptIntervalMs: number;
  /** Check every covered holder's bound connection this often (0: never). */
  readonly connectionCheckIntervalMs: number;
  /** Claim the task again now. */
  wake(run: R): void;
  /** The holder's session is gone; its tasks are about to be claimed. */
  peerFailed(holder: string, tasks: number): void;
}

interface Group<R> {
  readonly runs: Set<R>;
  timer: NodeJS.Timeout | undefined;
  /** The holder's change sequence as far as this standby has seen it. */
  seen: number;
  /** An event was missed (a gap in the sequence): re-read at the next check. */
  dirty: boolean;
  checks: number;
  /** A check is in flight (the interval timer and the connection ticker may meet). */
  checking: boolean;
  /**
   * The holder's session is bound to a connection (as the last check found it). An
   * unbound one (an old server, a worker with connectionBound off, or between a reconnect
   * and its new binding) is checked at every UNBOUND_EVERY-th tick only.
   */
  bound: boolean;
  ticks: number;
  /** Checks in a row answered from another standby's check: the group polls less often. */
  shared: number;
}

// One peek call reads this many covered records (a few ms of Redis time at most).
const PEEK_BATCH = 1_000;
// A holder not bound to a connection is checked at every 25th connection tick (once a
// second by default): little cost where the evidence is off, a short wait where a holder
// is about to bind (it has just started, or reconnected).
const UNBOUND_EVERY = 25;
// A check made by any standby this share of an interval ago answers (a little below one
// interval, so that a standby that checked finds the record expired at its next tick).
const SHARE_OF_INTERVAL = 0.75;
// A holder answered from the record is polled at every 2nd, then every 4th tick at most.
const MAX_PERIOD = 4;
// setTimeout's ceiling
const MAX_TIMER = 2_147_483_647;
const now = () => performance.now();

export class Cover<R extends CoveredRun> {
  private readonly groups = new Map<string, Group<R>>();
  private readonly deadlines: DeadlineQueue<R>;
  private ticker: NodeJS.Timeout | undefined;
  /** Connection ticks so far: groups polled less often are due on the same ticks. */
  private tick = 0;
  private readonly shareMs: number;

  constructor(private readonly ctx: CoverContext<R>) {
    this.deadlines = new DeadlineQueue<R>((run) => ctx.wake(run), now);
    this.shareMs = Math.floor(ctx.connectionCheckIntervalMs * SHARE_OF_INTERVAL);
  }

  /** Holders covered now (for tests and metrics). */
  get holders(): number {
    return this.groups.size;
  }

  /**
   * Cover `run` while `holder` holds its task: `ownerPttl` and `ownerSeq` as the claim
   * script read them, with the record; `deadlineInMs` the task's own deadline.
   */
  watch(run: R, holder: string, ownerPttl: number, deadlineInMs: number, ownerSeq: number): void {
    run.holder = holder;
    let group = this.groups.get(holder);
    if (!group) {
      // The sequence read with this record is a safe start for a new group: an event it
      // does not count comes later. (An existing group keeps what it saw in events, or a
      // missed event of another covered task could be hidden.)
      group = {
        runs: new Set(),
        timer: undefined,
        seen: ownerSeq,
        dirty: false,
        checks: 0,
        checking: false,
        bound: true,
        ticks: 0,
        shared: 0,
      };
      this.groups.set(holder, group);
      this.arm(holder, group, ownerPttl);
      this.startTicker();
    }
    group.runs.add(run);
    this.deadlines.set(run, now() + deadlineInMs + 1);
  }

  uncover(run: R): void {
    this.deadlines.delete(run);
    const holder = run.holder;
    if (holder === undefined) return;
    run.holder = undefined;
    const group = this.groups.get(holder);
    if (!group) return;
    group.runs.delete(run);
    if (group.runs.size === 0) {
      clearTimeout(group.timer);
      this.groups.delete(holder);
    }
  }

  /** A namespace event: follow the holder's change sequence. */
  onEvent(ev: NamespaceEvent): void {
    if (ev.q === undefined) return;
    const group = this.groups.get(ev.o);
    if (!group || ev.q <= group.seen) return;
    if (ev.q === group.seen + 1) {
      group.seen = ev.q;
      return;
    }
    // a gap: some event of this holder never arrived; find out now what it was
    group.dirty = true;
    this.arm(ev.o, group, 0);
  }

  /** After a reconnect (events may have been lost while away): check every holder now. */
  recheckAll(): void {
    for (const [holder, group] of this.groups) {
      group.dirty = true;
      this.arm(holder, group, 0);
    }
  }

  clear(): void {
    clearTimeout(this.ticker);
    this.ticker = undefined;
    for (const group of this.groups.values()) clearTimeout(group.timer);
    this.groups.clear();
    this.deadlines.clear();
  }

  /** The connection check: every holder at once, so the calls share one script call. */
  private startTicker(): void {
    const every = this.ctx.connectionCheckIntervalMs;
    if (every <= 0 || this.ticker) return;
    this.ticker = setTimeout(() => {
      this.ticker = undefined;
      if (this.groups.size === 0) return;
      this.tick += 1;
      for (const [holder, group] of this.groups) {
        group.ticks += 1;
        const due = group.bound
          ? this.tick % Math.min(2 ** group.shared, MAX_PERIOD) === 0
          : group.ticks % UNBOUND_EVERY === 0;
        if (due) void this.check(holder, group);
      }
      this.startTicker();
    }, every);
  }

  private interval(group: Group<R>): number {
    return group.checks === 0 ? this.ctx.firstAttemptIntervalMs : this.ctx.otherAttemptIntervalMs;
  }

  private arm(holder: string, group: Group<R>, pttl: number): void {
    clearTimeout(group.timer);
    const inMs = Math.min(pttl + 1, this.interval(group), MAX_TIMER);
    group.timer = setTimeout(() => void this.check(holder, group), inMs);
  }

  private async check(holder: string, group: Group<R>): Promise<void> {
    if (this.groups.get(holder) !== group || group.runs.size === 0 || group.checking) return;
    let state: HolderState;
    group.checking = true;
    try {
      state = await this.ctx.store.cover(holder, this.shareMs);
    } catch {
      // Redis away: each run claims again, and its own retry (bounded by
      // unavailableTimeoutMs) takes over; a claim answered 'held' covers it again
      if (this.groups.get(holder) !== group) return;
      this.groups.delete(holder);
      clearTimeout(group.timer);
      for (const run of group.runs) this.ctx.wake(run);
      return;
    } finally {
      group.checking = false;
    }
    if (this.groups.get(holder) !== group) return;
    group.checks += 1;
    group.bound = state.lostInMs !== -2;
    group.shared = state.shared ? Math.min(group.shared + 1, 8) : 0;
    // gone: its session expired, or its connection was seen gone long enough ago
    if (state.pttl === 0 || state.lostInMs === 0) {
      this.gone(holder, group);
      return;
    }
    // seq -1: the store cannot tell (quorum mode), so every check re-reads
    if (state.seq < 0 || state.seq !== group.seen || group.dirty) {
      group.dirty = false;
      if (state.seq >= 0) group.seen = state.seq;
      await this.peek([...group.runs]);
    }
    if (this.groups.get(holder) !== group) return;
    // -1: alive, its time left not read (a bound holder, checked at the ticks)
    const pttl = state.pttl < 0 ? Number.POSITIVE_INFINITY : state.pttl;
    if (state.lostInMs > 0 && state.lostInMs < pttl) {
      // its connection was seen gone: claim when a claim may act on that (the claim
      // decides again; answered 'held', the task is covered anew)
      clearTimeout(group.timer);
      group.timer = setTimeout(() => this.gone(holder, group), state.lostInMs + 1);
      return;
    }
    this.arm(holder, group, pttl);
  }

  private gone(holder: string, group: Group<R>): void {
    if (this.groups.get(holder) !== group) return;
    this.groups.delete(holder);
    clearTimeout(group.timer);
    this.ctx.peerFailed(holder, group.runs.size);
    for (const run of group.runs) this.ctx.wake(run);
  }

  /** Re-read covered records in batches; wake each run whose record changed. */
  private async peek(runs: R[]): Promise<void> {
    const waiting = runs.filter((r) => !r.finished && !r.claiming);
    for (let i = 0; i < waiting.length; i += PEEK_BATCH) {
      const batch = waiting.slice(i, i + PEEK_BATCH);
      let entries: PeekEntry[];
      try {
        entries = await this.ctx.store.peek(batch.map((r) => r.loc));
      } catch {
        for (const run of batch) this.ctx.wake(run);
        continue;
      }
      batch.forEach((run, j) => {
        const e = entries[j];
        const known = run.known;
        const unchanged =
          e !== undefined &&
          known !== undefined &&
          'token' in e &&
          e.state === known.state &&
          e.token === known.token &&
          !e.orphaned;
        if (!unchanged) this.ctx.wake(run);
      });
    }
  }
}
