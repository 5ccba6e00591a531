import { performance } from 'node:perf_hooks';
import type { TaskLocation } from '../keys.js';
import type { OwnerReply, RedisStore, SettleArgs } from '../store.js';
import { count, type NodeResult, type QuorumNodes } from './nodes.js';

/*
 * Quorum mode: the owner's writes (settle, release, progress). Each counts on a majority.
 * A settle also writes its outcome back onto the nodes that turned it away because they
 * are behind (repair-2.lua), so that a finished task survives the loss of any minority;
 * the script decides which nodes are behind and which refused on their own authority.
 */

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Retry delay of a repair that met a minority grant about to be undone: short and jittered. */
const jitter = () => 20 + Math.floor(Math.random() * 80);
/** Rounds of repair of a settle short of a majority, at least. */
const REPAIR_ROUNDS = 3;
/**
 * A minority grant of another claimer is undone once that claimer's round is decided, which
 * may wait for a silent node until its command timeout: a settle short of a majority keeps
 * trying such a node that long, and a little more.
 */
const repairBoundMs = (nodes: QuorumNodes): number =>
  Math.max(...nodes.list.map((n) => n.commandTimeoutMs), 0) + 500;

/** Release or progress: counts on a majority. A retried write of its own is answered ok. */
export function ownerWrite(
  nodes: QuorumNodes,
  what: string,
  fn: (node: RedisStore) => Promise<OwnerReply>,
): Promise<OwnerReply> {
  const q = nodes.quorum;
  const keyOf = (r: NodeResult<OwnerReply> | undefined): string | undefined => {
    if (!r?.ok) return undefined;
    if (r.value.ok) return 'ok';
    return `r:${r.value.reason}`;
  };
  return nodes.gather(fn, (results, done) => {
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
    if (answered < q) throw nodes.noQuorum(what, results, answered);
    // answers from a majority, but no majority accepted: not proven, so rejected
    if (top?.ok) return top.value;
    throw nodes.noQuorum(what, results, answered);
  });
}

/**
 * Settle on every node; it counts on a majority. Once it counts, every node that turned it
 * away gets the outcome written back (repair-2.lua, counted): before the answer for the
 * nodes that answered by then, in the background for later ones. Short of a majority,
 * only the nodes that never saw the grant are written (repair, not counted): a node that
 * holds the grant and refused the settle did so because the lease is gone there, and a
 * writer whose lease is gone on a majority is refused, as on one Redis.
 */
export async function settle(
  nodes: QuorumNodes,
  loc: TaskLocation,
  a: SettleArgs,
): Promise<OwnerReply> {
  const q = nodes.quorum;
  // a node that already holds this very outcome (a retried settle, or a repair) says so: ok
  const took = (r: NodeResult<OwnerReply> | undefined) => r?.ok === true && r.value.ok;
  const refused = (r: NodeResult<OwnerReply> | undefined) => r?.ok === true && !took(r);
  const accepted = (results: readonly (NodeResult<OwnerReply> | undefined)[]) => {
    for (const r of results) if (r?.ok && r.value.ok) return r.value;
    return undefined;
  };
  let attempt: number | undefined;
  let counted = false;
  const repair = (i: number, outcomeCounted: boolean) => {
    const node = nodes.list[i];
    if (attempt === undefined || !node) return Promise.resolve('kept' as const);
    return node
      .repair(loc, { ...a, attempt, counted: outcomeCounted })
      .catch(() => 'later' as const);
  };

  const results = await nodes.gather(
    (node) => node.settle(loc, a),
    (res, done) => {
      attempt ??= accepted(res)?.attempt;
      if (res.filter(took).length >= q) counted = true;
      return counted || done ? [...res] : undefined;
    },
    (late, i) => {
      if (counted && refused(late)) void repair(i, true);
    },
  );
  let ok = results.filter(took).length;
  const behind = results.flatMap((r, i) => (refused(r) ? [i] : []));
  let missing = behind;
  // Short of a majority: the nodes that never saw the grant. One held by a claimer that is
  // about to undo its minority grant is tried again shortly.
  let retry = behind;
  const until = performance.now() + repairBoundMs(nodes);
  for (
    let round = 0;
    ok > 0 && ok < q && retry.length > 0 && (round < REPAIR_ROUNDS || performance.now() < until);
    round++
  ) {
    if (round > 0) await sleep(jitter() * Math.min(round, 3));
    const answers = await Promise.all(retry.map((i) => repair(i, false)));
    ok += answers.filter((x) => x === 'written').length;
    missing = missing.filter((i) => answers[retry.indexOf(i)] !== 'written');
    retry = retry.filter((_, j) => answers[j] === 'later');
  }
  if (ok >= q) {
    counted = true;
    await Promise.all(missing.map((i) => repair(i, true)));
    return accepted(results) ?? { ok: true, token: a.token, attempt: 0, serverNow: 0 };
  }
  const rejections = count(
    results.filter((r) => refused(r)),
    (r) => (r?.ok && !r.value.ok ? r.value.reason : undefined),
  );
  const top = [...rejections.values()].sort((x, y) => y.length - x.length)[0]?.[0];
  const answered = results.filter((r) => r?.ok).length;
  if (answered >= q && top?.ok) return top.value;
  throw nodes.noQuorum(`settle of task ${JSON.stringify(loc.taskId)}`, results, ok);
}
