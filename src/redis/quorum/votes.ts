import { CorruptRecordError } from '../../shared/errors.js';
import type { ClaimReply } from '../store.js';
import type { NodeResult } from './nodes.js';

/*
 * Quorum mode: each node's claim answer as a vote (claim.ts counts them). Votes with the
 * same key agree: a grant of one token (g:), our own grant resumed (s:), a holder (h:),
 * an outcome (d, f:), claimable (c), our session gone (x), or a fault (e:).
 */

export type Granted = Extract<ClaimReply, { type: 'granted' }>;
export type Resumed = Extract<ClaimReply, { type: 'resumed' }>;

/** One node's claim answer, as a vote. */
export type ClaimVote =
  | { kind: 'grant'; token: number; node: number; reply: Granted }
  /** held by our own session already: a grant of an earlier claim of ours */
  | { kind: 'self'; token: number; node: number; reply: Resumed }
  | { kind: 'other'; key: string; node: number; reply: ClaimReply }
  | { kind: 'fault'; key: string; node: number; error: CorruptRecordError };

export type Ours = Extract<ClaimVote, { kind: 'grant' | 'self' }>;
/** How late in a task's life the record behind a grant's kind is (see grantReply). */
export const kindRank = (g: Granted): number =>
  g.kind === 'retry' || g.kind === 'handover' || g.kind === 'reclaimed'
    ? 2
    : g.kind === 'fresh'
      ? 0
      : 1;
export const isOurs = (v: ClaimVote): v is Ours => v.kind === 'grant' || v.kind === 'self';

/** A node whose answer failed (or never came): it may have granted. */
export const silent = (r: NodeResult<ClaimReply> | undefined) =>
  r !== undefined && !r.ok && !(r.error instanceof CorruptRecordError);

export function voteKey(v: ClaimVote): string {
  if (v.kind === 'grant') return `g:${v.token}`;
  if (v.kind === 'self') return `s:${v.token}`;
  return v.key;
}
/** The token of a majority of grants (g:) or of our own grant resumed (s:). */
export const ourToken = (key: string) =>
  key.startsWith('g:') || key.startsWith('s:') ? Number(key.slice(2)) : undefined;

export function voteOf(i: number, r: NodeResult<ClaimReply> | undefined): ClaimVote | undefined {
  if (!r) return undefined;
  if (!r.ok) {
    if (r.error instanceof CorruptRecordError)
      return { kind: 'fault', key: `e:${r.error.code}`, node: i, error: r.error };
    return undefined;
  }
  const reply = r.value;
  switch (reply.type) {
    case 'granted':
      return { kind: 'grant', token: reply.token, node: i, reply };
    case 'resumed':
      return { kind: 'self', token: reply.token, node: i, reply };
    case 'held':
      return { kind: 'other', key: `h:${reply.owner}`, node: i, reply };
    case 'done':
      return { kind: 'other', key: 'd', node: i, reply };
    case 'failed':
      return { kind: 'other', key: `f:${reply.terminal ? 1 : 0}`, node: i, reply };
    case 'claimable':
      return { kind: 'other', key: 'c', node: i, reply };
    case 'session-expired':
      return { kind: 'other', key: 'x', node: i, reply };
  }
}

export function votesOf(results: readonly (NodeResult<ClaimReply> | undefined)[]) {
  return results.map((r, i) => voteOf(i, r)).filter((v) => v !== undefined);
}
