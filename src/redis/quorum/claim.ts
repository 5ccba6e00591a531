import { performance } from 'node:perf_hooks';
import { NoQuorumError } from '../../shared/errors.js';
import type { TaskLocation } from '../keys.js';
import type { ClaimArgs, ClaimReply } from '../store.js';
import { atLeastOnQuorum, count, type NodeResult, type QuorumNodes } from './nodes.js';
import { type Round, Undos } from './undo.js';
import {
  type ClaimVote,
  type Granted,
  isOurs,
  kindRank,
  type Ours,
  ourToken,
  silent,
  voteKey,
  voteOf,
  votesOf,
} from './votes.js';

/*
 * Quorum mode: the claim. Redlock over claim.lua and undo-2.lua.
 *
 *   - A claim is sent to every node; it is a grant when a majority granted one token within
 *     its validity: min(sessionTtl, taskTimeout) − elapsed − drift, from when it was sent.
 *   - Every other grant of ours is undone (the node restores the record the grant
 *     replaced, exactly): on the nodes that answered with it, and on every node that may
 *     have granted without our knowing, its answer failed or came after the timeout (an
 *     undo without a token: whichever grant of ours it holds, except the one we won).
 *   - A majority of nodes that already hold our own grant with one token answer 'resumed'
 *     (claim.lua): an earlier claim of ours won, and its answer was lost. That grant is
 *     resumed, as on one Redis. Our own grant on fewer nodes is a leftover: undone.
 *   - A majority of grants with different tokens (a node missed grants while it was away)
 *     is made one: the lower ones are undone and claimed again with the highest token as
 *     the minimum. Any two majorities share a node, so each grant's token is above every
 *     earlier grant's (undo-2.lua explains why an undo keeps this true).
 *   - Undos never take back a grant in use, nor run after a later claim (undo.ts).
 *   - A takeover because the holder's session expired is used only once that session is
 *     gone on a majority (liveHolder).
 *   - Without a grant, the majority view of the task; an outcome settled on some nodes and
 *     nothing newer on the others is written back (read repair).
 */

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** The same rule as the worker's lease drift (driftMs in worker.ts): 1% of the TTL + 2 ms. */
const drift = (ttlMs: number) => Math.floor(ttlMs * 0.01) + 2;
/** Retry delay after a split vote or a late grant, as in Redlock: short and jittered. */
const jitter = () => 20 + Math.floor(Math.random() * 80);
/** Rounds of one claim() call before a persistent disagreement is reported. */
const CLAIM_ROUNDS = 3;
/** Tasks whose claims found the nodes split, remembered for their backoff. */
const SPLITS_MAX = 10_000;

type ClaimRound = { type: 'reply'; reply: ClaimReply } | { type: 'retry'; why: string };

export class QuorumClaims {
  /** ref -> consecutive split claims (bounded). */
  private readonly splits = new Map<string, number>();
  /** Our undos, and the bookkeeping that keeps them off grants in use (undo.ts). */
  private readonly undos: Undos;

  constructor(
    private readonly nodes: QuorumNodes,
    /** A holder's session as the majority sees it (QuorumStore.cover): pttl 0 when gone. */
    private readonly holder: (session: string) => Promise<{ pttl: number }>,
  ) {
    this.undos = new Undos(nodes);
  }

  async claim(loc: TaskLocation, a: ClaimArgs): Promise<ClaimReply> {
    let why = '';
    for (let round = 1; round <= CLAIM_ROUNDS; round++) {
      const r = await this.claimRound(loc, a);
      if (r.type === 'reply') {
        if (r.reply.type !== 'held' || r.reply.deadlineInMs > 2_000) this.splits.delete(loc.ref);
        if (!a.dryRun) this.undos.answered(a.session, loc.ref, r.reply);
        return r.reply;
      }
      why = r.why;
      if (round < CLAIM_ROUNDS) await sleep(jitter());
    }
    throw new NoQuorumError(
      `claim of task ${JSON.stringify(loc.taskId)}: ${why} (${CLAIM_ROUNDS} rounds)`,
    );
  }

