/**
 * The chaos run: two worker pairs (four processes) work through a seeded task plan while a
 * seeded fault schedule kills, pauses and cuts them off and restarts Redis. Every task's
 * effect goes to a fenced sink on a Redis that no fault touches. At the end the checker
 * (check.ts) reads every log, the sink's journal and the final records, prints its table and
 * decides the exit code.
 *
 *   npm run chaos -- --seed 42 --tasks 5000 --max-seconds 300
 *
 * Options:
 *   --seed <n>             seed of the task plan and the fault schedule (default: random, printed)
 *   --tasks <n>            tasks in the plan (default 5000)
 *   --max-seconds <n>      stop releasing tasks and injecting faults after this long (default 300);
 *                          the run then heals everything and drains for up to --drain-seconds
 *   --drain-seconds <n>    (default 60)
 *   --rate <n>             tasks released per second, both pairs together (default 60)
 *   --fault-gap-ms <n>     mean time between two faults (default 2000)
 *   --faults <list>        fault kinds, comma-separated (default all that apply:
 *                          kill,pause,redis-restart,cut,delay,partition,abort,timeout,handover,
 *                          and with --topology quorum also cut-node,node-loss,slow-minority;
 *                          node-loss also applies to one Redis)
 *   --topology single|quorum   quorum: three independent masters (PairedWorker `nodes`); a
 *                          Redis restart then restarts one node of the three (a minority)
 *   --persistence aof|none AOF with fsync always (default), or none: a restart loses the data
 *   --out <dir>            where logs and dumps go (default: a new temp dir)
 *   --keep                 keep the run directory even when every invariant holds
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { fencedRead, PairedWorker } from '../../src/index.js';
import { RedisServer, TcpProxy } from '../../src/testing/index.js';
import { check, formatReport } from './check.js';
import {
  defaultFaults,
  derive,
  type FaultKind,
  type FaultPlan,
  type FromWorker,
  faultKinds,
  namespaceOf,
  noticeBoundMs,
  PAIRS,
  type ParentLine,
  planFaults,
  planTasks,
  quorumOnlyFaults,
  runCallBoundMs,
  SIDES,
  SINK_JOURNAL,
  sinkKey,
  stamp,
  type TaskSpec,
  type ToWorker,
  workerTiming,
} from './common.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');

const { values: args } = parseArgs({
  options: {
    seed: { type: 'string' },
    tasks: { type: 'string', default: '5000' },
    'max-seconds': { type: 'string', default: '300' },
    'drain-seconds': { type: 'string', default: '60' },
    rate: { type: 'string', default: '60' },
    'fault-gap-ms': { type: 'string', default: '2000' },
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
if (topology !== 'single' && topology !== 'quorum') {
  console.error(`chaos: --topology must be 'single' or 'quorum', got '${topology}'`);
  process.exit(2);
}
if (topology === 'quorum' && !existsSync(path.join(root, 'src/quorum.ts'))) {
  console.error(
    'chaos: --topology quorum needs the quorum store (src/quorum.ts), which this build lacks',
  );
  process.exit(2);
}
/** Coordination nodes: one Redis, or three independent masters (quorum mode). */
const nodeCount = topology === 'quorum' ? 3 : 1;
const kinds: FaultKind[] = (args.faults ?? defaultFaults(nodeCount).join(','))
  .split(',')
  .filter((k) => k !== '')
  .map((k) => {
    if (!(faultKinds as readonly string[]).includes(k)) {
      console.error(`chaos: unknown fault kind '${k}' (known: ${faultKinds.join(', ')})`);
      process.exit(2);
    }
    if (nodeCount === 1 && (quorumOnlyFaults as readonly string[]).includes(k)) {
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
const parentFd = openSync(path.join(outDir, 'parent.log'), 'a');
type PLine = ParentLine extends infer L ? (L extends { t: number } ? Omit<L, 't'> : never) : never;
let parentLogOpen = true;
function plog(line: PLine): void {
  // late events (a child's exit during cleanup) arrive after the log is closed
  if (parentLogOpen) writeSync(parentFd, `${JSON.stringify({ t: stamp(), ...line })}\n`);
}
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const say = (msg: string) =>
  process.stderr.write(`[chaos +${((stamp() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
const t0 = stamp();
// the proxies live in this process: when its event loop stalls, every worker's link stalls
let lagTick = stamp();
const lagTimer = setInterval(() => {
  const now = stamp();
  if (now - lagTick > 250) plog({ ev: 'lag', ms: Math.round(now - lagTick - 50) });
  lagTick = now;
}, 50).unref();

// ---------------------------------------------------------------------------------------
// Worker slots
// ---------------------------------------------------------------------------------------

interface Slot {
  readonly index: number;
  readonly pair: number;
  /** One proxy per coordination node: this worker's own links. */
  proxies: TcpProxy[];
  /** Reply delays asked for each proxy, by the fault that asked (the largest applies). */
  readonly replyDelays: Map<string, number>[];
  child: ChildProcess | undefined;
  instance: string;
  instances: number;
  ready: boolean;
  /** Tasks released to this slot that its current process has not reported an outcome for. */
  readonly pending: Map<string, TaskSpec>;
  /** Tasks whose handler runs now in this slot's process (holder detection). */
  readonly running: Set<string>;
  /**
   * The process is down on purpose (kill), frozen (pause), closing on SIGTERM (handover),
   * or being stopped at the end of the run.
   */
  state: 'up' | 'killed' | 'paused' | 'handover' | 'stopping';
  /** The proxy is faulted (cut, delay, partition, timeout, cut-node). */
  linkFault: boolean;
  /**
   * After an `abort`, the process is not killed or handed over for a while: its second
   * run() call must be seen to answer (or not) before the process goes away.
   */
  keepUntil: number;
}

const coordNodes: RedisServer[] = [];
let sinkServer: RedisServer;
const slots: Slot[] = [];
const specs = planTasks(seed, taskCount);
/** Tasks with at least one outcome on some side of their pair. */
const settledAnywhere = new Set<string>();
let unexpectedExits = 0;
/** Called on every settle a worker reports (node-loss waits for one). */
let onSettle: (() => void) | undefined;

function setReplyDelay(slot: Slot, node: number, source: string, ms: number): void {
  const asked = slot.replyDelays[node];
  const proxy = slot.proxies[node];
  if (!asked || !proxy) return;
  if (ms > 0) asked.set(source, ms);
  else asked.delete(source);
  proxy.setReplyDelay(Math.max(0, ...asked.values()));
}

/** The same reply delay on every link of a slot. */
function setLinkReplyDelay(slot: Slot, source: string, ms: number): void {
  for (let n = 0; n < slot.proxies.length; n++) setReplyDelay(slot, n, source, ms);
}

function spawnWorker(slot: Slot): void {
  slot.instances += 1;
  slot.instance = `w${slot.index}.${slot.instances}`;
  slot.ready = false;
  slot.running.clear();
  const config = {
    slot: slot.index,
    pair: slot.pair,
    instance: slot.instance,
    redisUrls: slot.proxies.map((p) => p.url),
    sinkUrl: sinkServer.url,
    logFile: path.join(outDir, `${slot.instance}.log`),
  };
  const errFd = openSync(path.join(outDir, `${slot.instance}.err`), 'a');
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(here, 'worker.ts'), JSON.stringify(config)],
    {
      cwd: root,
      stdio: ['ignore', errFd, errFd, 'ipc'],
    },
  );
  closeSync(errFd);
  slot.child = child;
  const instance = slot.instance;
  plog({ ev: 'spawn', w: slot.index, p: instance, pid: child.pid ?? -1 });
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
        onSettle?.();
        break;
      case 'closed':
        break;
    }
  });
  child.on('exit', (code, signal) => {
    plog({ ev: 'exit', w: slot.index, p: instance, code, signal });
    if (slot.instance !== instance) return;
    slot.child = undefined;
    slot.ready = false;
    if (slot.state === 'handover') {
      // a close with handover ends with exit code 0; anything else is a failure of its own
      if (code !== 0) {
        unexpectedExits += 1;
        say(`worker ${instance} did not close cleanly on SIGTERM (code ${code}, signal ${signal})`);
      }
      return;
    }
    if (slot.state === 'up' || slot.state === 'paused') {
      // nobody asked it to go: a crash of the worker itself
      unexpectedExits += 1;
      say(`worker ${instance} exited unexpectedly (code ${code}, signal ${signal}); restarting it`);
      slot.state = 'up';
      spawnWorker(slot);
    }
  });
}

function deliver(slot: Slot, tasks: TaskSpec[]): void {
  const child = slot.child;
  if (!child || !slot.ready || !child.connected || tasks.length === 0) return;
  const msg: ToWorker = { type: 'run', tasks };
  child.send(msg, (err) => {
    // the process died in between; its pending tasks go to the next instance
    if (err) return;
  });
}

// ---------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------

const faultRng = derive(seed, 3);
/** One node at a time is restarted, lost or slow (a minority: the others keep a quorum). */
let nodeFaultBusy = false;
const faultsDone: Record<string, number> = {};
const faultsSkipped: Record<string, number> = {};
const inFlight = new Set<Promise<void>>();
/**
 * A `timeout` fault waits for the next release of tasks to its slot's pair: the replies to
 * that slot's claims are held back past connectTimeoutMs while Redis has applied them.
 */
let armedTimeout: { f: FaultPlan; slot: Slot; armedAt: number } | undefined;

function track(p: Promise<void>): void {
  inFlight.add(p);
  void p.finally(() => inFlight.delete(p));
}

function pickHolder(preferred: Slot, ending = false): Slot | undefined {
  const up = slots.filter(
    (s) => s.state === 'up' && s.child && s.ready && (!ending || s.keepUntil <= stamp()),
  );
  const holders = up.filter((s) => s.running.size > 0);
  if (holders.includes(preferred)) return preferred;
  if (holders.length > 0) return holders[Math.floor(faultRng() * holders.length)];
  return up.includes(preferred) ? preferred : up[0];
}

function inject(f: FaultPlan): void {
  const target = slots[f.slot];
  if (!target) return;
  const skip = (why: string) => {
    faultsSkipped[f.kind] = (faultsSkipped[f.kind] ?? 0) + 1;
    plog({ ev: 'fault', kind: f.kind, w: target.index, phase: 'end', detail: `skipped: ${why}` });
  };
  const done = () => {
    faultsDone[f.kind] = (faultsDone[f.kind] ?? 0) + 1;
  };
  switch (f.kind) {
    case 'kill':
    case 'handover': {
      const slot = pickHolder(target, true);
      if (!slot?.child) {
        skip('no live worker');
        return;
      }
      const child = slot.child;
      const handover = f.kind === 'handover';
      slot.state = handover ? 'handover' : 'killed';
      const slow = handover && (f.replyDelayMs ?? 0) > 0;
      plog({
        ev: 'fault',
        kind: f.kind,
        w: slot.index,
        p: slot.instance,
        phase: 'start',
        detail: `holding ${slot.running.size}${slow ? `, replies ${f.replyDelayMs} ms late` : ''}`,
      });
      // a slow link: the release's reply (and what the worker does after it) comes late
      if (slow) setLinkReplyDelay(slot, 'handover', f.replyDelayMs ?? 0);
      child.kill(handover ? 'SIGTERM' : 'SIGKILL');
      done();
      track(
        (async () => {
          // a handover: the process closes and exits by itself (bounded by its handleSignals)
          for (let i = 0; i < 150 && slot.child === child; i++) await sleep(100);
          if (slot.child === child) child.kill('SIGKILL');
          setLinkReplyDelay(slot, 'handover', 0);
          await sleep(f.durationMs);
          if (slot.state !== 'killed' && slot.state !== 'handover') return;
          slot.state = 'up';
          spawnWorker(slot);
          plog({
            ev: 'fault',
            kind: f.kind,
            w: slot.index,
            p: slot.instance,
            phase: 'end',
            detail: 'restarted',
          });
        })(),
      );
      return;
    }
    case 'pause': {
      const slot = target.state === 'up' && target.child ? target : pickHolder(target);
      if (!slot?.child || slot.state !== 'up') {
        skip('no live worker');
        return;
      }
      const child = slot.child;
      slot.state = 'paused';
      plog({
        ev: 'fault',
        kind: 'pause',
        w: slot.index,
        p: slot.instance,
        phase: 'start',
        detail: `${f.durationMs} ms, holding ${slot.running.size}`,
      });
      child.kill('SIGSTOP');
      done();
      track(
        (async () => {
          await sleep(f.durationMs);
          if (slot.state === 'paused') slot.state = 'up';
          child.kill('SIGCONT');
          plog({ ev: 'fault', kind: 'pause', w: slot.index, p: slot.instance, phase: 'end' });
        })(),
      );
      return;
    }
    case 'abort': {
      // the feed of a worker whose handler runs gives up on that run() and calls it again
      const slot = pickHolder(target);
      if (!slot?.child?.connected || slot.running.size === 0) {
        skip('no running handler');
        return;
      }
      plog({
        ev: 'fault',
        kind: 'abort',
        w: slot.index,
        p: slot.instance,
        phase: 'start',
        detail: `run() called again within ${f.durationMs} ms`,
      });
      slot.child.send({ type: 'abort', afterMs: f.durationMs } satisfies ToWorker);
      slot.keepUntil = stamp() + f.durationMs + noticeBoundMs() + 5_000;
      done();
      const instance = slot.instance;
      track(
        (async () => {
          await sleep(f.durationMs);
          plog({ ev: 'fault', kind: 'abort', w: slot.index, p: instance, phase: 'end' });
        })(),
      );
      return;
    }
    case 'redis-restart':
    case 'node-loss': {
      if (nodeFaultBusy) {
        skip('another node fault is in progress');
        return;
      }
      nodeFaultBusy = true;
      const nodeIndex = f.node ?? 0;
      const node = coordNodes[nodeIndex];
      if (!node) return;
      done();
      const go = async () => {
        const crash = f.kind === 'node-loss' || f.crash;
        plog({
          ev: 'fault',
          kind: f.kind,
          node: nodeIndex,
          phase: 'start',
          detail: `${crash ? 'SIGKILL' : 'SIGTERM'}${coordNodes.length > 1 ? ` node ${nodeIndex}` : ''}`,
        });
        try {
          if (crash) await node.kill();
          // node-loss: the node stays away a while (the others must keep a quorum)
          if (f.kind === 'node-loss') await sleep(f.durationMs);
          await node.restart();
        } finally {
          nodeFaultBusy = false;
          plog({ ev: 'fault', kind: f.kind, node: nodeIndex, phase: 'end' });
        }
      };
      if (f.kind === 'redis-restart') {
        track(go());
        return;
      }
      // node-loss: right after the next settle a worker reports (or in 2 s at the latest)
      track(
        new Promise<void>((resolve) => {
          const fire = () => {
            clearTimeout(timer);
            onSettle = undefined;
            void go().finally(resolve);
          };
          const timer = setTimeout(fire, 2_000);
          onSettle = fire;
        }),
      );
      return;
    }
    case 'slow-minority': {
      if (nodeFaultBusy) {
        skip('another node fault is in progress');
        return;
      }
      nodeFaultBusy = true;
      const nodeIndex = f.node ?? 0;
      plog({
        ev: 'fault',
        kind: 'slow-minority',
        node: nodeIndex,
        phase: 'start',
        detail: `node ${nodeIndex} answers ${f.replyDelayMs} ms late for ${f.durationMs} ms`,
      });
      for (const slot of slots)
        setReplyDelay(slot, nodeIndex, 'slow-minority', f.replyDelayMs ?? 0);
      done();
      track(
        (async () => {
          await sleep(f.durationMs);
          for (const slot of slots) setReplyDelay(slot, nodeIndex, 'slow-minority', 0);
          // the replies held back are still on their way
          await sleep(f.replyDelayMs ?? 0);
          nodeFaultBusy = false;
          plog({ ev: 'fault', kind: 'slow-minority', node: nodeIndex, phase: 'end' });
        })(),
      );
      return;
    }
    case 'timeout': {
      if (target.linkFault || armedTimeout) {
        skip('the link is already faulted');
        return;
      }
      target.linkFault = true;
      armedTimeout = { f, slot: target, armedAt: stamp() };
      return;
    }
    case 'cut':
    case 'partition':
    case 'delay':
    case 'cut-node': {
      if (target.linkFault) {
        skip('the link is already faulted');
        return;
      }
      target.linkFault = true;
      const one = f.kind === 'cut-node' ? (f.node ?? 0) : undefined;
      const links = one === undefined ? target.proxies : target.proxies.slice(one, one + 1);
      const detail =
        f.kind === 'delay'
          ? `${f.delayMs} ms one-way for ${f.durationMs} ms`
          : `${f.durationMs} ms${one === undefined ? '' : ` from node ${one}`}`;
      plog({
        ev: 'fault',
        kind: f.kind,
        w: target.index,
        p: target.instance,
        ...(one === undefined ? {} : { node: one }),
        phase: 'start',
        detail,
      });
      for (const proxy of links) {
        if (f.kind === 'cut' || f.kind === 'cut-node') proxy.cut();
        else if (f.kind === 'partition') proxy.blackhole({ hold: true });
        else proxy.setDelay(f.delayMs ?? 100);
      }
      done();
      track(
        (async () => {
          await sleep(f.durationMs);
          for (const proxy of links) {
            if (f.kind === 'delay') proxy.setDelay(0);
            else proxy.heal();
          }
          target.linkFault = false;
          plog({
            ev: 'fault',
            kind: f.kind,
            w: target.index,
            p: target.instance,
            ...(one === undefined ? {} : { node: one }),
            phase: 'end',
          });
        })(),
      );
      return;
    }
  }
}

/**
 * An armed `timeout` fault goes off when tasks are released to its pair, preferably one whose
 * handler will overrun its deadline (or after 3 s): the slot's replies are held back past
 * connectTimeoutMs for a short window, and the slot gets the tasks a moment before its peer,
 * so that its claims win and their replies come too late. (A grant whose reply was lost must
 * still end its handler by the deadline Redis applies.)
 * Returns the slot whose peer must get its share of this release a round later.
 */
function fireTimeout(batch: TaskSpec[][]): Slot | undefined {
  const armed = armedTimeout;
  if (!armed) return undefined;
  const { f, slot } = armed;
  const share = batch[slot.index] ?? [];
  const waited = stamp() - armed.armedAt;
  const hasTasks = share.length > 0;
  const wanted = share.some((t) => t.overrunMs !== undefined);
  if (!(wanted || (hasTasks && waited >= 3_000) || waited >= 6_000)) return undefined;
  armedTimeout = undefined;
  const late = f.replyDelayMs ?? workerTiming.connectTimeoutMs * 2;
  plog({
    ev: 'fault',
    kind: 'timeout',
    w: slot.index,
    p: slot.instance,
    phase: 'start',
    detail: `replies ${late} ms late for ${f.durationMs} ms`,
  });
  setLinkReplyDelay(slot, 'timeout', late);
  faultsDone.timeout = (faultsDone.timeout ?? 0) + 1;
  track(
    (async () => {
      await sleep(f.durationMs);
      setLinkReplyDelay(slot, 'timeout', 0);
      // the replies held back are still on their way
      await sleep(late);
      slot.linkFault = false;
      plog({ ev: 'fault', kind: 'timeout', w: slot.index, p: slot.instance, phase: 'end' });
    })(),
  );
  return hasTasks ? slot : undefined;
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

async function dump(): Promise<void> {
  // the sink: its journal (every attempt, in applied order) and each task's fenced value
  const sink = new Redis(sinkServer.url);
  const journal = await sink.lrange(SINK_JOURNAL, 0, -1);
  const values: Record<string, { token: number; value: string } | null> = {};
  for (const spec of specs) values[spec.id] = await fencedRead(sink, sinkKey(spec.pair, spec));
  sink.disconnect();
  writeFileSync(
    path.join(outDir, 'sink.json'),
    JSON.stringify({ journal: journal.map((j) => JSON.parse(j)), values }),
  );

  // the final task records, as Redis holds them
  const records: Record<string, unknown> = {};
  for (let pair = 0; pair < PAIRS; pair++) {
    const inspector = new PairedWorker({
      ...(coordNodes.length > 1
        ? { nodes: coordNodes.map((n) => n.url) }
        : { redis: coordNodes[0]?.url }),
      namespace: namespaceOf(pair),
      name: 'inspector',
    });
    for (const spec of specs) {
      if (spec.pair !== pair) continue;
      try {
        records[spec.id] = await inspector.inspect(
          spec.id,
          spec.hash === undefined ? {} : { hash: { key: spec.hash } },
        );
      } catch (err) {
        records[spec.id] = { error: String(err) };
      }
    }
    await inspector.close();
  }
  writeFileSync(path.join(outDir, 'records.json'), JSON.stringify(records));
}

async function main(): Promise<void> {
  plog({
    ev: 'run',
    seed,
    tasks: taskCount,
    maxSeconds,
    rate,
    topology,
    argv: process.argv.slice(2),
  });
  say(
    `seed ${seed}, ${taskCount} tasks, ${rate}/s, faults every ~${faultGapMs} ms, logs in ${outDir}`,
  );
  // AOF with fsync on every write: a restart (even a SIGKILL) keeps every record and token.
  // --persistence none shows what a restart that loses the data does.
  const redisArgs = persistence === 'aof' ? ['--appendonly', 'yes', '--appendfsync', 'always'] : [];
  for (let i = 0; i < nodeCount; i++) coordNodes.push(await RedisServer.start({ args: redisArgs }));
  sinkServer = await RedisServer.start();
  for (let i = 0; i < PAIRS * SIDES; i++) {
    const proxies: TcpProxy[] = [];
    for (const node of coordNodes) proxies.push(await TcpProxy.start({ targetPort: node.port }));
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
  for (let i = 0; i < 600 && !slots.every((s) => s.ready); i++) await sleep(100);
  if (!slots.every((s) => s.ready)) throw new Error('the workers did not start within 60 s');
  say('workers ready');

  const horizonMs = maxSeconds * 1_000;
  const faults = planFaults(seed, horizonMs, faultGapMs, kinds, nodeCount);
  writeFileSync(path.join(outDir, 'plan.json'), JSON.stringify({ seed, tasks: specs, faults }));
  const start = stamp();
  let released = 0;
  let nextFault = 0;
  const windowPerPair = 400;
  let lastReport = start;
  let endReason = 'all tasks released and settled';
  /** Shares of a release held back one round (the peer of a `timeout` fault's slot). */
  let deferred: [Slot, TaskSpec[]][] = [];
  const deliverDeferred = () => {
    for (const [slot, tasks] of deferred) deliver(slot, tasks);
    deferred = [];
  };

  // release tasks at `rate`, inject faults on schedule, until every task is out or time is up
  for (;;) {
    const elapsed = stamp() - start;
    if (elapsed >= horizonMs) {
      endReason = `--max-seconds ${maxSeconds} reached`;
      break;
    }
    while (nextFault < faults.length && (faults[nextFault]?.atMs ?? Infinity) <= elapsed) {
      const f = faults[nextFault++];
      if (f) inject(f);
    }
    deliverDeferred();
    const due = Math.min(taskCount, Math.floor((elapsed / 1000) * rate));
    const batch: TaskSpec[][] = slots.map(() => []);
    while (released < due) {
      const spec = specs[released];
      if (!spec) break;
      const outstanding = released - settledAnywhere.size;
      if (outstanding >= windowPerPair * PAIRS) break;
      released++;
      for (let side = 0; side < SIDES; side++) {
        const slot = slots[spec.pair * SIDES + side];
        if (!slot) continue;
        slot.pending.set(spec.id, spec);
        batch[slot.index]?.push(spec);
      }
    }
    const first = fireTimeout(batch);
    for (const slot of slots) {
      const share = batch[slot.index] ?? [];
      if (first && slot.pair === first.pair && slot !== first) deferred.push([slot, share]);
      else deliver(slot, share);
    }
    if (released >= taskCount) {
      await sleep(20);
      deliverDeferred();
      break;
    }
    if (stamp() - lastReport > 10_000) {
      lastReport = stamp();
      say(
        `released ${released}/${taskCount}, settled ${settledAnywhere.size}, faults ${JSON.stringify(faultsDone)}`,
      );
    }
    await sleep(20);
  }
  deliverDeferred();
  if (armedTimeout) {
    armedTimeout.slot.linkFault = false;
    faultsSkipped.timeout = (faultsSkipped.timeout ?? 0) + 1;
    armedTimeout = undefined;
  }
  plog({ ev: 'released', count: released });
  say(`released ${released} tasks; letting the remaining faults run their course`);

  // faults already scheduled before the horizon still end (heal, restart); none start now
  await Promise.allSettled([...inFlight]);
  for (const slot of slots) {
    slot.proxies.forEach((proxy, n) => {
      proxy.setDelay(0);
      for (const source of [...(slot.replyDelays[n]?.keys() ?? [])])
        setReplyDelay(slot, n, source, 0);
      proxy.heal();
    });
  }

  const drainUntil = stamp() + drainSeconds * 1_000;
  while (stamp() < drainUntil) {
    if (slots.every((s) => s.pending.size === 0 && s.state === 'up')) break;
    await sleep(100);
  }
  const left = slots.reduce((n, s) => n + s.pending.size, 0);
  if (left > 0) {
    endReason += `; drain timed out with ${left} task deliveries unanswered`;
    say(`drain timed out: ${left} deliveries without an outcome`);
  }
  plog({ ev: 'end', reason: endReason, released });

  // stop the workers gracefully (handlers finish, sessions close)
  for (const slot of slots) {
    slot.state = 'stopping';
    if (slot.child?.connected) slot.child.send({ type: 'stop' } satisfies ToWorker);
  }
  for (let i = 0; i < 150 && slots.some((s) => s.child); i++) await sleep(100);
  for (const slot of slots) slot.child?.kill('SIGKILL');

  await dump();
  const summary = {
    seed,
    topology:
      topology === 'quorum'
        ? `quorum of ${nodeCount} independent masters, persistence ${persistence}`
        : `single Redis, persistence ${persistence}`,
    nodes: nodeCount,
    runBoundMs,
    noticeBoundMs: noticeBoundMs(),
    tasksPlanned: taskCount,
    released,
    faults: faultsDone,
    faultsSkipped,
    unexpectedExits,
    endReason,
    durationSec: Math.round((stamp() - t0) / 100) / 10,
    command: `npm run chaos -- --seed ${seed} --tasks ${taskCount} --max-seconds ${maxSeconds} --rate ${rate} --fault-gap-ms ${faultGapMs}${args.faults ? ` --faults ${args.faults}` : ''}${topology === 'quorum' ? ' --topology quorum' : ''}${persistence === 'none' ? ' --persistence none' : ''}`,
  };
  writeFileSync(path.join(outDir, 'summary.json'), JSON.stringify(summary));
  const report = check(outDir);
  process.stdout.write(`${formatReport(report)}\n`);
  clearInterval(lagTimer);
  parentLogOpen = false;
  closeSync(parentFd);
  await cleanup();
  if (report.ok && !args.keep && args.out === undefined) {
    rmSync(outDir, { recursive: true, force: true });
    process.stdout.write('run directory removed (every invariant holds; pass --keep to keep it)\n');
  } else process.stdout.write(`run directory: ${outDir}\n`);
  process.exit(report.ok ? 0 : 1);
}

async function cleanup(): Promise<void> {
  for (const slot of slots) {
    slot.child?.kill('SIGKILL');
    for (const proxy of slot.proxies) await proxy.close();
  }
  for (const node of coordNodes) await node.stop();
  await sinkServer?.stop();
}

process.on('SIGINT', () => {
  for (const slot of slots) slot.child?.kill('SIGKILL');
  process.exit(130);
});

main().catch(async (err: unknown) => {
  console.error('chaos: the run failed:', err);
  await cleanup().catch(() => {});
  process.exit(2);
});
