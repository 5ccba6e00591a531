/**
 * What the dashboard knows of a namespace, kept in memory and bounded:
 *
 * - sessions (sessions.ts);
 * - running records: a census (a paced SCAN of every record, see collect.ts) gives
 *   exact counts and the detail of up to `maxTasks` running records; between
 *   censuses the namespace events move them (a grant sets the holder, a settle or a
 *   release removes the record). Events apply by fencing token, so an event that the
 *   census already saw changes nothing when it is applied again;
 * - the timeline: the last TIMELINE_SIZE events, numbered;
 * - rates and latencies (series.ts);
 * - both seeded at start from the task history (history.ts), so that a restarted
 *   dashboard shows what came before it: a transition the live feed brings too is
 *   shown and counted once.
 *
 * Up to `maxTasks` running records, counts per holder are the records held (exact).
 * Beyond it the census counts all of them, the detail stops at `maxTasks`, and counts
 * move with the events until the next census.
 */

import { workerOf } from '../../redis/store.js';
import type { NamespaceEvent } from '../../shared/events.js';
import type { TaskInfo } from '../../worker/worker.js';
import { decodeEvent, type WatchEvent } from '../watch.js';
import { redisProblem } from './health.js';
import { type PastEntry, transitionKey } from './history.js';
import { Series, type SeriesSnapshot } from './series.js';
import { Sessions } from './sessions.js';

/**
 * Events kept for the timeline: the server keeps this many, the page (which takes the
 * number from the summary) keeps and shows as many, and docs/cli.md says so.
 */
export const TIMELINE_SIZE = 500;
/** Events kept while a census runs, to apply again on its result; beyond it the next census corrects. */
const CENSUS_LOG_MAX = 20_000;
/** Longest note text kept per running record. */
const NOTE_CHARS = 200;

export interface RunningEntry {
  ref: string;
  task: string;
  hash?: string;
  session: string;
  worker: string;
  token: number;
  attempt: number;
  /** Local ms of the grant (from the record, or when its event arrived). */
  claimedAt?: number;
  /** Local ms of the task's deadline, once the record was read. */
  deadlineAt?: number;
  progress?: number;
  note?: string;
}

/** A timeline entry: a namespace event, a transition from the history, a session's start or end. */
export type TimelineItem = Partial<WatchEvent> & {
  seq: number;
  at: number;
  event: string;
  error?: string;
  history?: true;
};

export interface Counts {
  total: number;
  running: number;
  done: number;
  failed: number;
  released: number;
}

export interface CensusResult {
  startedAt: number;
  durationMs: number;
  counts: Counts;
  /** Running records per owner session. */
  holders: Map<string, number>;
  entries: RunningEntry[];
  /** More running records than `maxTasks`: the detail is partial. */
  capped: boolean;
}

interface Change {
  ref: string;
  running: boolean;
  state: string;
  token: number;
  kind?: string;
  session: string;
  fromSession?: string;
  entry: RunningEntry;
}

const zero = (): Counts => ({ total: 0, running: 0, done: 0, failed: 0, released: 0 });

/** A running record, as the census keeps it. */
export function entryOf(
  info: TaskInfo,
  ref: string,
  hash: string | undefined,
  readAt: number,
  serverOffsetMs: number,
): RunningEntry {
  const e: RunningEntry = {
    ref,
    task: info.taskId,
    session: info.session,
    worker: info.worker,
    token: info.token,
    attempt: info.attempt,
  };
  if (hash !== undefined) e.hash = hash;
  // the offset is an estimate: a grant is never dated after the moment it was read
  if (info.claimedAt > 0) e.claimedAt = Math.min(readAt, info.claimedAt - serverOffsetMs);
  if (info.deadlineInMs !== undefined) e.deadlineAt = readAt + info.deadlineInMs;
  if (info.progress !== undefined) e.progress = info.progress;
  if (info.note !== undefined) {
    const text = JSON.stringify(info.note) ?? '';
    e.note = text.length > NOTE_CHARS ? `${text.slice(0, NOTE_CHARS - 1)}…` : text;
  }
  return e;
}

