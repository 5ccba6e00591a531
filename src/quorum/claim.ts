import { performance } from 'node:perf_hooks';
import { CorruptRecordError, NoQuorumError } from '../errors.js';
import type { TaskLocation } from '../keys.js';
import type { ClaimArgs, ClaimReply, RedisStore } from '../store.js';
import { atLeastOnQuorum, count, type NodeResult, type QuorumNodes } from './nodes.js';

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
 *   - A claim of a task on a node waits for our undos of that task on that node still on
 *     their way: an undo names a grant by session and token (or none: whichever is ours),
 *     and a node may grant the same pair again once an undo restored the record before it.
 *     Two scripts in a row on one connection are not enough: a NOSCRIPT resend goes last.
 *   - Without a grant, the majority view of the task; an outcome settled on some nodes and
 *     nothing newer on the others is written back (read repair).
 */

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** The same rule as the worker's lease drift (driftMs in worker.ts): 1% of the TTL + 2 ms. */
const drift = (ttlMs: number) => Math.floor(ttlMs * 0.01) + 2;
/** Retry delay after a split vote or a late grant, as in Redlock: short and jittered. */
const jitter = () => 20 + Math.floor(Math.random() * 80);
/** The claims sent to one node in one round: node -> the claim's number (see claimOn). */
type Round = Map<number, number>;
/** Tasks whose latest claim per node is remembered; the oldest go first. */
const LAST_CLAIM_MAX = 1_000_000;
/** Grants remembered as handed out (see QuorumClaims.handedOut); the oldest go first. */
const HANDED_OUT_MAX = 1_000_000;
const handedKey = (session: string, ref: string) => `${session}\n${ref}`;
/** Rounds of one claim() call before a persistent disagreement is reported. */
const CLAIM_ROUNDS = 3;
/** Tasks whose claims found the nodes split, remembered for their backoff. */
const SPLITS_MAX = 10_000;

type Granted = Extract<ClaimReply, { type: 'granted' }>;
type Resumed = Extract<ClaimReply, { type: 'resumed' }>;

/** One node's claim answer, as a vote. */
type ClaimVote =
  | { kind: 'grant'; token: number; node: number; reply: Granted }
  /** held by our own session already: a grant of an earlier claim of ours */
  | { kind: 'self'; token: number; node: number; reply: Resumed }
  | { kind: 'other'; key: string; node: number; reply: ClaimReply }
  | { kind: 'fault'; key: string; node: number; error: CorruptRecordError };

type Ours = Extract<ClaimVote, { kind: 'grant' | 'self' }>;
/** How late in a task's life the record behind a grant's kind is (see grantReply). */
const kindRank = (g: Granted): number =>
  g.kind === 'retry' || g.kind === 'handover' ? 2 : g.kind === 'fresh' ? 0 : 1;
const isOurs = (v: ClaimVote): v is Ours => v.kind === 'grant' || v.kind === 'self';

type ClaimRound = { type: 'reply'; reply: ClaimReply } | { type: 'retry'; why: string };

/** A node whose answer failed (or never came): it may have granted. */
const silent = (r: NodeResult<ClaimReply> | undefined) =>
  r !== undefined && !r.ok && !(r.error instanceof CorruptRecordError);

function voteKey(v: ClaimVote): string {
  if (v.kind === 'grant') return `g:${v.token}`;
  if (v.kind === 'self') return `s:${v.token}`;
  return v.key;
}
/** The token of a majority of grants (g:) or of our own grant resumed (s:). */
const ourToken = (key: string) =>
  key.startsWith('g:') || key.startsWith('s:') ? Number(key.slice(2)) : undefined;

export class QuorumClaims {
  /** ref -> consecutive split claims (bounded). */
  private readonly splits = new Map<string, number>();
  /** node + ref -> our undos of that task on that node still on their way (never rejects). */
  private readonly undoing = new Map<string, Promise<unknown>>();
  /** node + ref -> the number of the latest claim of that task sent to that node (bounded). */
  private readonly lastClaim = new Map<string, number>();
  private claimsSent = 0;
  /**
   * session + ref -> the token of the grant this store last handed to that session (granted
   * or resumed): it may be running, so no later claim of the same session undoes it, not
   * even blindly on a node whose answer never came (undo-2.lua: a grant that was used is
   * never undone). Dropped once the grant is settled, released or replaced (bounded).
   */
  private readonly handedOut = new Map<string, number>();

