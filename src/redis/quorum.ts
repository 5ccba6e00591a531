import { performance } from 'node:perf_hooks';
import { CorruptRecordError } from '../shared/errors.js';
import type { RedisConnection } from '../shared/options.js';
import type { Keys, TaskLocation } from './keys.js';
import { QuorumClaims } from './quorum/claim.js';
import { atLeastOnQuorum, count, type NodeResult, QuorumNodes } from './quorum/nodes.js';
import { ownerWrite, settle } from './quorum/outcome.js';
import {
  type ClaimArgs,
  type ClaimReply,
  type HolderState,
  type InspectReply,
  isClient,
  type OwnerReply,
  type PeekEntry,
  RedisStore,
  type ReleaseArgs,
  type SessionReply,
  type SettleArgs,
  type Store,
} from './store.js';

/*
 * Quorum mode: N independent Redis masters (N odd, 3 or 5), the Redlock algorithm run over
 * pairlock's own scripts. See docs/topologies.md.
 *
 *   - Every transition runs on all nodes at once; it counts when a majority (N/2 + 1)
 *     agrees (quorum/nodes.ts).
 *   - Claims (quorum/claim.ts): a grant must reach its majority within its validity:
 *     min(sessionTtl, taskTimeout) − elapsed − drift, measured from when the claim was
 *     sent. Every other grant of ours is undone, exactly (undo-2.lua: the node restores the
 *     record the grant replaced), on every node that may have made it, including nodes
 *     whose answer failed or came after the timeout. A grant's fencing token is one number
 *     on all its nodes: the highest any of them gave; nodes that gave less are undone and
 *     asked again with that number as the minimum. Any two majorities share a node, so
 *     tokens of successive grants strictly increase. A grant handed to the worker is never
 *     undone by a later claim of the same session (one whose answers never came, say): it
 *     may be running, and undone on a majority its token could be granted again.
 *   - Attempts: a node that missed some of a task's grants counts fewer attempts than the
 *     quorum's grant reports; the settle carries the reported count, so the nodes that take
 *     it agree whether a failure is final.
 *   - Settles (quorum/outcome.ts) count on a majority; nodes that missed one get the outcome
 *     written back (repair-2.lua), and so do nodes a standby finds behind a settled
 *     outcome: a finished task survives the later loss of any minority. A settle whose
 *     lease is gone on a majority of the nodes is refused, as on one Redis.
 *   - Reads (the standby's claim replies, inspect, peek, a holder's session ttl) take the
 *     majority view. Without a majority of answers, NoQuorumError, never a guess.
 *   - Sessions are opened and renewed on a majority. A renewal that reaches a majority also
 *     re-creates the session on nodes that lost it (a restarted node); a session that is not
 *     alive on a majority is reported expired, and the worker opens a new one.
 *   - Events are subscribed on every node; a wake-up is idempotent, so duplicates are fine.
 */

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** After a majority of the nodes is connected, how long connect() waits for the others. */
const CONNECT_GRACE_MS = 250;
/** The same event from several nodes within this window is passed on once. */
const DEDUPE_MS = 1_000;
const DEDUPE_MAX = 4_096;

export class QuorumStore implements Store {
  readonly nodes: readonly RedisStore[];
  /** Votes a decision needs: a majority of the nodes. */
  readonly quorum: number;
  private readonly quorumNodes: QuorumNodes;
  private readonly claims: QuorumClaims;
  private closed = false;
  private connected = false;
  private readonly resubscribers = new Set<Promise<void>>();

