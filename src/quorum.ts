import { performance } from 'node:perf_hooks';
import { CorruptRecordError, NoQuorumError } from './errors.js';
import type { Keys, TaskLocation } from './keys.js';
import type { RedisConnection } from './options.js';
import {
  type ClaimArgs,
  type ClaimReply,
  describeClient,
  type HolderState,
  type InspectReply,
  isClient,
  type OwnerReply,
  type PeekEntry,
  RedisStore,
  type SessionReply,
  type SettleArgs,
  type Store,
} from './store.js';

/*
 * Quorum mode: N independent Redis masters (N odd, 3 or 5), the Redlock algorithm run over
 * pairlock's own scripts. See docs/topologies.md.
 *
 *   - Every transition runs on all nodes at once; it counts when a majority (N/2 + 1)
 *     agrees. A grant must reach its majority within its validity: min(sessionTtl,
 *     taskTimeout) − elapsed − drift, measured from when the claim was sent.
 *   - A grant that reached too few nodes, or too late, is undone on every node that made it
 *     (undo-2.lua: the record returns to what it was, and keeps its token).
 *   - A grant's fencing token is one number on all its nodes: the highest any of them gave.
 *     Nodes that gave less are undone and asked again with that number as the minimum
 *     (claim's optional minimum-token argument). Any two majorities share a node, and a
 *     node's token never goes backwards, so tokens of successive grants strictly increase.
 *   - A settle counts on a majority; nodes that missed it (they lost the race to the other
 *     claimer, or were away) get the outcome written back (repair-2.lua), and so do nodes a
 *     standby finds behind a settled outcome: a finished task survives the later loss of
 *     any minority.
 *   - Reads (the standby's claim replies, inspect, peek, a holder's session ttl) take the
 *     majority view. Without a majority of answers, NoQuorumError, never a guess.
 *   - Sessions are opened and renewed on a majority. A renewal that reaches a majority also
 *     re-creates the session on nodes that lost it (a restarted node); a session that is not
 *     alive on a majority is reported expired, and the worker opens a new one.
 *   - Events are subscribed on every node; a wake-up is idempotent, so duplicates are fine.
 */

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** The same rule as the worker's lease drift (driftMs in worker.ts): 1% of the TTL + 2 ms. */
const drift = (ttlMs: number) => Math.floor(ttlMs * 0.01) + 2;
/** Retry delay after a split vote or a late grant, as in Redlock: short and jittered. */
const jitter = () => 20 + Math.floor(Math.random() * 80);
/** Rounds of one claim() call before a persistent disagreement is reported. */
const CLAIM_ROUNDS = 3;
/** After a majority of the nodes is connected, how long connect() waits for the others. */
const CONNECT_GRACE_MS = 250;
/** Tasks whose claims found the nodes split, remembered for their backoff. */
const SPLITS_MAX = 10_000;
/** The same event from several nodes within this window is passed on once. */
const DEDUPE_MS = 1_000;
const DEDUPE_MAX = 4_096;

type NodeResult<T> = { ok: true; value: T } | { ok: false; error: unknown };

interface NodeClaim {
  reply: ClaimReply;
  /** The record a grant replaced ('' when none, or unknown). */
  previous: string;
}

/** One node's claim answer, as a vote. */
type ClaimVote =
  | { kind: 'grant'; token: number; node: number; claim: NodeClaim }
  | { kind: 'self'; token: number; node: number; claim: NodeClaim }
  | { kind: 'other'; key: string; node: number; claim: NodeClaim }
  | { kind: 'fault'; key: string; node: number; error: CorruptRecordError };

type ClaimRound = { type: 'reply'; reply: ClaimReply } | { type: 'retry'; why: string };

function count<T>(items: readonly T[], key: (t: T) => string | undefined): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    if (k === undefined) continue;
    const list = out.get(k);
    if (list) list.push(item);
    else out.set(k, [item]);
  }
  return out;
}

/** The value that at least `q` of `values` reach: sorted descending, the q-th. */
function atLeastOnQuorum(values: readonly number[], q: number): number {
  const sorted = [...values].sort((x, y) => y - x);
  return sorted[Math.min(q, sorted.length) - 1] ?? 0;
}

/** A placeholder left by undo where there was no record: it stands for "absent". */
function isPlaceholder(state: string, attempt: number): boolean {
  return (state === 'released' || state === 'X') && attempt === 0;
}