  /** The grant of `session` for `loc` was settled or released: it no longer needs keeping. */
  forget(session: string, loc: TaskLocation, token: number): void {
    this.undos.forget(session, loc.ref, token);
  }

  /** Claim on node i, once our undos of the task there have answered. */
  private async claimOn(
    i: number,
    loc: TaskLocation,
    a: ClaimArgs,
    minToken: number,
    round: Round,
  ) {
    const node = this.nodes.list[i];
    if (!node) throw new Error(`quorum: no node ${i}`);
    await this.undos.beforeClaim(i, loc.ref, round);
    return node.claimAtLeast(loc, a, minToken);
  }

  private async claimRound(loc: TaskLocation, a: ClaimArgs): Promise<ClaimRound> {
    const q = this.nodes.quorum;
    const round: Round = new Map();
    const sent = now();
    const ttl = Math.min(a.sessionTtlMs, a.taskTimeoutMs);
    const validFor = () => ttl - (now() - sent) - drift(ttl);
    /** The grant we won (its vote key and token), once we did: late answers with it join it. */
    let won: { key: string; token: number } | undefined;

    const decided = await this.nodes.gather<
      ClaimReply,
      { results: readonly (NodeResult<ClaimReply> | undefined)[] }
    >(
      (_node, i) => this.claimOn(i, loc, a, 0, round),
      (results, done) => {
        for (const [key, list] of count(votesOf(results), voteKey)) {
          // a majority for one answer cannot change whatever the others say
          if (list.length >= q) {
            const token = ourToken(key);
            if (token !== undefined) won = { key, token };
            return { results: [...results] };
          }
        }
        return done ? { results: [...results] } : undefined;
      },
      (late, i) => {
        // an answer after the decision: a grant that is not the one we won is taken back,
        // and so is whatever a node that failed or timed out may have granted
        if (silent(late)) {
          void this.undos.undo(round, loc, a, [], [i], won?.token, false);
          return;
        }
        const v = voteOf(i, late);
        if (v && isOurs(v) && voteKey(v) !== won?.key)
          void this.undos.undo(round, loc, a, [v], [], won?.token, false);
      },
    );

    const results = decided.results;
    const votes = votesOf(results);
    const ours = votes.filter(isOurs);
    const unknown = results.flatMap((r, i) => (silent(r) ? [i] : []));
    const groups = count(votes, voteKey);
    /** The round won `key`: the rest of ours is undone (keeping that token). */
    const win = (key: string, token: number) => {
      won = { key, token };
      void this.undos.undo(
        round,
        loc,
        a,
        ours.filter((v) => voteKey(v) !== key),
        unknown,
        token,
        false,
      );
    };
    /** Nothing won after all: every grant of ours is undone, and the waiters told. */
    const giveUp = () => {
      won = undefined;
      return this.undos.undo(round, loc, a, ours, unknown, undefined, true);
    };

    // 1. a majority holds our own grant already (an earlier claim of ours was granted, and
    //    its answer lost): that grant, resumed, as one Redis answers
    for (const [key, list] of groups) {
      if (!key.startsWith('s:') || list.length < q) continue;
      win(key, Number(key.slice(2)));
      return { type: 'reply', reply: this.resumedReply(list) };
    }

    // 2. a majority granted one token
    for (const [key, list] of groups) {
      if (!key.startsWith('g:') || list.length < q) continue;
      const token = Number(key.slice(2));
      if (validFor() <= 0) {
        // a majority saw this grant: tell the waiters it is gone
        await giveUp();
        return {
          type: 'retry',
          why: `the grant reached a majority after its validity (${Math.round(now() - sent)} ms)`,
        };
      }
      const alive = await this.liveHolder(list);
      if (alive) {
        await giveUp();
        return { type: 'reply', reply: this.heldByLive(alive, token) };
      }
      // our grant from an earlier claim is a leftover even with this token: it keeps its
      // own, earlier deadline
      win(key, token);
      return { type: 'reply', reply: this.grantReply(list, token) };
    }

    // 3. a majority granted, with different tokens (a node missed grants while it was away):
    //    one token for all, the highest; the others are undone and asked for at least it
    const answeredAll = results.every((r) => r !== undefined);
    if (answeredAll && !a.dryRun && ours.length >= q && validFor() > 0) {
      const fixed = await this.fixUp(round, loc, a, ours, sent, ttl);
      won = fixed && { key: `g:${fixed.token}`, token: fixed.token };
      void this.undos.undo(round, loc, a, [], unknown, fixed?.token, false);
      if (fixed) return { type: 'reply', reply: fixed.reply };
    } else {
      await this.undos.undo(round, loc, a, ours, unknown, undefined, ours.length >= q);
    }

    // 4. no grant: the majority view of the task
    const answered = votes.length;
    if (answered < q)
      throw this.nodes.noQuorum(`claim of task ${JSON.stringify(loc.taskId)}`, results, answered);
    for (const [key, list] of groups) {
      if (ourToken(key) !== undefined || list.length < q) continue;
      return { type: 'reply', reply: this.majorityReply(key, list) };
    }
    // no majority for anything: contention (several claimers split the nodes) or nodes
    // that disagree after an outage
    const holders = [...groups].filter(([key]) => key.startsWith('h:'));
    if (holders.length > 0) {
      holders.sort(([, x], [, y]) => y.length - x.length);
      const list = holders[0]?.[1] ?? [];
      const held = this.majorityReply(holders[0]?.[0] ?? '', list);
      // claim again soon, backing off while it lasts: whoever holds it on a minority is
      // about to undo it, or to win
      if (held.type === 'held') {
        return { type: 'reply', reply: { ...held, deadlineInMs: this.splitBackoff(loc) } };
      }
    }
    // a settled outcome on some nodes, and nothing newer on the others: the settle counted
    // on a majority that an outage has cut down; write it back where it is missing
    const done = groups.get('d');
    if (done) {
      const repaired = await this.readRepair(loc, a, done, votes);
      if (repaired) return { type: 'reply', reply: repaired };
    }
    if (groups.has('x')) return { type: 'reply', reply: { type: 'session-expired' } };
    const seen = [...groups].map(([key, list]) => `${key}×${list.length}`).join(', ');
    return { type: 'retry', why: `the nodes disagree (${seen})` };
  }

