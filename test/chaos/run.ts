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
 *   --faults <list>        fault kinds, comma-separated (default all:
 *                          kill,pause,redis-restart,cut,delay,partition)
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
  derive,
  type FaultKind,
  type FaultPlan,
  type FromWorker,
  faultKinds,
  namespaceOf,
  PAIRS,
  type ParentLine,
  planFaults,
  planTasks,
  SIDES,
  SINK_JOURNAL,
  sinkKey,
  stamp,
  type TaskSpec,
  type ToWorker,
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
const kinds: FaultKind[] = (args.faults ?? faultKinds.join(','))
  .split(',')
  .filter((k) => k !== '')
  .map((k) => {
    if (!(faultKinds as readonly string[]).includes(k)) {
      console.error(`chaos: unknown fault kind '${k}' (known: ${faultKinds.join(', ')})`);
      process.exit(2);
    }
    return k as FaultKind;
  });
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
const persistence = args.persistence;
if (persistence !== 'aof' && persistence !== 'none') {
  console.error(`chaos: --persistence must be 'aof' or 'none', got '${persistence}'`);
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
  child: ChildProcess | undefined;
  instance: string;
  instances: number;
  ready: boolean;
  /** Tasks released to this slot that its current process has not reported an outcome for. */
  readonly pending: Map<string, TaskSpec>;
  /** Tasks whose handler runs now in this slot's process (holder detection). */
  readonly running: Set<string>;
  /** The process is down on purpose (kill) or frozen (pause). */
  state: 'up' | 'killed' | 'paused' | 'stopping';
  /** The proxy is faulted (cut, delay, partition). */
  linkFault: boolean;
}

const coordNodes: RedisServer[] = [];
let sinkServer: RedisServer;
const slots: Slot[] = [];
const specs = planTasks(seed, taskCount);
/** Tasks with at least one outcome on some side of their pair. */
const settledAnywhere = new Set<string>();
let unexpectedExits = 0;

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
      case 'closed':
        break;
    }
  });
  child.on('exit', (code, signal) => {
    plog({ ev: 'exit', w: slot.index, p: instance, code, signal });
    if (slot.instance !== instance) return;
    slot.child = undefined;
    slot.ready = false;
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
let redisRestarting = false;
const faultsDone: Record<string, number> = {};
const faultsSkipped: Record<string, number> = {};
const inFlight = new Set<Promise<void>>();

function track(p: Promise<void>): void {
  inFlight.add(p);
  void p.finally(() => inFlight.delete(p));
}

function pickHolder(preferred: Slot): Slot | undefined {
  const up = slots.filter((s) => s.state === 'up' && s.child && s.ready);
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
    case 'kill': {
      const slot = pickHolder(target);
      if (!slot?.child) {
        skip('no live worker');
        return;
      }
      const child = slot.child;
      slot.state = 'killed';
      plog({
        ev: 'fault',
        kind: 'kill',
        w: slot.index,
        p: slot.instance,
        phase: 'start',
        detail: `holding ${slot.running.size}`,
      });
      child.kill('SIGKILL');
      done();
      track(
        (async () => {
          await sleep(f.durationMs);
          if (slot.state !== 'killed') return;
          slot.state = 'up';
          spawnWorker(slot);
          plog({
            ev: 'fault',
            kind: 'kill',
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
    case 'redis-restart': {
      if (redisRestarting) {
        skip('a restart is in progress');
        return;
      }
      redisRestarting = true;
      // quorum: one node of three (a minority)
      const nodeIndex = Math.floor(faultRng() * coordNodes.length);
      const node = coordNodes[nodeIndex];
      if (!node) return;
      plog({
        ev: 'fault',
        kind: 'redis-restart',
        phase: 'start',
        detail: `${f.crash ? 'SIGKILL' : 'SIGTERM'}${coordNodes.length > 1 ? ` node ${nodeIndex}` : ''}`,
      });
      done();
      track(
        (async () => {
          try {
            if (f.crash) await node.kill();
            await node.restart();
          } finally {
            redisRestarting = false;
            plog({ ev: 'fault', kind: 'redis-restart', phase: 'end' });
          }
        })(),
      );
      return;
    }
    case 'cut':
    case 'partition':
    case 'delay': {
      if (target.linkFault) {
        skip('the link is already faulted');
        return;
      }
      target.linkFault = true;
      const links = target.proxies;
      const detail =
        f.kind === 'delay'
          ? `${f.delayMs} ms one-way for ${f.durationMs} ms`
          : `${f.durationMs} ms`;
      plog({
        ev: 'fault',
        kind: f.kind,
        w: target.index,
        p: target.instance,
        phase: 'start',
        detail,
      });
      for (const proxy of links) {
        if (f.kind === 'cut') proxy.cut();
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
          plog({ ev: 'fault', kind: f.kind, w: target.index, p: target.instance, phase: 'end' });
        })(),
      );
      return;
    }
  }
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
      child: undefined,
      instance: '',
      instances: 0,
      ready: false,
      pending: new Map(),
      running: new Set(),
      state: 'up',
      linkFault: false,
    });
  }
  for (const slot of slots) spawnWorker(slot);
  for (let i = 0; i < 600 && !slots.every((s) => s.ready); i++) await sleep(100);
  if (!slots.every((s) => s.ready)) throw new Error('the workers did not start within 60 s');
  say('workers ready');

  const horizonMs = maxSeconds * 1_000;
  const faults = planFaults(seed, horizonMs, faultGapMs, kinds);
  writeFileSync(path.join(outDir, 'plan.json'), JSON.stringify({ seed, tasks: specs, faults }));
  const start = stamp();
  let released = 0;
  let nextFault = 0;
  const windowPerPair = 400;
  let lastReport = start;
  let endReason = 'all tasks released and settled';

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
    for (const slot of slots) deliver(slot, batch[slot.index] ?? []);
    if (released >= taskCount) break;
    if (stamp() - lastReport > 10_000) {
      lastReport = stamp();
      say(
        `released ${released}/${taskCount}, settled ${settledAnywhere.size}, faults ${JSON.stringify(faultsDone)}`,
      );
    }
    await sleep(20);
  }
  plog({ ev: 'released', count: released });
  say(`released ${released} tasks; letting the remaining faults run their course`);

  // faults already scheduled before the horizon still end (heal, restart); none start now
  await Promise.allSettled([...inFlight]);
  for (const slot of slots) {
    for (const proxy of slot.proxies) {
      proxy.setDelay(0);
      proxy.heal();
    }
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