/** A grant over an undo placeholder is a first grant. */
function normaliseGrant(reply: Extract<ClaimReply, { type: 'granted' }>): ClaimReply {
  if (reply.kind === 'handover' && reply.attempt === 1)
    return { ...reply, kind: 'fresh', from: '' };
  return reply;
}

export class QuorumStore implements Store {
  readonly nodes: readonly RedisStore[];
  /** Votes a decision needs: a majority of the nodes. */
  readonly quorum: number;
  private closed = false;
  private connected = false;
  private readonly resubscribers = new Set<Promise<void>>();
  /** ref -> consecutive split claims (bounded). */
  private readonly splits = new Map<string, number>();

  constructor(
    conns: readonly RedisConnection[],
    keys: Keys,
    private readonly timeoutMs: number,
  ) {
    this.nodes = conns.map((c) => {
      const node = new RedisStore(c, keys, timeoutMs, { pubsub: 'classic' });
      // a node that is down is expected in quorum mode: its connection errors are answers
      // (counted per call), not events for the console
      if (!isClient(c)) node.client.on('error', () => {});
      return node;
    });
    this.quorum = Math.floor(conns.length / 2) + 1;
  }

  private describe(i: number): string {
    const n = this.nodes[i];
    return `node ${i} (${n ? describeClient(n.client) : '?'})`;
  }

  private noQuorum(
    what: string,
    results: readonly (NodeResult<unknown> | undefined)[],
    answered: number,
  ): NoQuorumError {
    const failures = results
      .map((r, i) =>
        r && !r.ok
          ? `${this.describe(i)}: ${(r.error as Error)?.message ?? String(r.error)}`
          : undefined,
      )
      .filter((x) => x !== undefined);
    const detail = failures.length ? `; ${failures.join('; ')}` : '';
    const cause = results.find((r) => r !== undefined && !r.ok);
    return new NoQuorumError(
      `${what}: ${answered} of ${this.nodes.length} Redis nodes agreed or answered, ${this.quorum} needed${detail}`,
      cause && !cause.ok ? { cause: cause.error } : undefined,
    );
  }

  /**
   * Run `fn` on every node at once. Resolves with `decide`'s first decision, taken after
   * each answer (with `done` once every node has answered or failed; it must decide then).
   * Answers that come after the decision go to `late`. Every node call is bounded by the
   * store's timeout, so this is too.
   */
  private gather<T, D>(
    fn: (node: RedisStore, i: number) => Promise<T>,
    decide: (results: readonly (NodeResult<T> | undefined)[], done: boolean) => D | undefined,
    late?: (result: NodeResult<T>, i: number, decision: D) => void,
  ): Promise<D> {
    return new Promise<D>((resolve, reject) => {
      const results: (NodeResult<T> | undefined)[] = this.nodes.map(() => undefined);
      let pending = this.nodes.length;
      let decision: { d: D } | undefined;
      const settle = (i: number, r: NodeResult<T>) => {
        results[i] = r;
        pending -= 1;
        if (decision) {
          late?.(r, i, decision.d);
          return;
        }
        try {
          const d = decide(results, pending === 0);
          if (d !== undefined) {
            decision = { d };
            resolve(d);
          } else if (pending === 0) {
            reject(new Error('quorum: no decision after every node answered'));
          }
        } catch (err) {
          decision = { d: undefined as D };
          reject(err);
        }
      };
      this.nodes.forEach((node, i) => {
        let p: Promise<T>;
        try {
          p = fn(node, i);
        } catch (error) {
          p = Promise.reject(error);
        }
        p.then(
          (value) => settle(i, { ok: true, value }),
          (error: unknown) => settle(i, { ok: false, error }),
        );
      });
    });
  }

  // -----------------------------------------------------------------------------------
  // Connections and events
  // -----------------------------------------------------------------------------------

  /**
   * Connect to every node; ready once a majority is, after a short grace for the others
   * (a node that is merely slower to connect would otherwise miss the session's opening).
   */
  async connect(): Promise<void> {
    const q = this.quorum;
    // later calls (the worker calls connect() before an inspect) need no grace
    const grace = this.connected ? 0 : Math.min(CONNECT_GRACE_MS, this.timeoutMs);
    await new Promise<void>((resolve, reject) => {
      const results: (NodeResult<void> | undefined)[] = this.nodes.map(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      let finished = false;
      const finish = (err?: unknown) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        if (err) reject(err);
        else {
          this.connected = true;
          resolve();
        }
      };
      const check = () => {
        const ok = results.filter((r) => r?.ok).length;
        const done = results.every((r) => r !== undefined);
        if (ok === this.nodes.length || (done && ok >= q)) finish();
        else if (done) finish(this.noQuorum('connect', results, ok));
        else if (ok >= q && timer === undefined) timer = setTimeout(() => finish(), grace);
      };
      this.nodes.forEach((node, i) => {
        node.connect().then(
          () => {
            results[i] = { ok: true, value: undefined };
            check();
          },
          (error: unknown) => {
            results[i] = { ok: false, error };
            check();
          },
        );
      });
    });
  }

