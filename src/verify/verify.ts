/**
 * `pairlock verify`: the chaos run pointed at one's own deployment. Two worker pairs run as
 * child processes on this machine, each behind local TCP proxies this process controls,
 * connected to the user's Redis (one, or quorum nodes). They run the task plan into a fenced
 * sink kept in a namespace of the run's own while only client-side faults are injected
 * (SIGKILL, SIGSTOP past the TTL, cuts, delays, partitions, late replies, handovers, caller
 * aborts): the user's servers are never restarted or reconfigured. Then the checker decides,
 * and every key of the namespace is deleted.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { Keys } from '../redis/keys.js';
import type { Report } from './check.js';
import {
  defaultFaults,
  type FaultKind,
  faultKinds,
  quorumOnlyFaults,
  runCallBoundMs,
  serverFaults,
} from './common.js';
import {
  checkAcl,
  checkEmpty,
  deleteAll,
  evictionLine,
  open,
  roundTrip,
  VerifyError,
} from './preflight.js';
import { type CoordNode, type Progress, runChaos } from './run.js';

export { VerifyError } from './preflight.js';
export type { CoordNode, Progress } from './run.js';

export interface VerifyOptions {
  /** One node: a single Redis; three or more: quorum mode. */
  nodes: readonly CoordNode[];
  /** Must hold no key. @default `pairlock-verify-<random>` */
  namespace?: string;
  /** @default 'pairlock' */
  keyPrefix?: string;
  /** @default 1000 */
  tasks?: number;
  /** How long tasks are released and faults injected. @default 50 */
  seconds?: number;
  /** @default every client-side kind that applies */
  faults?: readonly FaultKind[];
  /** @default random */
  seed?: number;
  /** Bound on connecting during the preflight. @default 5000 */
  timeoutMs?: number;
  /** Keep the run's logs here (otherwise a temp dir, kept only when an invariant fails). */
  out?: string;
  say?(msg: string): void;
  progress?(p: Progress): void;
  progressMs?: number;
  signal?: AbortSignal;
}

export interface VerifyResult {
  report: Report;
  namespace: string;
  /** The run's logs, or undefined when they were removed (every invariant held). */
  runDirectory: string | undefined;
  keysDeleted: number;
  /** Keys of the namespace still there after the cleanup (0 unless deletion failed). */
  keysLeft: number;
  roundTripMs: number;
}

/** The highest median round trip the run's timings (leases of 1 s, timeouts of 400 ms) allow. */
export const MAX_ROUND_TRIP_MS = 25;

/** The fault kinds of `--faults`, checked: known, client-side, and fit for the topology. */
export function parseFaults(list: string, nodes: number): FaultKind[] {
  const allowed = defaultFaults(nodes, false);
  const kinds = list
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k !== '');
  if (kinds.length === 0)
    throw new VerifyError(`pairlock verify: --faults names no fault kind`, 'input');
  return kinds.map((k) => {
    if (!(faultKinds as readonly string[]).includes(k)) {
      throw new VerifyError(
        `pairlock verify: --faults: unknown fault kind ${JSON.stringify(k)} (known: ${allowed.join(', ')})`,
        'input',
      );
    }
    if ((serverFaults as readonly string[]).includes(k)) {
      throw new VerifyError(
        `pairlock verify: --faults: ${k} ${k === 'redis-restart' || k === 'node-loss' ? 'restarts' : 'acts on'} a Redis server; verify never touches your servers (client-side kinds: ${allowed.join(', ')})`,
        'input',
      );
    }
    if (nodes === 1 && (quorumOnlyFaults as readonly string[]).includes(k)) {
      throw new VerifyError(`pairlock verify: --faults: ${k} needs quorum nodes`, 'input');
    }
    return k as FaultKind;
  });
}

const positive = (name: string, v: number | undefined, fallback: number) => {
  const n = v ?? fallback;
  if (!Number.isInteger(n) || n < 1)
    throw new VerifyError(
      `pairlock verify: ${name} must be a positive integer, got ${String(v)}`,
      'input',
    );
  return n;
};