export class DashboardState {
  readonly sessions: Sessions;
  private readonly entries = new Map<string, RunningEntry>();
  private readonly bySession = new Map<string, Set<string>>();
  /** Counts moved by events; used beyond `maxTasks`, reset by each census. */
  private readonly holderCounts = new Map<string, number>();
  private counts = zero();
  private capped = false;
  private censusLog: Change[] | undefined;
  private readonly timeline: TimelineItem[] = [];
  private seq = 0;
  private readonly sorted = new Map<string, { version: number; refs: RunningEntry[] }>();
  readonly series: Series;
  /** Bumped whenever the running records change. */
  version = 0;
  census: {
    at?: number;
    durationMs?: number;
    inProgress: boolean;
    error?: string;
  } = { inProgress: false };
  readonly warnings: string[] = [];
  /** Local ms this dashboard started: its charts span at most the time since. */
  readonly startedAt: number;
  /** Local ms from which the history read at start is complete (its oldest transition). */
  historyFrom: number | undefined;
  /** Transitions taken from the history: the same ones arriving live are not counted again. */
  private readonly past = new Set<string>();

  constructor(
    readonly maxTasks: number,
    now: () => number = Date.now,
  ) {
    this.startedAt = now();
    this.series = new Series(now);
    this.sessions = new Sessions((item) => this.push(item));
  }

  // -------------------------------------------------------------------------------
  // Events
  // -------------------------------------------------------------------------------

  /** One namespace event: on the timeline, in the rates, and applied to the running records. */
  onEvent(ev: NamespaceEvent, at: number): void {
    const w = decodeEvent(ev, at);
    // a transition read from the history at start, published just after: shown and counted once
    const seen = this.past.size > 0 && this.past.delete(transitionKey(w));
    if (!seen) this.push({ ...w, at });
    const ref = String(ev.r);
    if (w.event === 'took-over' && w.kind === 'connection-lost' && ev.from) {
      this.sessions.noteRevoked(String(ev.from));
    }
    if (w.event === 'claimed' || w.event === 'took-over' || w.event === 'reclaimed') {
      if (!seen) this.series.grant(ref, w.token, at, w.event === 'claimed' ? undefined : w.kind);
    } else if (w.event === 'done' || w.event === 'failed' || w.event === 'released') {
      if (!seen) this.series.outcome(ref, w.token, w.event, at);
    } else {
      return; // standby, rejected: no record changed
    }
    const entry: RunningEntry = {
      ref,
      task: w.task,
      session: w.session,
      worker: w.worker,
      token: w.token,
      attempt: w.attempt,
      claimedAt: at,
    };
    if (w.hash !== undefined) entry.hash = w.hash;
    const change: Change = {
      ref,
      running: w.state === 'running',
      state: w.state,
      token: w.token,
      session: w.session,
      entry,
    };
    if (w.kind !== undefined) change.kind = w.kind;
    if (ev.from) change.fromSession = String(ev.from);
    this.apply(change, 'live');
    if (this.censusLog && this.censusLog.length < CENSUS_LOG_MAX) this.censusLog.push(change);
  }

  /**
   * Transitions read from the history (oldest first): on the timeline before the live
   * events (its last TIMELINE_SIZE), and in the rates, each in its own second; each once
   * (with onEvent). No record count moves (the census's). Renumbers the timeline: call it
   * before the page is served. `from`: local ms from which the read is complete.
   */
  seedHistory(items: readonly PastEntry[], from?: number): number {
    if (from !== undefined) this.historyFrom = Math.min(from, this.startedAt);
    const live = new Set(this.timeline.map(transitionKey));
    const fresh = items.filter((t) => !live.has(transitionKey(t)));
    for (const t of fresh) {
      this.past.add(transitionKey(t));
      if (t.state === 'running')
        this.series.grant(t.ref, t.token, t.at, t.event === 'claimed' ? undefined : t.kind, true);
      else this.series.outcome(t.ref, t.token, t.event, t.at, true);
    }
    const kept = fresh.slice(Math.max(0, fresh.length - TIMELINE_SIZE)).map((t) => {
      const { ref: _ref, ...item } = t;
      return item;
    });
    const all = [...kept, ...this.timeline];
    this.timeline.length = 0;
    this.seq = 0;
    for (const item of all) this.push(item);
    this.version += 1;
    return fresh.length;
  }

  private push(item: Omit<TimelineItem, 'seq'>): void {
    this.seq += 1;
    this.timeline.push({ ...item, seq: this.seq } as TimelineItem);
    if (this.timeline.length > TIMELINE_SIZE + 100) this.timeline.splice(0, 100);
  }

  /** Timeline entries after `seq` (all kept ones for 0), at most `limit`, oldest first. */
  events(afterSeq: number, limit = TIMELINE_SIZE): TimelineItem[] {
    let i = this.timeline.length;
    while (i > 0 && (this.timeline[i - 1]?.seq ?? 0) > afterSeq) i -= 1;
    const out = this.timeline.slice(i);
    return out.length > limit ? out.slice(out.length - limit) : out;
  }