  async subscribe(deliver: (msg: string) => void, onReconnect: () => void): Promise<void> {
    // Every node publishes the same event for one transition. A wake-up is idempotent, but
    // each one costs the worker a claim on every node: pass each message on once.
    const recent = new Map<string, number>();
    const onMessage = (msg: string) => {
      const t = now();
      const seen = recent.get(msg);
      if (seen !== undefined && t - seen < DEDUPE_MS) return;
      recent.set(msg, t);
      if (recent.size > DEDUPE_MAX) {
        for (const [m, at] of recent) {
          if (recent.size <= DEDUPE_MAX / 2 && t - at < DEDUPE_MS) break;
          recent.delete(m);
        }
      }
      deliver(msg);
    };
    // a node that is away: keep trying in the background, so that its events count again
    const retry = (i: number) => {
      const p = this.resubscribe(i, onMessage, onReconnect).finally(() =>
        this.resubscribers.delete(p),
      );
      this.resubscribers.add(p);
    };
    const failed = new Set<number>();
    await this.gather(
      (node) => node.subscribe(onMessage, onReconnect),
      (results, done) => {
        const ok = results.filter((r) => r?.ok).length;
        if (ok >= this.quorum) {
          results.forEach((r, i) => {
            if (r && !r.ok) retry(i);
          });
          return true;
        }
        if (done) throw this.noQuorum('subscribe', results, ok);
        return undefined;
      },
      (late, i) => {
        if (!late.ok && !failed.has(i)) {
          failed.add(i);
          retry(i);
        }
      },
    );
  }