  constructor(
    private readonly nodes: QuorumNodes,
    /** A holder's session as the majority sees it (QuorumStore.cover): pttl 0 when gone. */
    private readonly holder: (session: string) => Promise<{ pttl: number }>,
  ) {}

  async claim(loc: TaskLocation, a: ClaimArgs): Promise<ClaimReply> {
    let why = '';
    for (let round = 1; round <= CLAIM_ROUNDS; round++) {
      const r = await this.claimRound(loc, a);
      if (r.type === 'reply') {
        if (r.reply.type !== 'held' || r.reply.deadlineInMs > 2_000) this.splits.delete(loc.ref);
        if (!a.dryRun) {
          const key = handedKey(a.session, loc.ref);
          if (r.reply.type === 'granted' || r.reply.type === 'resumed') {
            this.handedOut.delete(key);
            this.handedOut.set(key, r.reply.token);
            if (this.handedOut.size > HANDED_OUT_MAX) {
              const oldest = this.handedOut.keys().next().value;
              if (oldest !== undefined) this.handedOut.delete(oldest);
            }
          } else if (r.reply.type === 'done' || r.reply.type === 'failed') {
            // a majority holds an outcome: our grant is settled or superseded. (Not on
            // 'held': that answer may be the largest group of a split, not a majority.)
            this.handedOut.delete(key);
          }
        }
        return r.reply;
      }
      why = r.why;
      if (round < CLAIM_ROUNDS) await sleep(jitter());
    }
    throw new NoQuorumError(
      `claim of task ${JSON.stringify(loc.taskId)}: ${why} (${CLAIM_ROUNDS} rounds)`,
    );
  }

  private vote(i: number, r: NodeResult<ClaimReply> | undefined): ClaimVote | undefined {
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

  private votes(results: readonly (NodeResult<ClaimReply> | undefined)[]) {
    return results.map((r, i) => this.vote(i, r)).filter((v) => v !== undefined);
  }

  /**
   * Take back our grants: those these votes show, and whatever grant of ours the silent
   * nodes hold, except `keep` (the grant we won). Resolves once the nodes that showed a
   * grant have answered; a silent node may be slow to, and is not waited for here. Our
   * next claim of the task on each of these nodes waits for its undo.
   */
  private undo(
    round: Round,
    loc: TaskLocation,
    a: ClaimArgs,
    votes: readonly Ours[],
    silentNodes: readonly number[],
    keep: number | undefined,
    announce: boolean,
  ): Promise<unknown> {
    if (a.dryRun) return Promise.resolve();
    // Not on a node where a later claim of the task was sent since this round's: that claim
    // came after this round's on the same connection, so it saw whatever this round left
    // there and answered for it; an undo sent now would run after it and could take back
    // its grant instead (a late answer, or a timeout, of an earlier round).
    const current = (i: number) => this.lastClaim.get(`${i}:${loc.ref}`) === round.get(i);
    silentNodes = silentNodes.filter(current);
    votes = votes.filter((v) => current(v.node));
    // The grant handed out before (it may be running) stays: undone on a majority, the
    // task could be granted again with its token. Unless this round won that very token
    // again: its majority then holds it, and these nodes are outside that majority.
    const used = this.handedOut.get(handedKey(a.session, loc.ref));
    const spare = keep !== undefined && keep === used ? undefined : used;
    const base = { session: a.session, retentionMs: a.retentionMs, announce };
    for (const i of silentNodes)
      this.undoOn(i, loc, { ...base, keep: keep ?? used }).catch(() => {});
    return Promise.allSettled(
      votes
        .filter((v) => v.token !== spare)
        .map((v) => this.undoOn(v.node, loc, { ...base, token: v.token })),
    );
  }

  /** The grant of `session` for `loc` was settled or released: it no longer needs keeping. */
  forget(session: string, loc: TaskLocation, token: number): void {
    const key = handedKey(session, loc.ref);
    if (this.handedOut.get(key) === token) this.handedOut.delete(key);
  }

  private undoOn(
    i: number,
    loc: TaskLocation,
    args: Parameters<RedisStore['undo']>[1],
  ): Promise<boolean> {
    const node = this.nodes.list[i];
    if (!node) return Promise.resolve(false);
    const key = `${i}:${loc.ref}`;
    const call = node.undo(loc, args);
    const settled: Promise<unknown> = Promise.allSettled([this.undoing.get(key), call]).then(() => {
      if (this.undoing.get(key) === settled) this.undoing.delete(key);
    });
    this.undoing.set(key, settled);
    return call;
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
    const key = `${i}:${loc.ref}`;
    await this.undoing.get(key);
    const n = ++this.claimsSent;
    this.lastClaim.delete(key);
    this.lastClaim.set(key, n);
    if (this.lastClaim.size > LAST_CLAIM_MAX) {
      const oldest = this.lastClaim.keys().next().value;
      if (oldest !== undefined) this.lastClaim.delete(oldest);
    }
    round.set(i, n);
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
        for (const [key, list] of count(this.votes(results), voteKey)) {
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
          void this.undo(round, loc, a, [], [i], won?.token, false);
          return;
        }
        const v = this.vote(i, late);
        if (v && isOurs(v) && voteKey(v) !== won?.key)
          void this.undo(round, loc, a, [v], [], won?.token, false);
      },
    );