  /** Retry delay of a claim that found the nodes split between claimers: grows while it lasts. */
  private splitBackoff(loc: TaskLocation): number {
    const n = (this.splits.get(loc.ref) ?? 0) + 1;
    this.splits.delete(loc.ref);
    this.splits.set(loc.ref, n);
    if (this.splits.size > SPLITS_MAX) {
      for (const ref of this.splits.keys()) {
        this.splits.delete(ref);
        if (this.splits.size <= SPLITS_MAX / 2) break;
      }
    }
    return Math.min(jitter() * 2 ** Math.min(n - 1, 5), 2_000);
  }

  /**
   * Write the newest settled outcome back to the answering nodes that lack it. It counts:
   * no answering node holds anything newer, so the settle reached a majority that an
   * outage has cut down (repair-2.lua then also writes over the owner's own grant).
   */
  private async readRepair(
    loc: TaskLocation,
    a: ClaimArgs,
    done: readonly ClaimVote[],
    votes: readonly ClaimVote[],
  ): Promise<ClaimReply | undefined> {
    const best = this.majorityReply('d', done);
    if (best.type !== 'done') return undefined;
    const have = new Set(
      done.flatMap((v) =>
        v.kind === 'other' && v.reply.type === 'done' && v.reply.token === best.token
          ? [v.node]
          : [],
      ),
    );
    const missing = votes.filter((v) => !have.has(v.node) && v.kind !== 'fault').map((v) => v.node);
    const written = await Promise.all(
      missing.map((i) =>
        this.nodes.list[i]
          ?.repair(loc, {
            session: best.owner,
            token: best.token,
            attempt: best.attempt,
            state: 'D',
            payload: best.payload,
            retentionMs: a.retentionMs,
            backoffMs: 0,
            counted: true,
          })
          .catch(() => 'kept'),
      ),
    );
    const added = written.filter((x) => x === 'written').length;
    return have.size + added >= this.nodes.quorum ? best : undefined;
  }

