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
export function claimArgs(
  c: ScriptContext,
  g: ClaimGroup,
  items: readonly ClaimItem[],
  owners: readonly string[],
): (string | number)[] {
  const k = c.keys;
  const keys: string[] = [k.session(g.session), watchFlag(k), k.history];
  for (const o of owners) keys.push(k.session(o), k.seq(o), k.bind(o));
  const argv: (string | number)[] = [
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
    ...owners,
  ];
  for (const { loc, minToken } of items) {
    keys.push(loc.container, loc.index);
    argv.push(loc.field, loc.ref, minToken ?? '');
  }
  return [keys.length, ...keys, ...argv];
}

/** settle.lua */
export function settleArgs(
  c: ScriptContext,
  g: SettleGroup,
  items: readonly SettleItem[],
): (string | number)[] {
  const k = c.keys;
  const keys: string[] = [k.session(g.session), k.seq(g.session), watchFlag(k), k.history];
  const argv: (string | number)[] = [
    g.session,
    g.retentionMs,
    g.backoffMs,
    g.maxAttempts,
    c.eventChannel,
    c.historyLength,
  ];
  for (const it of items) {
    keys.push(it.loc.container, it.loc.index);
    argv.push(it.loc.field, it.loc.ref, it.token, it.state, it.payload, it.attempt ?? '');
  }
  return [keys.length, ...keys, ...argv];
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
