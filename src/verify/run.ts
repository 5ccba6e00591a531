/**
 * The orchestrator shared by `npm run chaos` and `pairlock verify`: two worker pairs (four
 * processes, worker.ts), each process behind TCP proxies of its own (one per coordination
 * node), work through a seeded task plan while a seeded fault schedule (faults.ts) kills,
 * pauses, cuts and delays them. Every task's effect goes to a fenced sink that no fault
 * touches. At the end it dumps the sink and the final records and runs the checker.
 *
 * It starts no Redis: the caller passes the coordination nodes and the sink (and, when it
 * owns the servers, a ServerControl for the faults that restart them).
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RedisOptions } from 'ioredis';
import { packageRoot } from '../cli/root.js';
import { TcpProxy } from '../testing/proxy.js';
import { clientPause, debugSleep, dropConnections } from './admin.js';
import { check, type Report } from './check.js';
import { ClusterAdmin } from './cluster-admin.js';
import {
  type FaultKind,
  type FromWorker,
  LAG_LOG_MS,
  LAG_SAMPLE_MS,
  noticeBoundMs,
  PAIRS,
  type ParentEntry,
  planFaults,
  planTasks,
  runCallBoundMs,
  SIDES,
  stamp,
  type TaskSpec,
  type ToWorker,
  timingOf,
  type WorkerConfig,
} from './common.js';
import { dump } from './dump.js';
import { FaultInjector, type ServerControl, type Slot } from './faults.js';

export type { ServerControl } from './faults.js';

/** A coordination node: where the proxies forward to, and how to connect to it. */
export interface CoordNode {
  /** host:port, for messages. */
  readonly label: string;
  readonly host: string;
  readonly port: number;
  /** ioredis options of a connection to it (user, password, TLS, db); host and port are set here. */
  readonly options: RedisOptions;
}

export interface RunSetup {
  seed: number;
  tasks: number;
  /** Tasks released per second, both pairs together. */
  rate: number;
  /** Tasks are released and faults start for this long at most. */
  horizonMs: number;
  /** After the last release: how long to wait for every answer (must exceed the run() bound). */
  drainMs: number;
  faultGapMs: number;
  kinds: readonly FaultKind[];
  nodes: readonly CoordNode[];
  /** The fenced sink, reached directly (no proxy, no fault). */
  sink: RedisOptions;
  sinkBase: string;
  sinkTtlMs: number;
  /** The namespace of each pair (they may share one). */
  namespaces: readonly [string, string];
  keyPrefix: string;
  retentionMs?: number;
  /** Only a run that owns its servers restarts them (redis-restart, node-loss). */
  servers?: ServerControl;
  /**
   * The nodes are one Redis Cluster, every master and replica (`npm run chaos -- --topology
   * cluster`): each worker reaches them through its proxies with a Cluster client, and the
   * namespaces share hash slot `slot`, which the migrate and failover faults move (only where
   * the run owns its servers). The checker sees one coordination node: the slot's master.
   */
  cluster?: { slot: number };
  /** Where the logs, the plan, the dumps and the summary go. */
  outDir: string;
  /** For the report: the topology, and the command that reproduces the run. */
  topology: string;
  command: string;
  /** Messages about the run (stderr). */
  say(msg: string): void;
  /** Called every `progressMs` while tasks are released and drained. */
  progress?(p: Progress): void;
  progressMs?: number;
  /** Aborting stops the run: workers are killed, proxies closed, and the run rejects. */
  signal?: AbortSignal;
}