  private async resubscribe(
    i: number,
    onMessage: (msg: string) => void,
    onReconnect: () => void,
  ): Promise<void> {
    const node = this.nodes[i];
    let delay = 200;
    while (node && !this.closed) {
      await sleep(delay);
      if (this.closed) return;
      try {
        await node.subscribe(onMessage, onReconnect);
        if (this.closed) return;
        // events from this node were missed until now
        onReconnect();
        return;
      } catch {
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(this.nodes.map((n) => n.close()));
  }

  // -----------------------------------------------------------------------------------
  // claim
  // -----------------------------------------------------------------------------------

  async claim(loc: TaskLocation, a: ClaimArgs): Promise<ClaimReply> {
    let why = '';
    for (let round = 1; round <= CLAIM_ROUNDS; round++) {
      const r = await this.claimRound(loc, a);
      if (r.type === 'reply') {
        if (r.reply.type !== 'held' || r.reply.deadlineInMs > 2_000) this.splits.delete(loc.ref);
        return r.reply;
      }
      why = r.why;
      if (round < CLAIM_ROUNDS) await sleep(jitter());
    }
    throw new NoQuorumError(
      `claim of task ${JSON.stringify(loc.taskId)}: ${why} (${CLAIM_ROUNDS} rounds)`,
    );
  }

  private vote(
    i: number,
    r: NodeResult<NodeClaim> | undefined,
    a: ClaimArgs,
  ): ClaimVote | undefined {
    if (!r) return undefined;
    if (!r.ok) {
      if (r.error instanceof CorruptRecordError)
        return { kind: 'fault', key: `e:${r.error.code}`, node: i, error: r.error };
      return undefined;
    }
    const reply = r.value.reply;
    switch (reply.type) {
      case 'granted':
        return { kind: 'grant', token: reply.token, node: i, claim: r.value };
      case 'held':
        // our own grant from an earlier claim whose undo may still be on its way: never
        // counted as is; it is undone and claimed again (the fix-up below)
        if (reply.owner === a.session)
          return { kind: 'self', token: reply.token, node: i, claim: r.value };
        return { kind: 'other', key: `h:${reply.owner}`, node: i, claim: r.value };
      case 'done':
        return { kind: 'other', key: 'd', node: i, claim: r.value };
      case 'failed':
        return { kind: 'other', key: `f:${reply.terminal ? 1 : 0}`, node: i, claim: r.value };
      case 'claimable':
        return { kind: 'other', key: 'c', node: i, claim: r.value };
      case 'session-expired':
        return { kind: 'other', key: 'x', node: i, claim: r.value };
    }
  }

  private voteKey(v: ClaimVote): string {
    if (v.kind === 'grant') return `g:${v.token}`;
    if (v.kind === 'self') return 's';
    return v.key;
  }

  /** Take back our grants on these nodes (a grant seen as "held by us" has no known previous record). */
  private undoAll(
    loc: TaskLocation,
    a: ClaimArgs,
    votes: readonly ClaimVote[],
    announce: boolean,
  ): Promise<unknown> {
    return Promise.allSettled(
      votes.map((v) => {
        if (v.kind !== 'grant' && v.kind !== 'self') return undefined;
        return this.nodes[v.node]?.undo(loc, {
          session: a.session,
          token: v.token,
          previous: v.kind === 'grant' ? v.claim.previous : '',
          retentionMs: a.retentionMs,
          announce,
        });
      }),
    );
  }

  private async claimRound(loc: TaskLocation, a: ClaimArgs): Promise<ClaimRound> {
    const q = this.quorum;
    const sent = now();
    const ttl = Math.min(a.sessionTtlMs, a.taskTimeoutMs);
    const validFor = () => ttl - (now() - sent) - drift(ttl);
    let acceptedToken: number | undefined;
    /** Late answers that joined the accepted grant (undone with it if it comes too late). */
    const lateGrants: ClaimVote[] = [];

    const decided = await this.gather<
      NodeClaim,
      { results: readonly (NodeResult<NodeClaim> | undefined)[] }
    >(
      (node) => node.claimAtLeast(loc, a, 0),
      (results, done) => {
        const votes = results.map((r, i) => this.vote(i, r, a)).filter((v) => v !== undefined);
        for (const [key, list] of count(votes, (v) => this.voteKey(v))) {
          // a majority for one answer cannot change whatever the others say
          if (list.length >= q && list[0]?.kind !== 'self') {
            // late answers that carry this grant's token are part of it (set before any
            // late answer can be looked at)
            if (key.startsWith('g:')) acceptedToken = Number(key.slice(2));
            return { results: [...results] };
          }
        }
        return done ? { results: [...results] } : undefined;
      },
      (late, i) => {
        // an answer after the decision: a grant that is not the accepted one is taken back
        if (!late.ok) return;
        const v = this.vote(i, late, a);
        if (!v || (v.kind !== 'grant' && v.kind !== 'self')) return;
        if (v.kind === 'grant' && v.token === acceptedToken) {
          lateGrants.push(v);
          return;
        }
        void this.undoAll(loc, a, [v], false);
      },
    );

    const votes = decided.results.map((r, i) => this.vote(i, r, a)).filter((v) => v !== undefined);
    const grants = votes.filter((v) => v.kind === 'grant' || v.kind === 'self');
    const groups = count(votes, (v) => this.voteKey(v));

    // 1. a majority granted one token
    for (const [key, list] of groups) {
      if (!key.startsWith('g:') || list.length < q) continue;
      const token = Number(key.slice(2));
      if (validFor() <= 0) {
        acceptedToken = undefined;
        // a majority saw this grant: tell the waiters it is gone
        await this.undoAll(loc, a, [...grants, ...lateGrants], true);
        return {
          type: 'retry',
          why: `the grant reached a majority after its validity (${Math.round(now() - sent)} ms)`,
        };
      }
      acceptedToken = token;
      void this.undoAll(
        loc,
        a,
        grants.filter((v) => !(v.kind === 'grant' && v.token === token)),
        false,
      );
      return { type: 'reply', reply: this.grantReply(list, token) };
    }

    // 2. a majority granted, with different tokens (a node missed grants while it was away):
    //    one token for all, the highest; the others are undone and asked for at least it
    const answeredAll = decided.results.every((r) => r !== undefined);
    if (answeredAll && grants.length >= q && validFor() > 0) {
      const fixed = await this.fixUp(loc, a, grants, sent, ttl);
      if (fixed) {
        acceptedToken = fixed.token;
        return { type: 'reply', reply: fixed.reply };
      }
    } else if (grants.length > 0) {
      await this.undoAll(loc, a, grants, grants.length >= q);
    }

    // 3. no grant: the majority view of the task
    const answered = votes.length;
    if (answered < q)
      throw this.noQuorum(`claim of task ${JSON.stringify(loc.taskId)}`, decided.results, answered);
    for (const [key, list] of groups) {
      if (key.startsWith('g:') || key === 's' || list.length < q) continue;
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

  /** Write the newest settled outcome back to the answering nodes that lack it. */
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
        v.kind === 'other' && v.claim.reply.type === 'done' && v.claim.reply.token === best.token
          ? [v.node]
          : [],
      ),
    );
    const missing = votes.filter((v) => !have.has(v.node) && v.kind !== 'fault').map((v) => v.node);
    const written = await Promise.all(
      missing.map((i) =>
        this.nodes[i]
          ?.repair(loc, {
            session: best.owner,
            token: best.token,
            attempt: best.attempt,
            state: 'D',
            payload: best.payload,
            retentionMs: a.retentionMs,
            backoffMs: 0,
          })
          .catch(() => false),
      ),
    );
    return have.size + written.filter(Boolean).length >= this.quorum ? best : undefined;
  }

  /** Undo the grants that do not carry the highest token and claim them again with it as the minimum. */
  private async fixUp(
    loc: TaskLocation,
    a: ClaimArgs,
    grants: readonly ClaimVote[],
    sent: number,
    ttl: number,
  ): Promise<{ token: number; reply: ClaimReply } | undefined> {
    // a node that holds our own earlier grant keeps that token after its undo: ask for more
    let token = 0;
    for (const v of grants) {
      if (v.kind === 'grant') token = Math.max(token, v.token);
      if (v.kind === 'self') token = Math.max(token, v.token + 1);
    }
    const keep = grants.filter((v) => v.kind === 'grant' && v.token === token);
    const redo = grants.filter((v) => !(v.kind === 'grant' && v.token === token));
    const again = await Promise.all(
      redo.map(async (v): Promise<ClaimVote | undefined> => {
        const node = this.nodes[v.node];
        if (!node || (v.kind !== 'grant' && v.kind !== 'self')) return undefined;
        try {
          // both leave on the node's connection back to back: the undo runs first
          const undone = node.undo(loc, {
            session: a.session,
            token: v.token,
            previous: v.kind === 'grant' ? v.claim.previous : '',
            retentionMs: a.retentionMs,
            announce: false,
          });
          const claimed = node.claimAtLeast(loc, a, token);
          await undone.catch(() => {});
          const c = await claimed;
          if (c.reply.type === 'granted')
            return { kind: 'grant', token: c.reply.token, node: v.node, claim: c };
          if (c.reply.type === 'held' && c.reply.owner === a.session) {
            return { kind: 'self', token: c.reply.token, node: v.node, claim: c };
          }
          return undefined;
        } catch {
          return undefined;
        }
      }),
    );
    const regranted = again.filter((v) => v !== undefined);
    const all = [...keep, ...regranted.filter((v) => v.kind === 'grant' && v.token === token)];
    const valid = ttl - (now() - sent) - drift(ttl) > 0;
    if (all.length >= this.quorum && valid) {
      await this.undoAll(
        loc,
        a,
        regranted.filter((v) => !(v.kind === 'grant' && v.token === token)),
        false,
      );
      return { token, reply: this.grantReply(all, token) };
    }
    await this.undoAll(loc, a, [...keep, ...regranted], true);
    return undefined;
  }

  private grantReply(list: readonly ClaimVote[], token: number): ClaimReply {
    let best: Extract<ClaimReply, { type: 'granted' }> | undefined;
    for (const v of list) {
      if (v.kind !== 'grant' || v.claim.reply.type !== 'granted') continue;
      if (!best || v.claim.reply.attempt > best.attempt) best = v.claim.reply;
    }
    if (!best) throw new Error('quorum: a grant without a granted reply');
    return normaliseGrant({ ...best, token });
  }

  /** The reply a majority (or the largest group) gave, with the fields a majority vouches for. */
  private majorityReply(key: string, list: readonly ClaimVote[]): ClaimReply {
    const q = this.quorum;
    const first = list[0];
    if (!first) throw new Error('quorum: an empty group');
    if (first.kind === 'fault') throw first.error;
    const replies = list.flatMap((v) => (v.kind === 'other' ? [v.claim.reply] : []));
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
    if (claimable)
      return claimable.kind === 'handover' ? { type: 'claimable', kind: 'fresh' } : claimable;
    if (key === 'x') return { type: 'session-expired' };
    throw new Error(`quorum: no reply for ${key}`);
  }

  // -----------------------------------------------------------------------------------
  // Owner writes: settle, release, progress
  // -----------------------------------------------------------------------------------

  private async ownerWrite(
    what: string,
    fn: (node: RedisStore) => Promise<OwnerReply>,
    /** a rejection that means "already done, by this very owner" (a retried write) */
    sameAsOk?: (r: OwnerReply) => boolean,
  ): Promise<OwnerReply> {
    const q = this.quorum;
    const keyOf = (r: NodeResult<OwnerReply> | undefined): string | undefined => {
      if (!r?.ok) return undefined;
      if (r.value.ok || sameAsOk?.(r.value)) return 'ok';
      return `r:${r.value.reason}`;
    };
    return this.gather(fn, (results, done) => {
      const groups = count([...results], keyOf);
      const ok = groups.get('ok');
      if (ok && ok.length >= q) {
        const real = ok.find((r) => r?.ok && r.value.ok);
        return real?.ok ? real.value : { ok: true, token: 0, attempt: 0, serverNow: 0 };
      }
      const rejected = [...groups]
        .filter(([k]) => k !== 'ok')
        .sort(([, x], [, y]) => y.length - x.length);
      const top = rejected[0]?.[1][0];
      const rejections = rejected.reduce((n, [, list]) => n + list.length, 0);
      if (rejections >= q && top?.ok) return top.value;
      if (!done) return undefined;
      const answered = (ok?.length ?? 0) + rejections;
      if (answered < q) throw this.noQuorum(what, results, answered);
      // answers from a majority, but no majority accepted: not proven, so rejected
      if (top?.ok) return top.value;
      throw this.noQuorum(what, results, answered);
    });
  }

  /**
   * Settle on every node; it counts on a majority. Nodes that turned it away because they
   * are behind (they never saw the grant, or lost the session) get the outcome written back
   * (repair-2.lua), in the background when a majority took it, at once when it falls short.
   */
  async settle(loc: TaskLocation, a: SettleArgs): Promise<OwnerReply> {
    const q = this.quorum;
    const what = `settle of task ${JSON.stringify(loc.taskId)}`;
    const took = (r: NodeResult<OwnerReply> | undefined) =>
      r?.ok === true &&
      (r.value.ok || (r.value.reason === 'already-settled' && r.value.state === a.state));
    const refused = (r: NodeResult<OwnerReply> | undefined) => r?.ok === true && !took(r);
    let attempt: number | undefined;
    const repair = (i: number) =>
      attempt === undefined
        ? Promise.resolve(false)
        : (this.nodes[i]?.repair(loc, { ...a, attempt }).catch(() => false) ??
          Promise.resolve(false));
    const results = await this.gather(
      (node) => node.settle(loc, a),
      (res, done) => (res.filter(took).length >= q || done ? [...res] : undefined),
      (late, i) => {
        if (refused(late)) void repair(i);
      },
    );
    const first = results.find((r) => r?.ok && r.value.ok);
    if (first?.ok && first.value.ok) attempt = first.value.attempt;
    let ok = results.filter(took).length;
    let behind = results.flatMap((r, i) => (refused(r) ? [i] : []));
    if (ok >= q) {
      for (const i of behind) void repair(i);
      return first?.ok ? first.value : { ok: true, token: a.token, attempt: 0, serverNow: 0 };
    }
    // Short of a majority. Our grant is on the nodes that took it; a node that is behind
    // holds no newer grant (repair never writes over one), so writing the outcome there is
    // what the settle would have done. A node held by a claimer that is about to undo its
    // minority grant is tried again shortly.
    for (let round = 0; ok > 0 && ok < q && behind.length > 0 && round < 3; round++) {
      if (round > 0) await sleep(jitter());
      const written = await Promise.all(behind.map((i) => repair(i)));
      ok += written.filter(Boolean).length;
      behind = behind.filter((_, j) => !written[j]);
    }
    if (ok >= q)
      return first?.ok ? first.value : { ok: true, token: a.token, attempt: 0, serverNow: 0 };
    const rejections = count(
      results.filter((r) => refused(r)),
      (r) => (r?.ok && !r.value.ok ? r.value.reason : undefined),
    );
    const top = [...rejections.values()].sort((x, y) => y.length - x.length)[0]?.[0];
    const answered = results.filter((r) => r?.ok).length;
    if (answered >= q && top?.ok) return top.value;
    throw this.noQuorum(what, results, ok);
  }

  release(
    loc: TaskLocation,
    a: { session: string; token: number; retentionMs: number },
  ): Promise<OwnerReply> {
    return this.ownerWrite(
      `release of task ${JSON.stringify(loc.taskId)}`,
      (node) => node.release(loc, a),
      (r) => !r.ok && r.reason === 'already-settled' && r.state === 'X',
    );
  }

  progress(
    loc: TaskLocation,
    a: { session: string; token: number; progress: number; note: string },
  ): Promise<OwnerReply> {
    return this.ownerWrite(`progress of task ${JSON.stringify(loc.taskId)}`, (node) =>
      node.progress(loc, a),
    );
  }

  // -----------------------------------------------------------------------------------
  // Reads: the majority view
  // -----------------------------------------------------------------------------------

  async inspect(loc: TaskLocation): Promise<InspectReply> {
    const q = this.quorum;
    const keyOf = (r: NodeResult<InspectReply> | undefined): string | undefined => {
      if (!r) return undefined;
      if (!r.ok) return r.error instanceof CorruptRecordError ? `e:${r.error.code}` : undefined;
      const v = r.value;
      if (!v.found || isPlaceholder(v.state, v.attempt)) return 'absent';
      return `${v.state}:${v.token}:${v.session}`;
    };
    return this.gather(
      (node) => node.inspect(loc),
      (results, done) => {
        const groups = count([...results], keyOf);
        let pick: (NodeResult<InspectReply> | undefined)[] | undefined;
        for (const list of groups.values()) if (list.length >= q) pick = list;
        if (!pick && !done) return undefined;
        const answered = [...groups.values()].reduce((n, l) => n + l.length, 0);
        if (!pick) {
          if (answered < q)
            throw this.noQuorum(`inspect of task ${JSON.stringify(loc.taskId)}`, results, answered);
          // no majority: the largest group, the newest record first
          pick = [...groups.values()].sort(
            (x, y) => y.length - x.length || tokenOf(y) - tokenOf(x),
          )[0];
        }
        const first = pick?.[0];
        if (!first)
          throw this.noQuorum(`inspect of task ${JSON.stringify(loc.taskId)}`, results, answered);
        if (!first.ok) throw first.error;
        const recs = (pick ?? []).flatMap((r) => (r?.ok ? [r.value] : []));
        const found = recs.filter((r) => r.found && !isPlaceholder(r.state, r.attempt));
        if (found.length === 0) return { found: false, serverNow: recs[0]?.serverNow ?? 0 };
        const newest = found.reduce((x, y) =>
          y.found && x.found && y.updatedAt > x.updatedAt ? y : x,
        );
        if (!newest.found) return newest;
        return {
          ...newest,
          ownerPttl: atLeastOnQuorum(
            found.map((r) => (r.found ? r.ownerPttl : 0)),
            Math.min(q, found.length),
          ),
        };
      },
    );
  }

  /**
   * A holder is alive while its session lives on a majority (the pttl is the shortest
   * among that majority). Each node keeps its own change sequence, so a standby cannot
   * match them against events: the sequence is reported unknown (-1), and the standby
   * re-reads what it covers at each safety-net check, as without sequences.
   */
  async cover(session: string): Promise<HolderState> {
    const q = this.quorum;
    return this.gather(
      (node) => node.cover(session),
      (results, done) => {
        const answers = results.flatMap((r) => (r?.ok ? [r.value.pttl] : []));
        if (answers.length < q) {
          if (done) throw this.noQuorum('cover', results, answers.length);
          return undefined;
        }
        if (!done && answers.length < results.length) return undefined;
        const alive = answers.filter((p) => p > 0).sort((x, y) => y - x);
        return { pttl: alive.length >= q ? (alive[q - 1] as number) : 0, seq: -1 };
      },
    );
  }

  async peek(locs: readonly TaskLocation[]): Promise<PeekEntry[]> {
    if (locs.length === 0) return [];
    const q = this.quorum;
    return this.gather(
      (node) => node.peek(locs),
      (results, done) => {
        const answers = results.flatMap((r) => (r?.ok ? [r.value] : []));
        if (answers.length < q) {
          if (done) throw this.noQuorum('peek', results, answers.length);
          return undefined;
        }
        const view = locs.map((_, i): PeekEntry | undefined => {
          const groups = count(answers, (entries) => {
            const e = entries[i];
            if (!e) return undefined;
            if (e.state === 'absent') return 'a';
            if (e.state === 'error') return `E:${e.code}`;
            return `${e.state}:${e.token}:${e.orphaned ? 1 : 0}`;
          });
          for (const list of groups.values()) {
            const e = list[0]?.[i];
            if (list.length >= q && e) return e;
          }
          return undefined;
        });
        // a node still to answer may make the majority of a task that has none yet
        if (!done && view.some((e) => e === undefined)) return undefined;
        // the nodes disagree: an answer the worker does not recognise makes it claim
        return view.map((e): PeekEntry => e ?? { state: 'error', code: 0 });
      },
    );
  }

  // -----------------------------------------------------------------------------------
  // Sessions
  // -----------------------------------------------------------------------------------

  async session(
    op: 'open' | 'renew' | 'close' | 'ttl',
    sessionId: string,
    ttlMs: number,
    desc = '',
  ): Promise<SessionReply> {
    const q = this.quorum;
    const what = `${op} of session ${sessionId}`;
    const isOk = (r: NodeResult<SessionReply> | undefined) => r?.ok === true && r.value.ok;
    const isExpired = (r: NodeResult<SessionReply> | undefined) =>
      r?.ok === true && !r.value.ok && r.value.reason === 'session-expired';
    // alive on a majority: nobody can have taken over its grants, so a node that lost the
    // session (a restarted node) may have it back
    const revive = (i: number) => {
      void this.nodes[i]?.session('open', sessionId, ttlMs, desc).catch(() => {});
    };
    // a node that was not reachable when the session opened gets it once it is, so the
    // session lives on every node and survives the loss of any minority
    const openLater = (i: number) => {
      const node = this.nodes[i];
      if (!node || this.closed) return;
      void node
        .connect()
        .then(() => (this.closed ? undefined : node.session('open', sessionId, ttlMs, desc)))
        .catch(() => {});
    };
    let renewed = false;
    let opened = false;
    const all = await this.gather(
      (node) => node.session(op, sessionId, ttlMs, desc),
      (results, done) => {
        if (done) return [...results];
        const ok = results.filter(isOk).length;
        const answered = results.filter((r) => r?.ok).length;
        if ((op === 'open' || op === 'renew') && ok >= q) {
          renewed = op === 'renew';
          opened = op === 'open';
          return [...results];
        }
        if (op === 'ttl' && answered >= q) return [...results];
        return undefined;
      },
      (late, i) => {
        if (renewed && isExpired(late)) revive(i);
        if (opened && !late.ok) openLater(i);
      },
    );
    const ok = all.flatMap((r) => (r?.ok && r.value.ok ? [r.value] : []));
    const expired = all.flatMap((r, i) => (isExpired(r) ? [i] : []));
    const exists = all.filter((r) => r?.ok && !r.value.ok && r.value.reason === 'session-exists');
    const answered = all.filter((r) => r?.ok).length;
    const first = ok[0];

    switch (op) {
      case 'open': {
        if (ok.length >= q && first) {
          all.forEach((r, i) => {
            if (r && !r.ok) openLater(i);
          });
          return first;
        }
        // not on a majority: take back what was opened, so nothing half-open stays alive
        await Promise.allSettled(
          all.map((r, i) => (isOk(r) ? this.nodes[i]?.session('close', sessionId, 0) : undefined)),
        );
        if (exists.length >= q) return { ok: false, reason: 'session-exists' };
        throw this.noQuorum(what, all, ok.length);
      }
      case 'renew': {
        if (ok.length >= q && first) {
          for (const i of expired) revive(i);
          return first;
        }
        // not provably alive on a majority: abandoning it is always safe
        if (answered >= q) return { ok: false, reason: 'session-expired' };
        throw this.noQuorum(what, all, answered);
      }
      case 'close': {
        if (first) return first;
        if (answered >= q) return { ok: false, reason: 'session-expired' };
        throw this.noQuorum(what, all, answered);
      }
      case 'ttl': {
        if (answered < q) throw this.noQuorum(what, all, answered);
        // alive on a majority of the answering nodes for at least this long
        const pttls = all.flatMap((r) => (r?.ok ? [r.value.ok ? r.value.pttl : 0] : []));
        const pttl = atLeastOnQuorum(pttls, q);
        if (pttl <= 0 || !first) return { ok: false, reason: 'session-expired' };
        return { ok: true, serverNow: first.serverNow, pttl };
      }
    }
  }
}

function tokenOf(list: readonly (NodeResult<InspectReply> | undefined)[]): number {
  const r = list[0];
  return r?.ok && r.value.found ? r.value.token : 0;
}