  /**
   * Undo the grants that do not carry the highest token and claim them again with it as the
   * minimum. On each node the claim is sent once its undo has answered: two scripts in a
   * row on one connection may run in another order (a NOSCRIPT resend goes last).
   */
  private async fixUp(
    round: Round,
    loc: TaskLocation,
    a: ClaimArgs,
    ours: readonly Ours[],
    sent: number,
    ttl: number,
  ): Promise<{ token: number; reply: ClaimReply } | undefined> {
    // a grant of an earlier claim of ours is not reused: the new one is above it, so that
    // no token is handed to us twice
    let token = 0;
    for (const v of ours) token = Math.max(token, v.kind === 'grant' ? v.token : v.token + 1);
    const keep = ours.filter((v) => v.kind === 'grant' && v.token === token);
    // the grant handed out before is not taken back to be made anew (it may be running)
    const used = this.undos.used(a.session, loc.ref);
    const redo = ours.filter((v) => !(v.kind === 'grant' && v.token === token) && v.token !== used);
    const failed: number[] = [];
    const again = await Promise.all(
      redo.map(async (v): Promise<ClaimVote | undefined> => {
        const args = { session: a.session, token: v.token, retentionMs: a.retentionMs };
        const answered = await this.undos.undoOn(v.node, loc, { ...args, announce: false }).then(
          () => true,
          () => false,
        );
        if (!answered) return undefined;
        try {
          const reply = await this.claimOn(v.node, loc, a, token, round);
          return voteOf(v.node, { ok: true, value: reply });
        } catch {
          failed.push(v.node); // it may have granted
          return undefined;
        }
      }),
    );
    const regranted = again.filter((v) => v !== undefined).filter(isOurs);
    const all = [...keep, ...regranted.filter((v) => v.kind === 'grant' && v.token === token)];
    const valid = ttl - (now() - sent) - drift(ttl) > 0;
    const alive = all.length >= this.nodes.quorum && valid ? await this.liveHolder(all) : undefined;
    if (all.length >= this.nodes.quorum && valid && !alive) {
      const strays = regranted.filter((v) => !(v.kind === 'grant' && v.token === token));
      void this.undos.undo(round, loc, a, strays, failed, token, false);
      return { token, reply: this.grantReply(all, token) };
    }
    await this.undos.undo(round, loc, a, [...keep, ...regranted], failed, undefined, true);
    return undefined;
  }

  /**
   * A takeover granted because the holder's session expired on the granting nodes is sound
   * only if the session is gone on a majority: the holder believes its leases while its
   * renewals reach a majority, which need not be the nodes that hold a given grant (a
   * holder cut off from one node renews on the others, and a node that missed its grant
   * may hold an older record anyone can take over). Checked after the grants, so a holder
   * seen alive on a majority then is answered as holding the task; seen gone, it has
   * stopped believing in its leases by then (the drift aside), and stays stopped.
   * Answers such a live holder (its session, and ms left of it), or undefined.
   */
  private async liveHolder(
    list: readonly ClaimVote[],
  ): Promise<{ owner: string; pttl: number } | undefined> {
    const owners = new Set<string>();
    for (const v of list) {
      if (v.kind === 'grant' && v.reply.kind === 'session-expired' && v.reply.from)
        owners.add(v.reply.from);
    }
    for (const owner of owners) {
      // unknown (no majority answered) counts as alive: the grant is not proven sound
      const state = await this.holder(owner).catch(() => ({ pttl: 100 }));
      if (state.pttl > 0) return { owner, pttl: state.pttl };
    }
    return undefined;
  }