  get lastSeq(): number {
    return this.seq;
  }

  private addEntry(e: RunningEntry): void {
    if (this.entries.size >= this.maxTasks) {
      this.capped = true;
      return;
    }
    this.entries.set(e.ref, e);
    let set = this.bySession.get(e.session);
    if (!set) {
      set = new Set();
      this.bySession.set(e.session, set);
    }
    set.add(e.ref);
  }

  private removeEntry(e: RunningEntry): void {
    this.entries.delete(e.ref);
    const set = this.bySession.get(e.session);
    set?.delete(e.ref);
    if (set?.size === 0) this.bySession.delete(e.session);
  }

  private moveCount(session: string | undefined, by: number): void {
    if (session === undefined) return;
    const n = Math.max(0, (this.holderCounts.get(session) ?? 0) + by);
    if (n === 0) this.holderCounts.delete(session);
    else this.holderCounts.set(session, n);
  }

  /**
   * Apply a grant or an outcome. An event older than what is known (a lower token)
   * changes nothing; so does one applied twice. `counting`: how the counts move:
   * - 'live': with every event;
   * - 'replay': an event seen while a census ran, applied again to its complete result:
   *   a grant the census did not reflect counts, and an outcome counts only if the census
   *   saw the record running (else it read the outcome itself);
   * - 'none': not at all (a partial census: the next one corrects them).
   */
  private apply(c: Change, counting: 'live' | 'replay' | 'none'): void {
    const e = this.entries.get(c.ref);
    if (c.running) {
      if (e && e.token >= c.token) return;
      const prev = e?.session ?? c.fromSession;
      if (e) this.removeEntry(e);
      this.addEntry(c.entry);
      if (counting !== 'none') {
        if (c.kind === 'fresh') {
          this.counts.total += 1;
          this.counts.running += 1;
        } else if (
          c.kind === 'retry' ||
          c.kind === 'handover' ||
          // a worker taking back a task it released (not one it still held, seen running)
          (c.kind === 'reclaimed' && !e)
        ) {
          const from = c.kind === 'retry' ? 'failed' : 'released';
          this.counts[from] = Math.max(0, this.counts[from] - 1);
          this.counts.running += 1;
        } else {
          this.moveCount(prev, -1);
        }
        this.moveCount(c.session, 1);
      }
    } else {
      if (e && e.token > c.token) return;
      if (e) this.removeEntry(e);
      if (counting === 'live' || (counting === 'replay' && e)) {
        this.counts.running = Math.max(0, this.counts.running - 1);
        if (c.state === 'done' || c.state === 'failed' || c.state === 'released')
          this.counts[c.state] += 1;
        this.moveCount(e?.session ?? c.session, -1);
      }
    }
    this.version += 1;
  }

  /** Fields read from a record (deadline, progress, note) for an entry known from an event. */
  enrich(fresh: RunningEntry): void {
    const e = this.entries.get(fresh.ref);
    if (!e || e.token !== fresh.token) return;
    e.deadlineAt = fresh.deadlineAt;
    if (fresh.claimedAt !== undefined) e.claimedAt = fresh.claimedAt;
    if (fresh.progress !== undefined) e.progress = fresh.progress;
    if (fresh.note !== undefined) e.note = fresh.note;
    this.version += 1;
  }

  // -------------------------------------------------------------------------------
  // Census
  // -------------------------------------------------------------------------------

  beginCensus(): void {
    this.census.inProgress = true;
    this.censusLog = [];
  }

  finishCensus(r: CensusResult): void {
    const log = this.censusLog ?? [];
    this.censusLog = undefined;
    this.entries.clear();
    this.bySession.clear();
    this.holderCounts.clear();
    this.capped = r.capped;
    for (const e of r.entries) this.addEntry(e);
    for (const [s, n] of r.holders) this.holderCounts.set(s, n);
    this.counts = { ...r.counts };
    // events seen while the census ran: each record was read at some moment of it, so
    // apply them again; the token rule keeps what the census already reflects
    for (const c of log) this.apply(c, r.capped ? 'none' : 'replay');
    this.census = { at: r.startedAt, durationMs: r.durationMs, inProgress: false };
    this.version += 1;
  }

  failCensus(err: Error): void {
    this.censusLog = undefined;
    this.census = { ...this.census, inProgress: false, error: redisProblem(err) };
  }

  warn(line: string): void {
    this.warnings.push(line);
    if (this.warnings.length > 20) this.warnings.shift();
  }

