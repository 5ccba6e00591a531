/**
 * The typed replies of the scripts in lua/ and the Store interface the worker speaks to.
 * Decisions are made in Lua; these only name the answers.
 */
import {
  type GrantKind,
  grantKinds,
  type RejectReason,
  ReplyCode,
  rejectReasons,
} from '../shared/codes.js';
import { CorruptRecordError, RedisUnavailableError } from '../shared/errors.js';
import type { TaskLocation } from './keys.js';
export type ClaimReply =
  | {
      type: 'granted';
      token: number;
      attempt: number;
      kind: GrantKind;
      deadlineInMs: number;
      serverNow: number;
      from: string;
    }
  | {
      type: 'held';
      owner: string;
      token: number;
      attempt: number;
      ownerPttl: number;
      deadlineInMs: number;
      /** The owner's change sequence when the record was read (see cover()). */
      ownerSeq: number;
    }
  | {
      type: 'done';
      owner: string;
      token: number;
      attempt: number;
      updatedAt: number;
      payload: string;
    }
  | {
      type: 'failed';
      owner: string;
      token: number;
      attempt: number;
      updatedAt: number;
      payload: string;
      terminal: boolean;
      retryInMs: number;
    }
  | {
      /** The claimer's own session already holds the task (its grant's reply was lost). */
      type: 'resumed';
      token: number;
      attempt: number;
      kind: GrantKind;
      /** The server's remaining time to the grant's deadline. */
      deadlineInMs: number;
      serverNow: number;
    }
  | { type: 'claimable'; kind: GrantKind }
  | { type: 'session-expired' };

export type OwnerReply =
  | {
      ok: true;
      token: number;
      attempt: number;
      serverNow: number;
      /** settle: a failure no retry will follow (the script's rule, as claim applies it). */
      final?: boolean;
      /** The record already held this outcome: a retried write whose first reply was lost. */
      repeated?: boolean;
    }
  | { ok: false; reason: RejectReason; token?: number; owner?: string; state?: string };

export type SessionReply =
  | { ok: true; serverNow: number; pttl: number }
  | { ok: false; reason: 'session-expired' | 'session-exists' };

export interface TaskRecord {
  state: 'running' | 'done' | 'failed' | 'released';
  token: number;
  attempt: number;
  /** Owner session id, `<workerId>#<epoch>`. */
  session: string;
  /** Worker id of the owner, `<name>:<random>`. */
  worker: string;
  /** Running: server ms of the task's deadline. Failed: server ms when a retry may be granted. */
  deadline: number;
  claimedAt: number;
  updatedAt: number;
  progress: number | undefined;
  /** Result (done), error (failed) or progress note (running), as stored JSON text. */
  payload: string;
  /** Remaining ms of the owner's session, 0 when it is gone. */
  ownerPttl: number;
  serverNow: number;
  /** Remaining ms the record is kept; -1 when it has no expiry. */
  keepMs: number;
}

export type InspectReply = { found: false; serverNow: number } | ({ found: true } & TaskRecord);

/** One watched task as the safety net saw it. */
export type PeekEntry =
  | { state: 'absent' }
  | { state: 'R' | 'D' | 'F' | 'X'; token: number; orphaned: boolean }
  | { state: 'error'; code: number };

export interface ClaimArgs {
  session: string;
  sessionTtlMs: number;
  taskTimeoutMs: number;
  retentionMs: number;
  maxAttempts: number;
  dryRun: boolean;
}

export interface SettleArgs {
  session: string;
  token: number;
  state: 'D' | 'F';
  payload: string;
  retentionMs: number;
  backoffMs: number;
  /** A failure settled at this attempt or later is final (reply `final`); 0 or absent: not asked. */
  maxAttempts?: number;
  /**
   * The grant's attempt as its claim reported it. A quorum node that missed some of the
   * task's grants counts fewer; it takes this count with the settle.
   */
  attempt?: number;
}

/** A holder as a standby's safety net sees it: session lease left, and change sequence. */
export interface HolderState {
  /**
   * ms left of the holder's session; 0 when it is gone; -1 when it lives but the time left
   * was not read (a bound holder checked with others, see lua/cover.lua).
   */
  pttl: number;
  /** +1 per batch of the holder's settles and releases; events carry it as `q`. */
  seq: number;
  /**
   * -2: the holder's session is not bound to a connection; -1: no sighting of its bound
   * connection gone; else ms until a claim may take its tasks over on that evidence (0:
   * now). Always -1 where the store reads no connection evidence.
   */
  lostInMs: number;
  /** Answered from another standby's recent check (cover.lua's check record), not read now. */
  shared?: true;
}

export type BindReply =
  | { ok: true; runId: string }
  | { ok: false; reason: 'session-expired' | 'not-subscribed' | 'newer-binding' }
  | { ok: false; reason: 'unsupported'; version: string };

/**
 * The connection a session is bound to (a worker's subscriber), as the holder sees it.
 * See binding.ts.
 */