export interface Progress {
  elapsedMs: number;
  released: number;
  planned: number;
  /** Tasks with an outcome on at least one side. */
  settled: number;
  faults: Record<string, number>;
  phase: 'releasing' | 'draining';
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Tasks released but not answered anywhere, at most, per pair (backpressure on the plan). */
const WINDOW_PER_PAIR = 400;

/** How a worker process is started: the built file in an installed package, else through tsx. */
export function workerCommand(): { file: string; execArgv: string[]; cwd: string } {
  const here = fileURLToPath(import.meta.url);
  const root = packageRoot(here) ?? path.resolve(path.dirname(here), '..', '..');
  if (here.endsWith('.ts'))
    return {
      file: path.join(path.dirname(here), 'worker.ts'),
      execArgv: ['--import', 'tsx'],
      cwd: root,
    };
  // built: dist/verify-worker.js beside the bundle
  const built = path.join(path.dirname(here), 'verify-worker.js');
  if (existsSync(built)) return { file: built, execArgv: [], cwd: root };
  return {
    file: path.join(root, 'src', 'verify', 'worker.ts'),
    execArgv: ['--import', 'tsx'],
    cwd: root,
  };
}

/** Run the plan under faults, then check it; resolves to the checker's report. */
export async function runChaos(setup: RunSetup): Promise<Report> {
  const t0 = stamp();
  const { outDir, say } = setup;
  const parentFd = openSync(path.join(outDir, 'parent.log'), 'a');
  let logOpen = true;
  const log = (line: ParentEntry) => {
    // late events (a child's exit during cleanup) arrive after the log is closed
    if (logOpen) writeSync(parentFd, `${JSON.stringify({ t: stamp(), ...line })}\n`);
  };
  // the proxies live in this process: when its event loop stalls, every worker's link stalls
  let lagTick = stamp();
  const lagTimer = setInterval(() => {
    const now = stamp();
    if (now - lagTick > LAG_LOG_MS)
      log({ ev: 'lag', ms: Math.round(now - lagTick - LAG_SAMPLE_MS) });
    lagTick = now;
  }, LAG_SAMPLE_MS);
  lagTimer.unref();

  const specs = planTasks(setup.seed, setup.tasks);
  const slots: Slot[] = [];
  /** Tasks with at least one outcome on some side of their pair. */
  const settledAnywhere = new Set<string>();
  let unexpectedExits = 0;
  const command = workerCommand();
  /** Coordination nodes as the faults and the checker count them (a Cluster: its slot's master). */
  const coordNodes = setup.cluster ? 1 : setup.nodes.length;
  const cluster =
    setup.cluster && setup.servers ? new ClusterAdmin(setup.nodes, setup.cluster.slot) : undefined;

  const deliver = (slot: Slot, tasks: TaskSpec[]) => {
    const child = slot.child;
    if (!child || !slot.ready || !child.connected || tasks.length === 0) return;
    // the process may die in between; its pending tasks go to the next instance
    child.send({ type: 'run', tasks } satisfies ToWorker, () => {});
  };

  const spawnWorker = (slot: Slot): void => {
    slot.instances += 1;
    slot.instance = `w${slot.index}.${slot.instances}`;
    slot.ready = false;
    slot.running.clear();
    const config: WorkerConfig = {
      slot: slot.index,
      pair: slot.pair,
      instance: slot.instance,
      namespace: setup.namespaces[slot.pair] ?? setup.namespaces[0],
      keyPrefix: setup.keyPrefix,
      coord: setup.nodes.map((n, i) => ({
        ...n.options,
        host: '127.0.0.1',
        port: slot.proxies[i]?.port ?? n.port,
      })),
      // a Cluster announces its nodes' own addresses: each is reached through its proxy
      ...(setup.cluster
        ? {
            cluster: {
              natMap: Object.fromEntries(
                setup.nodes.map((n, i) => [
                  `${n.host}:${n.port}`,
                  { host: '127.0.0.1', port: slot.proxies[i]?.port ?? n.port },
                ]),
              ),
            },
          }
        : {}),
      sink: setup.sink,
      sinkBase: setup.sinkBase,
      sinkTtlMs: setup.sinkTtlMs,
      ...(setup.retentionMs === undefined ? {} : { retentionMs: setup.retentionMs }),
      logFile: path.join(outDir, `${slot.instance}.log`),
    };
    const errFd = openSync(path.join(outDir, `${slot.instance}.err`), 'a');
    // a process group of its own: a terminal's Ctrl-C reaches the orchestrator only, which
    // stops the run (a worker that left on its own would count as a crash)
    const child = spawn(process.execPath, [...command.execArgv, command.file], {
      cwd: command.cwd,
      stdio: ['ignore', errFd, errFd, 'ipc'],
      detached: true,
    });
    closeSync(errFd);
    child.send({ type: 'config', config } satisfies ToWorker, () => {});
    slot.child = child;
    const instance = slot.instance;
    log({ ev: 'spawn', w: slot.index, p: instance, pid: child.pid ?? -1 });
    child.on('error', () => {});
    child.on('message', (msg: FromWorker) => {
      if (slot.instance !== instance) return;
      switch (msg.type) {
        case 'ready':
          slot.ready = true;
          if (slot.pending.size > 0) deliver(slot, [...slot.pending.values()]);
          break;
        case 'exec':
          if (msg.running) slot.running.add(msg.task);
          else slot.running.delete(msg.task);
          break;
        case 'outcome':
          slot.pending.delete(msg.task);
          settledAnywhere.add(msg.task);
          break;
        case 'settled':
          faults.settled();
          break;
        case 'stall':
          faults.stallFaults.reported(slot, msg.phase);
          break;
        case 'closed':
          break;
      }
    });
    child.on('exit', (code, signal) => {
      log({ ev: 'exit', w: slot.index, p: instance, code, signal });
      if (slot.instance !== instance) return;
      slot.child = undefined;
      slot.ready = false;
      if (slot.state === 'handover') {
        // a close with handover ends with exit code 0; anything else is a failure of its own
        if (code !== 0) {
          unexpectedExits += 1;
          say(
            `worker ${instance} did not close cleanly on SIGTERM (code ${code}, signal ${signal})`,
          );
        }
        return;
      }
      if (slot.state === 'up' || slot.state === 'paused') {
        // nobody asked it to go: a crash of the worker itself
        unexpectedExits += 1;
        say(
          `worker ${instance} exited unexpectedly (code ${code}, signal ${signal}); restarting it`,
        );
        slot.state = 'up';
        spawnWorker(slot);
      }
    });
  };

  const faults = new FaultInjector(
    {
      slots,
      nodes: coordNodes,
      servers: setup.servers,
      log,
      respawn: spawnWorker,
      ...(cluster ? { cluster } : {}),
      ...(setup.servers
        ? {
            dropConnections: (i: number, ports: ReadonlySet<number>, pubsub: boolean) => {
              const n = setup.nodes[i];
              return n
                ? dropConnections({ ...n.options, host: n.host, port: n.port }, ports, pubsub)
                : Promise.resolve(0);
            },
            stallServer: async (i: number, kind: 'redis-stall' | 'client-pause', ms: number) => {
              // a Cluster: the master that serves the namespaces' slot now
              const n = setup.nodes[cluster ? (await cluster.owner()).index : i];
              if (!n) return;
              const node = { ...n.options, host: n.host, port: n.port };
              if (kind === 'redis-stall') await debugSleep(node, ms);
              else await clientPause(node, ms);
            },
          }
        : {}),
    },
    setup.seed,
  );
  const killAll = () => {
    for (const slot of slots) {
      slot.state = 'stopping';
      slot.child?.kill('SIGCONT');
      slot.child?.kill('SIGKILL');
    }
  };
  const closeProxies = async () => {
    for (const slot of slots) for (const proxy of slot.proxies) await proxy.close();
  };
  const aborted = () => setup.signal?.aborted === true;
  const onAbort = () => killAll();
  setup.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    log({
      ev: 'run',
      seed: setup.seed,
      tasks: setup.tasks,
      maxSeconds: setup.horizonMs / 1_000,
      rate: setup.rate,
      topology: setup.topology,
      argv: [setup.command],
    });
    for (let i = 0; i < PAIRS * SIDES; i++) {
      const proxies: TcpProxy[] = [];
      for (const node of setup.nodes)
        proxies.push(await TcpProxy.start({ targetHost: node.host, targetPort: node.port }));
      slots.push({
        index: i,
        pair: Math.floor(i / SIDES),
        proxies,
        replyDelays: proxies.map(() => new Map()),
        child: undefined,
        instance: '',
        instances: 0,
        ready: false,
        pending: new Map(),
        running: new Set(),
        state: 'up',
        linkFault: false,
        keepUntil: 0,
      });
    }
    for (const slot of slots) spawnWorker(slot);
    for (let i = 0; i < 600 && !slots.every((s) => s.ready) && !aborted(); i++) await sleep(100);
    if (!slots.every((s) => s.ready)) {
      throw new Error(`the workers did not start within 60 s (see the .err files in ${outDir})`);
    }
    say('workers ready');

    const plan = planFaults(setup.seed, setup.horizonMs, setup.faultGapMs, setup.kinds, coordNodes);
    writeFileSync(
      path.join(outDir, 'plan.json'),
      JSON.stringify({ seed: setup.seed, tasks: specs, faults: plan }),
    );
    const start = stamp();
    let released = 0;
    let nextFault = 0;
    let lastProgress = start;
    const progressMs = setup.progressMs ?? 10_000;
    const report = (phase: Progress['phase']) => {
      if (stamp() - lastProgress < progressMs) return;
      lastProgress = stamp();
      setup.progress?.({
        elapsedMs: stamp() - t0,
        released,
        planned: setup.tasks,
        settled: settledAnywhere.size,
        faults: { ...faults.done },
        phase,
      });
    };
    let endReason = 'all tasks released and settled';
    /** Shares of a release held back one round (the peer of a `timeout` fault's slot). */
    let deferred: [Slot, TaskSpec[]][] = [];
    const deliverDeferred = () => {
      for (const [slot, tasks] of deferred) deliver(slot, tasks);
      deferred = [];
    };

    // release tasks at `rate`, inject faults on schedule, until every task is out or time is up
    for (;;) {
      if (aborted()) throw setup.signal?.reason;
      const elapsed = stamp() - start;
      if (elapsed >= setup.horizonMs) {
        endReason = `the release time (${Math.round(setup.horizonMs / 1_000)} s) ran out`;
        break;
      }
      while (nextFault < plan.length && (plan[nextFault]?.atMs ?? Infinity) <= elapsed) {
        const f = plan[nextFault++];
        if (f) faults.inject(f);
      }
      deliverDeferred();
      const due = Math.min(setup.tasks, Math.floor((elapsed / 1000) * setup.rate));
      const batch: TaskSpec[][] = slots.map(() => []);
      while (released < due) {
        const spec = specs[released];
        if (!spec) break;
        if (released - settledAnywhere.size >= WINDOW_PER_PAIR * PAIRS) break;
        released++;
        for (let side = 0; side < SIDES; side++) {
          const slot = slots[spec.pair * SIDES + side];
          if (!slot) continue;
          slot.pending.set(spec.id, spec);
          batch[slot.index]?.push(spec);
        }
      }
      const first = faults.fireTimeout(batch);
      for (const slot of slots) {
        const share = batch[slot.index] ?? [];
        if (first && slot.pair === first.pair && slot !== first) deferred.push([slot, share]);
        else deliver(slot, share);
      }
      if (released >= setup.tasks) {
        await sleep(20);
        deliverDeferred();
        break;
      }
      report('releasing');
      await sleep(20);
    }
    deliverDeferred();
    faults.disarm();
    log({ ev: 'released', count: released });
    say(`released ${released} tasks; letting the remaining faults run their course`);

    // faults already started still end (heal, restart); none start now
    await faults.settle();
    faults.healAll();

    const drainUntil = stamp() + setup.drainMs;
    while (stamp() < drainUntil && !aborted()) {
      if (slots.every((s) => s.pending.size === 0 && s.state === 'up')) break;
      report('draining');
      await sleep(100);
    }
    if (aborted()) throw setup.signal?.reason;
    const left = slots.reduce((n, s) => n + s.pending.size, 0);
    if (left > 0) {
      endReason += `; the drain timed out with ${left} task deliveries unanswered`;
      say(`drain timed out: ${left} deliveries without an outcome`);
    }
    log({ ev: 'end', reason: endReason, released });

    // stop the workers gracefully (handlers finish, sessions close)
    for (const slot of slots) {
      slot.state = 'stopping';
      if (slot.child?.connected) slot.child.send({ type: 'stop' } satisfies ToWorker, () => {});
    }
    for (let i = 0; i < 150 && slots.some((s) => s.child); i++) await sleep(100);
    killAll();

    await dump(setup, specs.slice(0, released));
    writeFileSync(
      path.join(outDir, 'summary.json'),
      JSON.stringify({
        seed: setup.seed,
        topology: setup.topology,
        nodes: coordNodes,
        runBoundMs: runCallBoundMs(),
        noticeBoundMs: noticeBoundMs(),
        pairBounds: Array.from({ length: PAIRS }, (_, p) => ({
          runMs: runCallBoundMs(timingOf(p)),
          noticeMs: noticeBoundMs(timingOf(p)),
        })),
        tasksPlanned: setup.tasks,
        released,
        faults: faults.done,
        faultsSkipped: faults.skipped,
        unexpectedExits,
        endReason,
        durationSec: Math.round((stamp() - t0) / 100) / 10,
        command: setup.command,
      }),
    );
    return check(outDir);
  } finally {
    setup.signal?.removeEventListener('abort', onAbort);
    killAll();
    faults.healAll();
    clearInterval(lagTimer);
    cluster?.close();
    logOpen = false;
    closeSync(parentFd);
    await closeProxies();
  }
}