    const results = decided.results;
    const votes = this.votes(results);
    const ours = votes.filter(isOurs);
    const unknown = results.flatMap((r, i) => (silent(r) ? [i] : []));
    const groups = count(votes, voteKey);

    // 1. a majority holds our own grant already (an earlier claim of ours was granted, and
    //    its answer lost): that grant, resumed, as one Redis answers
    for (const [key, list] of groups) {
      if (!key.startsWith('s:') || list.length < q) continue;
      const token = Number(key.slice(2));
      won = { key, token };
      void this.undo(
        round,
        loc,
        a,
        ours.filter((v) => voteKey(v) !== key),
        unknown,
        token,
        false,
      );
      return { type: 'reply', reply: this.resumedReply(list) };
    }

    // 2. a majority granted one token
    for (const [key, list] of groups) {
      if (!key.startsWith('g:') || list.length < q) continue;
      const token = Number(key.slice(2));
      if (validFor() <= 0) {
        won = undefined;
        // a majority saw this grant: tell the waiters it is gone
        await this.undo(round, loc, a, ours, unknown, undefined, true);
        return {
          type: 'retry',
          why: `the grant reached a majority after its validity (${Math.round(now() - sent)} ms)`,
        };
      }
      const alive = await this.liveHolder(list);
      if (alive) {
        won = undefined;
        await this.undo(round, loc, a, ours, unknown, undefined, true);
        return { type: 'reply', reply: this.heldByLive(alive, token) };
      }
      won = { key, token };
      // our grant from an earlier claim is a leftover even with this token: it keeps its
      // own, earlier deadline
      void this.undo(
        round,
        loc,
        a,
        ours.filter((v) => voteKey(v) !== key),
        unknown,
        token,
        false,
      );
      return { type: 'reply', reply: this.grantReply(list, token) };
    }

    // 3. a majority granted, with different tokens (a node missed grants while it was away):
    //    one token for all, the highest; the others are undone and asked for at least it
    const answeredAll = results.every((r) => r !== undefined);
    if (answeredAll && !a.dryRun && ours.length >= q && validFor() > 0) {
      const fixed = await this.fixUp(round, loc, a, ours, sent, ttl);
      won = fixed && { key: `g:${fixed.token}`, token: fixed.token };
      void this.undo(round, loc, a, [], unknown, fixed?.token, false);
      if (fixed) return { type: 'reply', reply: fixed.reply };
    } else {
      await this.undo(round, loc, a, ours, unknown, undefined, ours.length >= q);
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
    const used = this.handedOut.get(handedKey(a.session, loc.ref));
    const redo = ours.filter((v) => !(v.kind === 'grant' && v.token === token) && v.token !== used);
    const failed: number[] = [];
    const again = await Promise.all(
      redo.map(async (v): Promise<ClaimVote | undefined> => {
        const args = { session: a.session, token: v.token, retentionMs: a.retentionMs };
        const answered = await this.undoOn(v.node, loc, { ...args, announce: false }).then(
          () => true,
          () => false,
        );
        if (!answered) return undefined;
        try {
          const reply = await this.claimOn(v.node, loc, a, token, round);
          return this.vote(v.node, { ok: true, value: reply });
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
      void this.undo(round, loc, a, strays, failed, token, false);
      return { token, reply: this.grantReply(all, token) };
    }
    await this.undo(round, loc, a, [...keep, ...regranted], failed, undefined, true);
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