export interface LiveLink {
  /** Subscribe the connection to the session's liveness channel (and leave `previous`'s). */
  follow(sessionId: string, previous: string): Promise<void>;
  /**
   * A subscription proof: a message published to `sessionId`'s liveness channel (on the
   * command connection) that arrived back on this very connection; rejects when it does
   * not (and reports `close` when it reached no subscriber).
   */
  ping(sessionId: string): Promise<void>;
  /** Whether the connection is up now. */
  readonly ready: boolean;
  /**
   * `ready`: after each (re)connect, once subscriptions are restored; `close`: dropped, or
   * its subscription was (the server unsubscribed it on its own).
   */
  on(event: 'ready' | 'close', listener: () => void): void;
}

/** A grant given back without an outcome (release.lua). */
export interface ReleaseArgs {
  session: string;
  token: number;
  retentionMs: number;
  /**
   * The grant was never run to an effect (its handler stopped on a lost lease, or nobody
   * was left to run it): it uses up no attempt.
   */
  unused?: boolean;
}

/** What pairlock needs from Redis. One implementation per topology. */
export interface Store {
  /**
   * True when a 'settled' event with a result is the outcome itself (published by the
   * script that settled, on the one Redis that decides), so a standby may resolve from it
   * without reading the record. False in quorum mode (one node's event is a hint) and
   * with replication safety (an outcome counts only once a replica has it).
   */
  readonly eventsAreOutcomes?: boolean;
  /** Connect within the bounded wait, or throw RedisUnavailableError. */
  connect(): Promise<void>;
  claim(loc: TaskLocation, a: ClaimArgs): Promise<ClaimReply>;
  settle(loc: TaskLocation, a: SettleArgs): Promise<OwnerReply>;
  release(loc: TaskLocation, a: ReleaseArgs): Promise<OwnerReply>;
  progress(
    loc: TaskLocation,
    a: { session: string; token: number; progress: number; note: string },
  ): Promise<OwnerReply>;
  inspect(loc: TaskLocation): Promise<InspectReply>;
  peek(locs: readonly TaskLocation[]): Promise<PeekEntry[]>;
  /**
   * The safety net of a standby, per holder it covers (calls of one turn share one script
   * call): is the holder's session alive, and how far is its change sequence? `shareMs`:
   * a check of the holder that any standby made this recently may answer (0: never).
   */
  cover(session: string, shareMs?: number): Promise<HolderState>;
  session(
    op: 'open' | 'renew' | 'close' | 'ttl' | 'describe',
    sessionId: string,
    ttlMs: number,
    desc?: string,
  ): Promise<SessionReply>;
  /**
   * Bind `sessionId` to the connection `liveLink()` returns, or untie it (bind-2.lua).
   * Absent where sessions are never bound (quorum mode).
   */
  bind?(
    op: 'bind' | 'unbind',
    sessionId: string,
    epoch: number,
    graceMs: number,
  ): Promise<BindReply>;
  /** The connection sessions are bound to, once subscribed; undefined without one. */
  liveLink?(): LiveLink | undefined;
  /** Deliver namespace events; `onReconnect` runs after the subscription is restored. */
  subscribe(onMessage: (msg: string) => void, onReconnect: () => void): Promise<void>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------
// Reply decoding
// ---------------------------------------------------------------------------------

export type Raw = (string | number)[];
export const num = (v: unknown): number => Number(v);
export const str = (v: unknown): string => (v === null || v === undefined ? '' : String(v));

export function faultToError(reply: Raw, loc: TaskLocation): CorruptRecordError | undefined {
  const code = reply[0];
  const where = loc.field ? `${loc.container} field ${JSON.stringify(loc.field)}` : loc.container;
  if (code === ReplyCode.Corrupt) {
    return new CorruptRecordError(
      'ERR_CORRUPT_RECORD',
      `the record of task ${JSON.stringify(loc.taskId)} at ${where} is not a pairlock record (starts with ${JSON.stringify(str(reply[1]))}); delete it or use another task id`,
      loc.container,
      loc.field || undefined,
    );
  }
  if (code === ReplyCode.NewerFormat) {
    return new CorruptRecordError(
      'ERR_NEWER_FORMAT',
      `the record of task ${JSON.stringify(loc.taskId)} at ${where} has format version ${str(reply[1])}, newer than this pairlock understands; upgrade pairlock on this worker`,
      loc.container,
      loc.field || undefined,
    );
  }
  if (code === ReplyCode.WrongType) {
    return new CorruptRecordError(
      'ERR_WRONG_TYPE',
      `the key ${where} of task ${JSON.stringify(loc.taskId)} holds a value of another type (expected ${str(reply[1])}); it is not pairlock's`,
      loc.container,
      loc.field || undefined,
    );
  }
  return undefined;
}

export function decodeClaim(reply: Raw, loc: TaskLocation): ClaimReply {
  const fault = faultToError(reply, loc);
  if (fault) throw fault;
  switch (reply[0]) {
    case ReplyCode.Granted:
      return {
        type: 'granted',
        token: num(reply[1]),
        attempt: num(reply[2]),
        kind: grantKinds[num(reply[3])] ?? 'fresh',
        deadlineInMs: num(reply[4]),
        serverNow: num(reply[5]),
        from: str(reply[6]),
      };
    case ReplyCode.Held:
      return {
        type: 'held',
        owner: str(reply[1]),
        token: num(reply[2]),
        attempt: num(reply[3]),
        ownerPttl: num(reply[4]),
        deadlineInMs: num(reply[5]),
        ownerSeq: num(reply[6] ?? 0),
      };
    case ReplyCode.Done:
      return {
        type: 'done',
        owner: str(reply[1]),
        token: num(reply[2]),
        attempt: num(reply[3]),
        updatedAt: num(reply[4]),
        payload: str(reply[5]),
      };
    case ReplyCode.Failed:
      return {
        type: 'failed',
        owner: str(reply[1]),
        token: num(reply[2]),
        attempt: num(reply[3]),
        updatedAt: num(reply[4]),
        payload: str(reply[5]),
        terminal: num(reply[6]) === 1,
        retryInMs: num(reply[7]),
      };
    case ReplyCode.Resumed:
      return {
        type: 'resumed',
        token: num(reply[1]),
        attempt: num(reply[2]),
        kind: grantKinds[num(reply[3])] ?? 'fresh',
        deadlineInMs: num(reply[4]),
        serverNow: num(reply[5]),
      };
    case ReplyCode.Claimable:
      return { type: 'claimable', kind: grantKinds[num(reply[1])] ?? 'fresh' };
    case ReplyCode.ClaimerSessionExpired:
      return { type: 'session-expired' };
    case ReplyCode.OwnerUndeclared:
      // the task changed hands at every one of the claim's rounds (see declared.ts)
      throw new RedisUnavailableError(
        `task ${JSON.stringify(loc.taskId)} changed owner at every round of its claim; retrying`,
      );
    default:
      throw new Error(`unexpected claim reply ${JSON.stringify(reply)}`);
  }
}

export function decodeOwner(reply: Raw, loc: TaskLocation): OwnerReply {
  const fault = faultToError(reply, loc);
  if (fault) throw fault;
  const code = num(reply[0]);
  if (code === ReplyCode.Ok) {
    return {
      ok: true,
      token: num(reply[1] ?? 0),
      attempt: num(reply[2] ?? 0),
      serverNow: num(reply[3] ?? reply[1]),
      final: num(reply[4] ?? 0) === 1,
      repeated: num(reply[5] ?? 0) === 1,
    };
  }
  const reason = rejectReasons[code];
  if (!reason) throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
  const out: OwnerReply = { ok: false, reason };
  if (code === ReplyCode.NotOwner || code === ReplyCode.TokenSuperseded) {
    out.token = num(reply[1]);
    out.owner = str(reply[2]);
  }
  if (code === ReplyCode.AlreadySettled) out.state = str(reply[1]);
  return out;
}

const stateNames = { R: 'running', D: 'done', F: 'failed', X: 'released' } as const;

export function workerOf(session: string): string {
  const i = session.lastIndexOf('#');
  return i < 0 ? session : session.slice(0, i);
}

export function decodeInspect(reply: Raw, loc: TaskLocation): InspectReply {
  const fault = faultToError(reply, loc);
  if (fault) throw fault;
  if (reply[0] === ReplyCode.Absent) return { found: false, serverNow: num(reply[1]) };
  const session = str(reply[4]);
  const progress = str(reply[8]);
  return {
    found: true,
    state: stateNames[str(reply[1]) as keyof typeof stateNames],
    token: num(reply[2]),
    attempt: num(reply[3]),
    session,
    worker: workerOf(session),
    deadline: num(reply[5]),
    claimedAt: num(reply[6]),
    updatedAt: num(reply[7]),
    progress: progress === '' ? undefined : Number(progress),
    payload: str(reply[9]),
    ownerPttl: num(reply[10]),
    serverNow: num(reply[11]),
    keepMs: num(reply[12]),
  };
}

export function decodePeek(entry: string): PeekEntry {
  if (entry === '') return { state: 'absent' };
  const [s, k, o] = entry.split(':');
  if (s === 'E') return { state: 'error', code: Number(k) };
  // '?': the owner's session was not declared; a claim decides
  return { state: s as 'R' | 'D' | 'F' | 'X', token: Number(k), orphaned: o !== '0' };
}

export function decodeSession(reply: Raw): SessionReply {
  if (reply[0] === ReplyCode.Ok) return { ok: true, serverNow: num(reply[1]), pttl: num(reply[2]) };
  if (reply[0] === ReplyCode.SessionExists) return { ok: false, reason: 'session-exists' };
  if (reply[0] === ReplyCode.SessionExpired) return { ok: false, reason: 'session-expired' };
  throw new Error(`unexpected session reply ${JSON.stringify(reply)}`);
}
