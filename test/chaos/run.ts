/**
 * The chaos run: two worker pairs (four processes) work through a seeded task plan while a
 * seeded fault schedule kills, pauses and cuts them off and restarts Redis. Every task's
 * effect goes to a fenced sink on a Redis that no fault touches. At the end the checker
 * reads every log, the sink's journal and the final records, prints its table and decides
 * the exit code. The orchestrator, the worker processes and the checker live in src/verify/
 * (shared with `pairlock verify`); this file starts the Redis servers it owns (and restarts
 * them as faults), and reads its options.
 *
 *   npm run chaos -- --seed 42 --tasks 5000 --max-seconds 300
 *
 * Options:
 *   --seed <n>             seed of the task plan and the fault schedule (default: random, printed)
 *   --tasks <n>            tasks in the plan (default 5000)
 *   --max-seconds <n>      stop releasing tasks and injecting faults after this long (default 300);
 *                          the run then heals everything and drains for up to --drain-seconds
 *   --drain-seconds <n>    (default 80)
 *   --rate <n>             tasks released per second, both pairs together (default 50)
 *   --fault-gap-ms <n>     mean time between two faults (default 700)
 *   --faults <list>        fault kinds, comma-separated (default all that apply:
 *                          kill,pause,redis-restart,cut,delay,partition,abort,timeout,handover,
 *                          node-loss,sub-reset,cmd-reset,stall,redis-stall,client-pause,
 *                          stall-close, and with --topology quorum also cut-node,slow-minority)
 *   --topology single|quorum|cluster
 *                          quorum: three independent masters (PairedWorker `nodes`); a
 *                          Redis restart then restarts one node of the three (a minority).
 *                          cluster: a Redis Cluster of 3 masters with a replica each; workers
 *                          use an ioredis Cluster client through their own proxy of every node
 *                          (natMap), and both pairs' namespaces share one hash slot. Its faults:
 *                          migrate (the slot moves to another master, key by key, by the
 *                          resharding protocol) and failover (CLUSTER FAILOVER on the replica of
 *                          the slot's master), and of the others kill, pause, cut, delay,
 *                          partition, abort, timeout, handover, sub-reset, cmd-reset (on every
 *                          node), stall, stall-close, redis-stall and client-pause (on the slot's
 *                          master). Not redis-restart or node-loss (a master's loss is what
 *                          failover stands for; the nodes keep nothing on disk), nor the
 *                          quorum kinds cut-node and slow-minority. --persistence does not apply.
 *   --persistence aof|none AOF with fsync always (default), or none: a restart loses the data
 *   --out <dir>            where logs and dumps go (default: a new temp dir)
 *   --keep                 keep the run directory even when every invariant holds
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Keys } from '../../src/redis/keys.js';
import { keySlot } from '../../src/redis/topology-cluster.js';
import { type ClusterTopology, RedisServer, startCluster } from '../../src/testing/index.js';
import { formatReport } from '../../src/verify/check.js';
import { namespaceInSlot } from '../../src/verify/cluster-admin.js';
import {
  clusterExcludedFaults,
  clusterOnlyFaults,
  defaultFaults,
  type FaultKind,
  faultKinds,
  quorumOnlyFaults,
  runCallBoundMs,
  stamp,
} from '../../src/verify/common.js';
import { runChaos } from '../../src/verify/run.js';

const { values: args } = parseArgs({
  options: {
    seed: { type: 'string' },
    tasks: { type: 'string', default: '5000' },
    'max-seconds': { type: 'string', default: '300' },
    'drain-seconds': { type: 'string', default: '80' },
    rate: { type: 'string', default: '50' },
    'fault-gap-ms': { type: 'string', default: '700' },
    faults: { type: 'string' },
    topology: { type: 'string', default: 'single' },
    persistence: { type: 'string', default: 'aof' },
    out: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
  strict: true,
});

function int(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    console.error(`chaos: --${name} must be an integer >= ${min}, got ${String(v)}`);
    process.exit(2);
  }
  return n;
}

const seed =
  args.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : int('seed', args.seed, 0);
const taskCount = int('tasks', args.tasks, 1);
const maxSeconds = int('max-seconds', args['max-seconds'], 1);
const drainSeconds = int('drain-seconds', args['drain-seconds'], 1);
const rate = int('rate', args.rate, 1);
const faultGapMs = int('fault-gap-ms', args['fault-gap-ms'], 100);
const topology = args.topology;
if (topology !== 'single' && topology !== 'quorum' && topology !== 'cluster') {
  console.error(`chaos: --topology must be 'single', 'quorum' or 'cluster', got '${topology}'`);
  process.exit(2);
}
const isCluster = topology === 'cluster';
/** Coordination nodes: one Redis, or three independent masters (quorum mode). */
const nodeCount = topology === 'quorum' ? 3 : 1;
const kinds: FaultKind[] = (args.faults ?? defaultFaults(nodeCount, true, isCluster).join(','))
  .split(',')
  .filter((k) => k !== '')
  .map((k) => {
    if (!(faultKinds as readonly string[]).includes(k)) {
      console.error(`chaos: unknown fault kind '${k}' (known: ${faultKinds.join(', ')})`);
      process.exit(2);
    }
    if (isCluster && (clusterExcludedFaults as readonly string[]).includes(k)) {
      console.error(`chaos: fault kind '${k}' does not apply to --topology cluster`);
      process.exit(2);
    }
    if (!isCluster && (clusterOnlyFaults as readonly string[]).includes(k)) {
      console.error(`chaos: fault kind '${k}' needs --topology cluster`);
      process.exit(2);
    }
    if (!isCluster && nodeCount === 1 && (quorumOnlyFaults as readonly string[]).includes(k)) {
      console.error(`chaos: fault kind '${k}' needs --topology quorum`);
      process.exit(2);
    }
    return k as FaultKind;
  });
