/**
 * The argument layouts of the batch scripts (each script's contract header in lua/): KEYS
 * and ARGV, built once per batch call. Every key a script touches is declared
 * (declared.ts).
 */
import type { Keys, TaskLocation } from './keys.js';
import type { ClaimArgs, Raw } from './replies.js';

export interface Answer {
  raw: Raw;
  acked: number;
}
export type ClaimGroup = Omit<ClaimArgs, never> & { quorum: boolean };
export interface ClaimItem {
  loc: TaskLocation;
  minToken: number | undefined;
}
export interface SettleGroup {
  session: string;
  retentionMs: number;
  backoffMs: number;
  maxAttempts: number;
}
export interface OwnerItem {
  loc: TaskLocation;
  token: number;
}
export type SettleItem = OwnerItem & {
  state: 'D' | 'F';
  payload: string;
  attempt: number | undefined;
};
export type ProgressItem = OwnerItem & { progress: number; note: string };
export interface ReleaseGroup {
  session: string;
  retentionMs: number;
  /** The grants were never run to an effect: they use up no attempt (release.lua). */
  unused: boolean;
}
/** Calls whose caller arguments are equal share a batch. */
// (built by hand: a JSON.stringify per call was 3% of a pair's CPU; session ids hold no '|')
export const claimKey = (g: ClaimGroup): string =>
  `${g.session}|${g.sessionTtlMs}|${g.taskTimeoutMs}|${g.retentionMs}|${g.maxAttempts}|${g.dryRun ? 1 : 0}|${g.quorum ? 1 : 0}`;
export const settleKey = (g: SettleGroup): string =>
  `${g.session}|${g.retentionMs}|${g.backoffMs}|${g.maxAttempts}`;
export const releaseKey = (g: ReleaseGroup): string =>
  `${g.session}|${g.retentionMs}|${g.unused ? 1 : 0}`;

/**
 * The group of the last call of one kind, and its batch key: consecutive calls nearly
 * always share them, so a call builds neither again when its arguments match.
 * `groupOf(a, x, last)` answers `last` when it matches, else a new group.
 */
export class LastGroup<A, X, G> {
  private group: G | undefined;
  /** The batch key of the group `of` answered last. */
  key = '';

  constructor(
    private readonly groupOf: (a: A, x: X, last: G | undefined) => G,
    private readonly keyOf: (g: G) => string,
  ) {}

  of(a: A, x: X): G {
    const g = this.groupOf(a, x, this.group);
    if (g !== this.group) {
      this.group = g;
      this.key = this.keyOf(g);
    }
    return g;
  }
}

/** A claim's group (x: quorum mode), or `last` when it is the same. */
export function claimGroupOf(
  a: ClaimArgs,
  quorum: boolean,
  last: ClaimGroup | undefined,
): ClaimGroup {
  if (
    last !== undefined &&
    last.session === a.session &&
    last.sessionTtlMs === a.sessionTtlMs &&
    last.taskTimeoutMs === a.taskTimeoutMs &&
    last.retentionMs === a.retentionMs &&
    last.maxAttempts === a.maxAttempts &&
    last.dryRun === a.dryRun &&
    last.quorum === quorum
  )
    return last;
  const { session, sessionTtlMs, taskTimeoutMs, retentionMs, maxAttempts, dryRun } = a;
  return { session, sessionTtlMs, taskTimeoutMs, retentionMs, maxAttempts, dryRun, quorum };
}

/** A settle's group (x: max attempts, 0 when not asked), or `last` when it is the same. */
export function settleGroupOf(
  a: { session: string; retentionMs: number; backoffMs: number },
  maxAttempts: number,
  last: SettleGroup | undefined,
): SettleGroup {
  if (
    last !== undefined &&
    last.session === a.session &&
    last.retentionMs === a.retentionMs &&
    last.backoffMs === a.backoffMs &&
    last.maxAttempts === maxAttempts
  )
    return last;
  return { session: a.session, retentionMs: a.retentionMs, backoffMs: a.backoffMs, maxAttempts };
}