  constructor(
    conns: readonly RedisConnection[],
    keys: Keys,
    private readonly timeoutMs: number,
    historyLength?: number,
  ) {
    this.nodes = conns.map((c) => {
      const node = new RedisStore(c, keys, timeoutMs, { pubsub: 'classic', historyLength });
      // a node that is down is expected in quorum mode: its connection errors are answers
      // (counted per call), not events for the console
      if (!isClient(c)) node.client.on('error', () => {});
      return node;
    });
    this.quorumNodes = new QuorumNodes(this.nodes);
    this.quorum = this.quorumNodes.quorum;
    this.claims = new QuorumClaims(this.quorumNodes, (session) => this.cover(session));
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
        else if (done) finish(this.quorumNodes.noQuorum('connect', results, ok));
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
    await this.quorumNodes.gather(
      (node) => node.subscribe(onMessage, onReconnect),
      (results, done) => {
        const ok = results.filter((r) => r?.ok).length;
        if (ok >= this.quorum) {
          results.forEach((r, i) => {
            if (r && !r.ok) retry(i);
          });
          return true;
        }
        if (done) throw this.quorumNodes.noQuorum('subscribe', results, ok);
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
  // Transitions: claim (quorum/claim.ts), settle, release, progress (quorum/outcome.ts)
  // -----------------------------------------------------------------------------------

  claim(loc: TaskLocation, a: ClaimArgs): Promise<ClaimReply> {
    return this.claims.claim(loc, a);
  }

  async settle(loc: TaskLocation, a: SettleArgs): Promise<OwnerReply> {
    const reply = await settle(this.quorumNodes, loc, a);
    if (reply.ok) this.claims.forget(a.session, loc, a.token);
    return reply;
  }

  async release(loc: TaskLocation, a: ReleaseArgs): Promise<OwnerReply> {
    const reply = await ownerWrite(
      this.quorumNodes,
      `release of task ${JSON.stringify(loc.taskId)}`,
      (node) => node.release(loc, a),
    );
    if (reply.ok) this.claims.forget(a.session, loc, a.token);
    return reply;
  }

  progress(
    loc: TaskLocation,
    a: { session: string; token: number; progress: number; note: string },
  ): Promise<OwnerReply> {
    return ownerWrite(this.quorumNodes, `progress of task ${JSON.stringify(loc.taskId)}`, (node) =>
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
      if (!v.found) return 'absent';
      return `${v.state}:${v.token}:${v.session}`;
    };
    return this.quorumNodes.gather(
      (node) => node.inspect(loc),
      (results, done) => {
        const groups = count([...results], keyOf);
        let pick: (NodeResult<InspectReply> | undefined)[] | undefined;
        for (const list of groups.values()) if (list.length >= q) pick = list;
        if (!pick && !done) return undefined;
        const answered = [...groups.values()].reduce((n, l) => n + l.length, 0);
        if (!pick) {
          if (answered < q)
            throw this.quorumNodes.noQuorum(
              `inspect of task ${JSON.stringify(loc.taskId)}`,
              results,
              answered,
            );
          // no majority: the largest group, the newest record first
          pick = [...groups.values()].sort(
            (x, y) => y.length - x.length || tokenOf(y) - tokenOf(x),
          )[0];
        }
        const first = pick?.[0];
        if (!first)
          throw this.quorumNodes.noQuorum(
            `inspect of task ${JSON.stringify(loc.taskId)}`,
            results,
            answered,
          );
        if (!first.ok) throw first.error;
        const recs = (pick ?? []).flatMap((r) => (r?.ok ? [r.value] : []));
        const found = recs.filter((r) => r.found);
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
    return this.quorumNodes.gather(
      (node) => node.cover(session),
      (results, done) => {
        const answers = results.flatMap((r) => (r?.ok ? [r.value.pttl] : []));
        if (answers.length < q) {
          if (done) throw this.quorumNodes.noQuorum('cover', results, answers.length);
          return undefined;
        }
        if (!done && answers.length < results.length) return undefined;
        const alive = answers.filter((p) => p > 0).sort((x, y) => y - x);
        return { pttl: alive.length >= q ? (alive[q - 1] as number) : 0, seq: -1, lostInMs: -1 };
      },
    );
  }

  async peek(locs: readonly TaskLocation[]): Promise<PeekEntry[]> {
    if (locs.length === 0) return [];
    const q = this.quorum;
    return this.quorumNodes.gather(
      (node) => node.peek(locs),
      (results, done) => {
        const answers = results.flatMap((r) => (r?.ok ? [r.value] : []));
        if (answers.length < q) {
          if (done) throw this.quorumNodes.noQuorum('peek', results, answers.length);
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
    op: 'open' | 'renew' | 'close' | 'ttl' | 'describe',
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
    const all = await this.quorumNodes.gather(
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
        throw this.quorumNodes.noQuorum(what, all, ok.length);
      }
      case 'renew': {
        if (ok.length >= q && first) {
          for (const i of expired) revive(i);
          return first;
        }
        // not provably alive on a majority: abandoning it is always safe
        if (answered >= q) return { ok: false, reason: 'session-expired' };
        throw this.quorumNodes.noQuorum(what, all, answered);
      }
      case 'close':
      case 'describe': {
        // describe: best effort, on every node that has the session
        if (first) return first;
        if (answered >= q) return { ok: false, reason: 'session-expired' };
        throw this.quorumNodes.noQuorum(what, all, answered);
      }
      case 'ttl': {
        if (answered < q) throw this.quorumNodes.noQuorum(what, all, answered);
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