const persistence = args.persistence;
if (persistence !== 'aof' && persistence !== 'none') {
  console.error(`chaos: --persistence must be 'aof' or 'none', got '${persistence}'`);
  process.exit(2);
}
const runBoundMs = runCallBoundMs();
if (drainSeconds * 1_000 <= runBoundMs) {
  console.error(
    `chaos: --drain-seconds must exceed the run() bound (${runBoundMs / 1_000} s), or a hung run() could go unseen`,
  );
  process.exit(2);
}

const outDir = args.out ?? mkdtempSync(path.join(os.tmpdir(), `pairlock-chaos-${seed}-`));
mkdirSync(outDir, { recursive: true });
const t0 = stamp();
const say = (msg: string) =>
  process.stderr.write(`[chaos +${((stamp() - t0) / 1000).toFixed(1)}s] ${msg}\n`);

const coordNodes: RedisServer[] = [];
let clusterTopo: ClusterTopology | undefined;
let sinkServer: RedisServer | undefined;
const keyPrefix = 'pairlock';
/**
 * The pairs' namespaces. On a Cluster both live in one hash slot (the first's), so that a
 * migration or a failover of that slot hits both pairs.
 */
const clusterSlot = keySlot(new Keys(keyPrefix, 'chaos-p0').channel);
const namespaces: [string, string] = [
  'chaos-p0',
  isCluster ? namespaceInSlot('chaos-p1', clusterSlot) : 'chaos-p1',
];
const stop = new AbortController();

async function main(): Promise<void> {
  say(
    `seed ${seed}, ${taskCount} tasks, ${rate}/s, faults every ~${faultGapMs} ms, logs in ${outDir}`,
  );
  // AOF with fsync on every write: a restart (even a SIGKILL) keeps every record and token.
  // --persistence none shows what a restart that loses the data does.
  // The nodes' files live in the run directory: a failed run keeps each node's AOF, with
  // timestamps, as the history of every record it held.
  if (isCluster) {
    // 3 masters, a replica each: every node is a coordination node the workers may reach
    clusterTopo = await startCluster({ masters: 3, replicas: 1 });
    coordNodes.push(...clusterTopo.nodes);
    say(
      `cluster of ${clusterTopo.masters.length} masters (${clusterTopo.masters.map((n) => n.port).join(', ')}) with a replica each (${clusterTopo.replicas.map((n) => n.port).join(', ')}); namespaces ${namespaces.join(', ')} in slot ${clusterSlot}`,
    );
  }
  for (let i = 0; !isCluster && i < nodeCount; i++) {
    const dir = path.join(outDir, `redis-node-${i}`);
    mkdirSync(dir, { recursive: true });
    const args =
      persistence === 'aof'
        ? ['--appendonly', 'yes', '--appendfsync', 'always', '--aof-timestamp-enabled', 'yes']
        : [];
    coordNodes.push(await RedisServer.start({ args: [...args, '--dir', dir] }));
  }
  sinkServer = await RedisServer.start();
  const report = await runChaos({
    seed,
    tasks: taskCount,
    rate,
    horizonMs: maxSeconds * 1_000,
    drainMs: drainSeconds * 1_000,
    faultGapMs,
    kinds,
    nodes: coordNodes.map((n) => ({
      label: `${n.host}:${n.port}`,
      host: n.host,
      port: n.port,
      options: {},
    })),
    sink: { host: sinkServer.host, port: sinkServer.port },
    sinkBase: '',
    sinkTtlMs: 0,
    namespaces,
    keyPrefix,
    ...(isCluster ? { cluster: { slot: clusterSlot } } : {}),
    servers: {
      kill: async (i) => {
        await coordNodes[i]?.kill();
      },
      restart: async (i) => {
        await coordNodes[i]?.restart();
      },
    },
    outDir,
    topology: isCluster
      ? `cluster of 3 masters with a replica each, namespaces in slot ${clusterSlot}`
      : topology === 'quorum'
        ? `quorum of ${nodeCount} independent masters, persistence ${persistence}`
        : `single Redis, persistence ${persistence}`,
    command: `npm run chaos -- --seed ${seed} --tasks ${taskCount} --max-seconds ${maxSeconds} --rate ${rate} --fault-gap-ms ${faultGapMs}${args.faults ? ` --faults ${args.faults}` : ''}${topology === 'single' ? '' : ` --topology ${topology}`}${persistence === 'none' && !isCluster ? ' --persistence none' : ''}`,
    say,
    progress: (p) =>
      say(
        `released ${p.released}/${p.planned}, settled ${p.settled}, faults ${JSON.stringify(p.faults)}`,
      ),
    signal: stop.signal,
  });
  process.stdout.write(`${formatReport(report)}\n`);
  await cleanup();
  if (report.ok && !args.keep && args.out === undefined) {
    rmSync(outDir, { recursive: true, force: true });
    process.stdout.write('run directory removed (every invariant holds; pass --keep to keep it)\n');
  } else process.stdout.write(`run directory: ${outDir}\n`);
  process.exit(report.ok ? 0 : 1);
}

async function cleanup(): Promise<void> {
  if (clusterTopo) await clusterTopo.close();
  for (const node of coordNodes) await node.stop();
  await sinkServer?.stop();
}

process.on('SIGINT', () => {
  stop.abort(new Error('interrupted'));
});

main().catch(async (err: unknown) => {
  console.error('chaos: the run failed:', stop.signal.aborted ? 'interrupted' : err);
  await cleanup().catch(() => {});
  process.stdout.write(`run directory: ${outDir}\n`);
  process.exit(stop.signal.aborted ? 130 : 2);
});
