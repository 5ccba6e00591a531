import { NoQuorumError } from '../../shared/errors.js';
import { describeClient, type RedisStore } from '../store.js';

/*
 * The nodes of a quorum and the two things every quorum transition does with them: send
 * one call to all at once and decide on the answers as they come (gather), and count
 * the answers that agree.
 */

export type NodeResult<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Items grouped by key; items whose key is undefined are left out. */
export function count<T>(items: readonly T[], key: (t: T) => string | undefined): Map<string, T[]> {
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
export function atLeastOnQuorum(values: readonly number[], q: number): number {
  const sorted = [...values].sort((x, y) => y - x);
  return sorted[Math.min(q, sorted.length) - 1] ?? 0;
}

export class QuorumNodes {
  /** Votes a decision needs: a majority of the nodes. */
  readonly quorum: number;

  constructor(readonly list: readonly RedisStore[]) {
    this.quorum = Math.floor(list.length / 2) + 1;
  }

  get size(): number {
    return this.list.length;
  }

  describe(i: number): string {
    const n = this.list[i];
    return `node ${i} (${n ? describeClient(n.client) : '?'})`;
  }

  noQuorum(
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
      `${what}: ${answered} of ${this.size} Redis nodes agreed or answered, ${this.quorum} needed${detail}`,
      cause && !cause.ok ? { cause: cause.error } : undefined,
    );
  }

  /**
   * Run `fn` on every node at once. Resolves with `decide`'s first decision, taken after
   * each answer (with `done` once every node has answered or failed; it must decide then).
   * Answers that come after the decision go to `late`. Every node call is bounded by the
   * store's timeout, so this is too.
   */
  gather<T, D>(
    fn: (node: RedisStore, i: number) => Promise<T>,
    decide: (results: readonly (NodeResult<T> | undefined)[], done: boolean) => D | undefined,
    late?: (result: NodeResult<T>, i: number, decision: D) => void,
  ): Promise<D> {
    return new Promise<D>((resolve, reject) => {
      const results: (NodeResult<T> | undefined)[] = this.list.map(() => undefined);
      let pending = this.list.length;
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
      this.list.forEach((node, i) => {
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
}
