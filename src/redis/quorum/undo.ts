import type { TaskLocation } from '../keys.js';
import type { ClaimArgs, ClaimReply, RedisStore } from '../store.js';
import type { QuorumNodes } from './nodes.js';

/*
 * Quorum mode: the claimer's undos (undo-2.lua), and what keeps them from taking back a
 * grant that is in use. undo-2.lua's argument needs "a grant that is used is never
 * undone"; three rules here make it so:
 *
 *   - A claim of a task on a node waits for our undos of that task on that node still on
 *     their way: after an exact undo the node may grant the same session and token again,
 *     and an undo that ran after such a grant would take back the wrong one. (Two scripts
 *     in a row on one connection are not enough: a NOSCRIPT resend goes last.)
 *   - Claims are numbered per node and task. An undo is not sent to a node where a later
 *     claim of the task was sent since its round's: that claim came after on the same
 *     connection, saw what the earlier one left there and answered for it, and an undo
 *     sent now would run after it (a late answer, or a timeout, of an earlier round).
 *   - The grant handed to the worker (granted or resumed) may be running: no later claim of
 *     the same session undoes it, not even blindly on a node whose answer never came,
 *     until it is settled or released, or a majority shows an outcome.
 */

/** The claims sent to the nodes in one round: node -> the claim's number. */
export type Round = Map<number, number>;

/** A grant of ours as one node showed it. */
export interface OurGrant {
  readonly node: number;
  readonly token: number;
}

/** How many tasks (per node, or per session) the bookkeeping remembers; the oldest go first. */
const REMEMBERED_MAX = 1_000_000;

/** Set `key` as the newest entry of a map bounded to REMEMBERED_MAX entries. */
function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > REMEMBERED_MAX) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
}

const nodeKey = (i: number, ref: string) => `${i}:${ref}`;
const sessionKey = (session: string, ref: string) => `${session}\n${ref}`;

export class Undos {
  /** node + ref -> our undos of that task on that node still on their way (never rejects). */
  private readonly pending = new Map<string, Promise<unknown>>();
  /** node + ref -> the number of the latest claim of that task sent to that node. */
  private readonly lastClaim = new Map<string, number>();
  private claimsSent = 0;
  /** session + ref -> the token of the grant handed to that session. */
  private readonly handedOut = new Map<string, number>();

  constructor(private readonly nodes: QuorumNodes) {}

  /** Before a claim of `ref` on node i: wait for our undos there, and number the claim. */
  async beforeClaim(i: number, ref: string, round: Round): Promise<void> {
    const key = nodeKey(i, ref);
    await this.pending.get(key);
    const n = ++this.claimsSent;
    remember(this.lastClaim, key, n);
    round.set(i, n);
  }

  /** What a claim answered the worker: a grant is kept from our undos; an outcome frees it. */
  answered(session: string, ref: string, reply: ClaimReply): void {
    const key = sessionKey(session, ref);
    if (reply.type === 'granted' || reply.type === 'resumed')
      remember(this.handedOut, key, reply.token);
    // a majority holds an outcome: our grant is settled or superseded. (Not on 'held':
    // that answer may be the largest group of a split, not a majority.)
    else if (reply.type === 'done' || reply.type === 'failed') this.handedOut.delete(key);
  }

  /** The grant of `session` for `ref` was settled or released: it no longer needs keeping. */
  forget(session: string, ref: string, token: number): void {
    const key = sessionKey(session, ref);
    if (this.handedOut.get(key) === token) this.handedOut.delete(key);
  }

  /** The token of the grant handed to `session` for `ref`, while it is kept. */
  used(session: string, ref: string): number | undefined {
    return this.handedOut.get(sessionKey(session, ref));
  }

  /**
   * Take back our grants: those `grants` show, and whatever grant of ours the silent nodes
   * hold, except `keep` (the grant the round won). Resolves once the nodes that showed a
   * grant have answered; a silent node may be slow to, and is not waited for here.
   */
  undo(
    round: Round,
    loc: TaskLocation,
    a: ClaimArgs,
    grants: readonly OurGrant[],
    silentNodes: readonly number[],
    keep: number | undefined,
    announce: boolean,
  ): Promise<unknown> {
    if (a.dryRun) return Promise.resolve();
    const current = (i: number) => this.lastClaim.get(nodeKey(i, loc.ref)) === round.get(i);
    // The grant handed out stays, unless this round won that very token again: its
    // majority then holds it, and these nodes are outside that majority.
    const used = this.used(a.session, loc.ref);
    const spare = keep !== undefined && keep === used ? undefined : used;
    const base = { session: a.session, retentionMs: a.retentionMs, announce };
    for (const i of silentNodes.filter(current))
      this.undoOn(i, loc, { ...base, keep: keep ?? used }).catch(() => {});
    return Promise.allSettled(
      grants
        .filter((g) => current(g.node) && g.token !== spare)
        .map((g) => this.undoOn(g.node, loc, { ...base, token: g.token })),
    );
  }

  /** One undo on node i; our next claim of the task there waits for it. */
  undoOn(i: number, loc: TaskLocation, args: Parameters<RedisStore['undo']>[1]): Promise<boolean> {
    const node = this.nodes.list[i];
    if (!node) return Promise.resolve(false);
    const key = nodeKey(i, loc.ref);
    const call = node.undo(loc, args);
    const settled: Promise<unknown> = Promise.allSettled([this.pending.get(key), call]).then(() => {
      if (this.pending.get(key) === settled) this.pending.delete(key);
    });
    this.pending.set(key, settled);
    return call;
  }
}