  // -------------------------------------------------------------------------------
  // Views
  // -------------------------------------------------------------------------------

  private held(session: string): number {
    return this.capped
      ? (this.holderCounts.get(session) ?? 0)
      : (this.bySession.get(session)?.size ?? 0);
  }

  private alive(session: string): boolean {
    return this.sessions.alive(session);
  }

  private holderSessions(): string[] {
    return [...(this.capped ? this.holderCounts.keys() : this.bySession.keys())];
  }

  countsNow(): Counts & { orphaned: number } {
    const running = this.capped
      ? Math.max(this.counts.running, this.entries.size)
      : this.entries.size;
    let orphaned = 0;
    for (const s of this.holderSessions()) if (!this.alive(s)) orphaned += this.held(s);
    return { ...this.counts, running, orphaned };
  }

  /** Running records grouped by holder session: live holders first, then orphaned ones. */
  running(limit: number, offsets: Map<string, number>, maxGroups = 50) {
    const sessions = this.holderSessions().filter((s) => this.held(s) > 0);
    const workerOfSession = (s: string) => this.sessions.get(s)?.worker ?? workerOf(s);
    sessions.sort((a, b) => {
      const la = this.alive(a) ? 0 : 1;
      const lb = this.alive(b) ? 0 : 1;
      if (la !== lb) return la - lb;
      const wa = workerOfSession(a);
      const wb = workerOfSession(b);
      return wa < wb ? -1 : wa > wb ? 1 : a < b ? -1 : a > b ? 1 : 0;
    });
    const groups = sessions.slice(0, maxGroups).map((session) => {
      const all = this.sortedOf(session);
      const offset = Math.max(0, Math.min(offsets.get(session) ?? 0, Math.max(0, all.length - 1)));
      return {
        session,
        worker: workerOfSession(session),
        alive: this.alive(session),
        count: this.held(session),
        held: all.length,
        offset,
        items: all.slice(offset, offset + limit),
      };
    });
    // the holds of every session, from the same moment as the groups: the page shows
    // them beside each other (a worker's holds and its group's count must agree)
    const holds: Record<string, number> = {};
    for (const s of sessions) holds[s] = this.held(s);
    return {
      version: this.version,
      capped: this.capped,
      maxTasks: this.maxTasks,
      groups,
      holds,
      moreGroups: Math.max(0, sessions.length - maxGroups),
    };
  }

  private sortedOf(session: string): RunningEntry[] {
    const cached = this.sorted.get(session);
    if (cached && cached.version === this.version) return cached.refs;
    const refs: RunningEntry[] = [];
    for (const ref of this.bySession.get(session) ?? []) {
      const e = this.entries.get(ref);
      if (e) refs.push(e);
    }
    refs.sort((a, b) => (a.task < b.task ? -1 : a.task > b.task ? 1 : a.ref < b.ref ? -1 : 1));
    if (this.sorted.size > 200) this.sorted.clear();
    this.sorted.set(session, { version: this.version, refs });
    return refs;
  }

  /** Entries known only from their event, to be read for deadline and progress. */
  entry(ref: string): RunningEntry | undefined {
    return this.entries.get(ref);
  }

  workers() {
    const rows = this.sessions.rows().map((r) => ({ ...r, holds: this.held(r.session) }));
    rows.sort((a, b) => {
      const ga = a.gone ? 1 : 0;
      const gb = b.gone ? 1 : 0;
      if (ga !== gb) return ga - gb;
      return a.worker < b.worker ? -1 : a.worker > b.worker ? 1 : a.session < b.session ? -1 : 1;
    });
    return rows;
  }

  /**
   * The takeovers among the kept timeline entries, newest first: by worker (the one that
   * took over, or the one it was taken from) and by task id prefix.
   */
  takeovers(q: { limit: number; worker?: string; prefix?: string }) {
    const items: TimelineItem[] = [];
    let more = false;
    for (let i = this.timeline.length - 1; i >= 0; i--) {
      const t = this.timeline[i] as TimelineItem;
      if (t.event !== 'took-over') continue;
      if (q.worker && t.worker !== q.worker && t.from !== q.worker) continue;
      if (q.prefix && !t.task?.startsWith(q.prefix)) continue;
      if (items.length >= q.limit) {
        more = true;
        break;
      }
      items.push(t);
    }
    return { items, more, kept: TIMELINE_SIZE };
  }

  seriesNow(): SeriesSnapshot {
    return this.series.snapshot();
  }

  get isCapped(): boolean {
    return this.capped;
  }
}