/** What the arguments are built from: the namespace's keys and the store's settings. */
export interface ScriptContext {
  readonly keys: Keys;
  /** The namespace channel, '#'-marked for SPUBLISH ('' for none). */
  readonly eventChannel: string;
  /** The liveness channels' prefix as the scripts take it ('#'-marked when sharded). */
  readonly livePrefix: string;
  /** Entries the task history keeps (0: none). */
  readonly historyLength: number;
}

/** The "someone watches" flag (`pairlock watch`), declared by the scripts that read it. */
const watchFlag = (keys: Keys): string => `${keys.channel}:watching`;

/** claim.lua: the claimer, its declared owners (itself first), then each task. */
// (numkeys, keys and argv written into one array in place: the copies of a keys array and
// an argv array spread into a third were a visible part of a batch's cost)
export function claimArgs(
  c: ScriptContext,
  g: ClaimGroup,
  items: readonly ClaimItem[],
  owners: readonly string[],
): (string | number)[] {
  const k = c.keys;
  const n = items.length;
  const numKeys = 3 + 3 * owners.length + 2 * n;
  const out: (string | number)[] = [numKeys, k.session(g.session), watchFlag(k), k.history];
  for (const o of owners) out.push(k.session(o), k.seq(o), k.bind(o));
  for (let i = 0; i < n; i++) {
    const loc = (items[i] as ClaimItem).loc;
    out.push(loc.container, loc.index);
  }
  out.push(
    g.session,
    c.historyLength, // a dry run writes nothing, history neither
    g.sessionTtlMs,
    g.taskTimeoutMs,
    g.retentionMs,
    g.maxAttempts,
    g.dryRun ? '1' : '0',
    c.eventChannel,
    g.quorum ? '1' : '',
    owners.length,
    '1',
    c.livePrefix,
  );
  for (const o of owners) out.push(o);
  for (let i = 0; i < n; i++) {
    const { loc, minToken } = items[i] as ClaimItem;
    out.push(loc.field, loc.ref, minToken ?? '');
  }
  return out;
}

/** settle.lua */
export function settleArgs(
  c: ScriptContext,
  g: SettleGroup,
  items: readonly SettleItem[],
): (string | number)[] {
  const k = c.keys;
  const n = items.length;
  const out: (string | number)[] = [
    4 + 2 * n,
    k.session(g.session),
    k.seq(g.session),
    watchFlag(k),
    k.history,
  ];
  for (let i = 0; i < n; i++) {
    const loc = (items[i] as SettleItem).loc;
    out.push(loc.container, loc.index);
  }
  out.push(g.session, g.retentionMs, g.backoffMs, g.maxAttempts, c.eventChannel, c.historyLength);
  for (let i = 0; i < n; i++) {
    const it = items[i] as SettleItem;
    out.push(it.loc.field, it.loc.ref, it.token, it.state, it.payload, it.attempt ?? '');
  }
  return out;
}

/** release.lua */
export function releaseArgs(
  c: ScriptContext,
  g: ReleaseGroup,
  items: readonly OwnerItem[],
): (string | number)[] {
  const k = c.keys;
  const keys: string[] = [k.session(g.session), k.seq(g.session), k.history];
  const argv: (string | number)[] = [
    g.session,
    g.retentionMs,
    c.eventChannel,
    g.unused ? '1' : '',
    c.historyLength,
  ];
  for (const it of items) {
    keys.push(it.loc.container, it.loc.index);
    argv.push(it.loc.field, it.loc.ref, it.token);
  }
  return [keys.length, ...keys, ...argv];
}

/** progress.lua */
export function progressArgs(
  keys: Keys,
  session: string,
  items: readonly ProgressItem[],
): (string | number)[] {
  const ks: string[] = [keys.session(session)];
  const argv: (string | number)[] = [session];
  for (const it of items) {
    ks.push(it.loc.container, it.loc.index);
    argv.push(it.loc.field, it.token, String(it.progress), it.note);
  }
  return [ks.length, ...ks, ...argv];
}

/** cover.lua: every holder's session, sequence and binding, then the check record. */
export function coverArgs(
  c: ScriptContext,
  sessions: readonly string[],
  shareMs: number,
): (string | number)[] {
  const k = c.keys;
  const keys = sessions.flatMap((s) => [k.session(s), k.seq(s), k.bind(s)]);
  keys.push(k.checks);
  return [keys.length, ...keys, c.livePrefix, shareMs, '', ...sessions];
}