  /** The answer to a claim that found a holder alive on a majority behind its grants. */
  private heldByLive(live: { owner: string; pttl: number }, token: number): ClaimReply {
    // The owner's record is not read here (the token is the one below the grant's): the
    // standby covers the owner and claims again once its session may be gone.
    return {
      type: 'held',
      owner: live.owner,
      token: Math.max(1, token - 1),
      attempt: 0,
      ownerPttl: live.pttl,
      deadlineInMs: live.pttl + jitter(),
      ownerSeq: -1,
    };
  }

  /** Our own grant on a majority: its kind, and the remaining deadline a majority vouches for. */
  private resumedReply(list: readonly ClaimVote[]): ClaimReply {
    const replies = list.flatMap((v) => (v.kind === 'self' ? [v.reply] : []));
    const top = replies.reduce((x, y) => (y.attempt > x.attempt ? y : x));
    const deadlines = replies.map((r) => r.deadlineInMs);
    return {
      ...top,
      deadlineInMs: atLeastOnQuorum(deadlines, Math.min(this.nodes.quorum, deadlines.length)),
    };
  }

  /**
   * The grant the quorum made: its token, and the kind (and previous owner) most of the
   * granting nodes report. A node that missed a transition (restarted, or cut off) may
   * see an older record and report another kind: the majority's view is the task's. A tie
   * (a decision on the first majority to answer) goes to the kind that follows from the
   * later record: a retry or handover (the grant was settled or released) over a
   * takeover of a running grant, over a fresh grant.
   */
  private grantReply(list: readonly ClaimVote[], token: number): ClaimReply {
    const groups = new Map<string, Granted[]>();
    for (const v of list) {
      if (v.kind !== 'grant') continue;
      const key = `${v.reply.kind}:${v.reply.from}`;
      groups.set(key, [...(groups.get(key) ?? []), v.reply]);
    }
    let best: Granted | undefined;
    let bestCount = 0;
    for (const replies of groups.values()) {
      const top = replies.reduce((x, y) => (y.attempt > x.attempt ? y : x));
      const later = best !== undefined && kindRank(top) > kindRank(best);
      if (replies.length > bestCount || (replies.length === bestCount && later)) {
        best = top;
        bestCount = replies.length;
      }
    }
    if (!best) throw new Error('quorum: a grant without a granted reply');
    return { ...best, token };
  }

  /** The reply a majority (or the largest group) gave, with the fields a majority vouches for. */
  private majorityReply(key: string, list: readonly ClaimVote[]): ClaimReply {
    const q = this.nodes.quorum;
    const first = list[0];
    if (!first) throw new Error('quorum: an empty group');
    if (first.kind === 'fault') throw first.error;
    const replies = list.flatMap((v) => (v.kind === 'other' ? [v.reply] : []));
    const highest = <R extends { token: number }>(rs: readonly R[]): R =>
      rs.reduce((x, y) => (y.token > x.token ? y : x));
    const held = replies.filter((r) => r.type === 'held');
    if (held.length) {
      const top = highest(held);
      return {
        ...top,
        ownerPttl: atLeastOnQuorum(
          held.map((r) => r.ownerPttl),
          Math.min(q, held.length),
        ),
        deadlineInMs: atLeastOnQuorum(
          held.map((r) => r.deadlineInMs),
          Math.min(q, held.length),
        ),
      };
    }
    const done = replies.filter((r) => r.type === 'done');
    if (done.length) return highest(done);
    const failed = replies.filter((r) => r.type === 'failed');
    if (failed.length) {
      const top = highest(failed);
      // a retry needs a majority of nodes to allow it: the q-th soonest
      const sooner = [...failed.map((r) => r.retryInMs)].sort((x, y) => x - y);
      return { ...top, retryInMs: sooner[Math.min(q, sooner.length) - 1] ?? top.retryInMs };
    }
    const claimable = replies.find((r) => r.type === 'claimable');
    if (claimable) return claimable;
    if (key === 'x') return { type: 'session-expired' };
    throw new Error(`quorum: no reply for ${key}`);
  }
}
