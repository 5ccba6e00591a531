/**
 * Worker sessions as the dashboard sees them: one row per session key, with its last TTL
 * reading. A session whose key is gone stays for GONE_KEEP_MS, marked `expired` (nothing
 * was left of its TTL), `revoked` (a takeover on connection evidence deleted it: its
 * worker's connection was gone) or `closed` (it went with time left: the worker closed it).
 */
import type { TimelineItem } from './state.js';

/** How long a session that expired or closed stays on the page. */
export const GONE_KEEP_MS = 120_000;
/** A TTL higher than expected by more than this was renewed (readings are not instants). */
const RENEW_TOLERANCE_MS = 50;

export interface SessionRow {
  session: string;
  worker: string;
  host?: string;
  pid?: number;
  startedAt?: number;
  /** Remaining TTL at `at` (local ms of the reading). */
  ttlMs: number;
  at: number;
  /** The longest TTL seen: the session's TTL, once a renewal was seen. */
  ttlMaxMs: number;
  /** Local ms of the last renewal, estimated from the readings once one was seen. */
  renewedAt?: number;
  renewSeen?: boolean;
  gone?: { at: number; reason: 'expired' | 'closed' | 'revoked' };
  /** The worker says in its session description that it is paused (claims nothing new). */
  paused?: boolean;
}

/** What a session's description record says besides its identity (read with its TTL). */
export interface SessionDesc {
  paused?: boolean;
}

/** A session as a scan finds it (`liveSessions` of `pairlock stats`). */
export interface FoundSession {
  session: string;
  worker: string;
  host?: string;
  pid?: number;
  startedAt?: number;
  ttlMs: number;
  paused?: boolean;
}

export class Sessions {
  private readonly rowsBySession = new Map<string, SessionRow>();
  private discovered = false;
  /** Sessions a connection-lost takeover revoked (its event names them), bounded. */
  private readonly revoked = new Set<string>();

  /** `push`: a timeline entry for a session that started or ended. */
  constructor(private readonly push: (item: Omit<TimelineItem, 'seq'>) => void) {}

  has(session: string): boolean {
    return this.rowsBySession.has(session);
  }

  get(session: string): SessionRow | undefined {
    return this.rowsBySession.get(session);
  }

  /** A `connection-lost` takeover revoked `session`: it goes as `revoked`, not `closed`. */
  noteRevoked(session: string): void {
    // the event may come after a reading found the key gone: the reason is corrected
    const row = this.rowsBySession.get(session);
    if (row?.gone) row.gone.reason = 'revoked';
    this.revoked.add(session);
    if (this.revoked.size > 1_000) {
      const oldest = this.revoked.values().next().value;
      if (oldest !== undefined) this.revoked.delete(oldest);
    }
  }

  alive(session: string): boolean {
    const row = this.rowsBySession.get(session);
    return row !== undefined && !row.gone;
  }

  rows(): SessionRow[] {
    return [...this.rowsBySession.values()];
  }

  /** Known live sessions, for the TTL readings between scans. */
  live(): string[] {
    return this.rows()
      .filter((r) => !r.gone)
      .map((r) => r.session);
  }

  /** Every live session found by a scan: new ones are added, missing ones marked gone. */
  discover(found: FoundSession[], at: number): void {
    const seen = new Set<string>();
    for (const f of found) {
      seen.add(f.session);
      const row = this.rowsBySession.get(f.session);
      // a known row: its TTL readings come from `readings` (a scan's are less exact: the
      // scan may take long between a key's PTTL and `at`); a session id never comes back
      if (row) continue;
      this.rowsBySession.set(f.session, { ...f, at, ttlMaxMs: f.ttlMs });
      // the sessions found by the first scan were there before: not news
      if (this.discovered) {
        this.push({ at, event: 'session-new', worker: f.worker, session: f.session });
      }
    }
    for (const row of this.rowsBySession.values())
      if (!row.gone && !seen.has(row.session)) this.markGone(row, at);
    this.discovered = true;
    this.prune(at);
  }

  /** TTL readings (`-2`: the key is gone), each with the description read beside it. */
  readings(values: [string, number, SessionDesc?][], at: number): void {
    for (const [session, pttl, desc] of values) {
      const row = this.rowsBySession.get(session);
      if (!row || row.gone) continue;
      if (pttl < 0) this.markGone(row, at);
      else {
        this.reading(row, pttl, at);
        if (desc) {
          if (desc.paused) row.paused = true;
          else delete row.paused;
        }
      }
    }
    this.prune(at);
  }

  private reading(row: SessionRow, pttl: number, at: number): void {
    // a TTL above what is left of the last reading: the session was renewed in between.
    // Once a renewal was seen, the longest TTL seen is the session's TTL, and the time
    // since the last renewal is what is missing from it.
    if (pttl > row.ttlMs - (at - row.at) + RENEW_TOLERANCE_MS) row.renewSeen = true;
    row.ttlMaxMs = Math.max(row.ttlMaxMs, pttl);
    row.ttlMs = pttl;
    row.at = at;
    if (row.renewSeen) row.renewedAt = at - (row.ttlMaxMs - pttl);
  }

  private markGone(row: SessionRow, at: number): void {
    // revoked by a takeover on connection evidence (its event names it); else gone with
    // (almost) nothing left of its TTL: it expired; else it was closed
    const left = row.ttlMs - (at - row.at);
    const reason = this.revoked.has(row.session) ? 'revoked' : left <= 250 ? 'expired' : 'closed';
    row.gone = { at, reason };
    this.push({
      at,
      event: 'session-gone',
      worker: row.worker,
      session: row.session,
      reason: row.gone.reason,
    });
  }

  private prune(at: number): void {
    for (const [s, row] of this.rowsBySession)
      if (row.gone && at - row.gone.at > GONE_KEEP_MS) this.rowsBySession.delete(s);
  }
}