export async function runVerify(opts: VerifyOptions): Promise<VerifyResult> {
  const nodes = opts.nodes;
  if (nodes.length !== 1 && (nodes.length < 3 || nodes.length % 2 === 0)) {
    throw new VerifyError(
      `pairlock verify: one Redis, or an odd number (3 or more) of quorum nodes; got ${nodes.length}`,
      'input',
    );
  }
  const tasks = positive('--tasks', opts.tasks, 1_000);
  const seconds = positive('--seconds', opts.seconds, 50);
  const kinds = opts.faults ?? defaultFaults(nodes.length, false);
  const say = opts.say ?? (() => {});
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
  const namespace = opts.namespace ?? `pairlock-verify-${randomBytes(4).toString('hex')}`;
  const keyPrefix = opts.keyPrefix ?? 'pairlock';
  const base = new Keys(keyPrefix, namespace).base;
  const timeoutMs = opts.timeoutMs ?? 5_000;

  // preflight, node by node: reachable, near, allowed, and an empty namespace
  const clients: Redis[] = [];
  /** Nodes whose namespace was found empty: what is there now, the preflight wrote. */
  const ours: Redis[] = [];
  let roundTripMs = 0;
  try {
    for (const node of nodes) {
      const client = await open(node, timeoutMs);
      clients.push(client);
      const rtt = await roundTrip(client);
      roundTripMs = Math.max(roundTripMs, rtt);
      if (rtt > MAX_ROUND_TRIP_MS) {
        throw new VerifyError(
          `pairlock verify: a round trip to ${node.label} takes ${rtt.toFixed(1)} ms; the run's leases (1 s) and timeouts (400 ms) need one under ${MAX_ROUND_TRIP_MS} ms. Run verify on a machine near the Redis.`,
          'too-far',
        );
      }
      await checkEmpty(client, node, base, namespace);
      ours.push(client);
      await checkAcl(client, base);
      say(await evictionLine(client, node));
    }
  } catch (err) {
    // the probe keys of a refused run go too
    for (const c of ours) await deleteAll(c, base).catch(() => {});
    for (const c of clients) c.disconnect();
    throw err;
  }

  const outDir = opts.out ?? mkdtempSync(path.join(os.tmpdir(), `pairlock-verify-${seed}-`));
  mkdirSync(outDir, { recursive: true });
  const first = nodes[0] as CoordNode;
  let report: Report | undefined;
  let cleanup = { deleted: 0, left: 0 };
  try {
    report = await runChaos({
      seed,
      tasks,
      // every task out within --seconds
      rate: Math.max(1, Math.ceil(tasks / seconds)),
      horizonMs: seconds * 1_000 + 2_000,
      // long enough to see a hung run() call, and no longer unless something is left
      drainMs: runCallBoundMs() + 5_000,
      faultGapMs: 2_000,
      kinds,
      nodes,
      sink: { ...first.options, host: first.host, port: first.port },
      sinkBase: base,
      sinkTtlMs: 3_600_000,
      namespaces: [namespace, namespace],
      keyPrefix,
      // records outlive the run only as long as it may take
      retentionMs: 600_000,
      outDir,
      topology:
        nodes.length === 1
          ? `one Redis at ${first.label}`
          : `quorum of ${nodes.length} nodes (${nodes.map((n) => n.label).join(', ')})`,
      command: `pairlock [connection options] verify --seed ${seed} --tasks ${tasks} --seconds ${seconds}${opts.faults ? ` --faults ${kinds.join(',')}` : ''}`,
      say,
      ...(opts.progress ? { progress: opts.progress } : {}),
      progressMs: opts.progressMs ?? 5_000,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    // interrupted: nothing to look at later
    if (opts.signal?.aborted && opts.out === undefined)
      rmSync(outDir, { recursive: true, force: true });
    throw err;
  } finally {
    // every key of the namespace was written by this run (it was empty)
    for (const client of clients) {
      const r = await deleteAll(client, base).catch(() => ({ deleted: 0, left: -1 }));
      cleanup = { deleted: cleanup.deleted + r.deleted, left: cleanup.left + Math.max(0, r.left) };
      client.disconnect();
    }
  }
  const keep = opts.out !== undefined || !report.ok;
  if (!keep) rmSync(outDir, { recursive: true, force: true });
  return {
    report,
    namespace,
    runDirectory: keep ? outDir : undefined,
    keysDeleted: cleanup.deleted,
    keysLeft: cleanup.left,
    roundTripMs,
  };
}
