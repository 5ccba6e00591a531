/**
 * The profile behind docs/performance.md's "cost per task" section: a pair of worker
 * processes on a Redis of their own (both sides run() every task, trivial handler, 64 in
 * flight per side, as bench scenario 1), each side under `node --cpu-prof`; then CPU per
 * task (sides from process.cpuUsage(), Redis from INFO cpu) and where each side's time
 * went. The sides run the built package (dist/): `npm run build` first. Only the samples
 * of the measured window count (not start-up, connections or the warm-up).
 *
 *   npm run bench:profile                                      # 3 rounds of 20,000 tasks
 *   npm run bench:profile -- --tasks 60000 --rounds 1 --keep   # keep the .cpuprofile files
 *   npm run bench:profile -- --handler-ms 5 --no-cpu-prof      # where a lane's cycle goes
 *
 * With --handler-ms N every handler waits N ms on a timer (scenario 1's 5 ms table).
 * A second table shows where a lane's time went: from run() to the handler starting, in
 * the handler, from its return to run() resolving (the tasks a side ran), and the wait
 * of the tasks its peer ran. --no-cpu-prof runs the sides without the profiler, which
 * otherwise adds its own cost to every figure (the time breakdown is then left out).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseInfo, startRedis } from '../lib/redis.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const sideScript = fileURLToPath(new URL('./side.mjs', import.meta.url));
if (!existsSync(path.join(root, 'dist', 'index.js')))
  throw new Error('the profile runs the built package: run `npm run build` first');

function arg(name: string, fallback: number, least = 1): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(v) || v < least)
    throw new Error(`--${name} expects an integer of at least ${least}`);
  return v;
}
const tasks = arg('tasks', 20_000);
const rounds = arg('rounds', 3);
const handlerMs = arg('handler-ms', 0, 0);
const keep = process.argv.includes('--keep');
const profiled = !process.argv.includes('--no-cpu-prof');
if (tasks > 200_000 || rounds > 10 || handlerMs > 50)
  throw new Error('at most 200,000 tasks, 10 rounds and a 50 ms handler');
/** A side's bound: its warm-up and run, at the handler's time per task, twice over. */
const sideTimeoutMs = 120_000 + (2 * (tasks + 2_000) * handlerMs) / 64;

/** Where a side's lanes spent their time (ms, means over the measured run). */
interface Lane {
  /** Tasks this side ran. */
  won: number;
  toStartMs: number;
  handlerMs: number;
  toDoneMs: number;
  /** run() of a task the peer ran, from call to outcome. */
  lostWaitMs: number;
  /** Event-loop utilization over the measured run (0–1). */
  elu: number;
}

interface SideResult {
  name: string;
  lane: Lane;
  ms: number;
  userUs: number;
  systemUs: number;
  /** The measured window, in the profile's clock (µs). */
  from: number;
  to: number;
  pid: number;
}

function runSide(args: string[], profDir: string): Promise<SideResult> {
  const execArgv = profiled
    ? ['--cpu-prof', '--cpu-prof-interval', '250', '--cpu-prof-dir', profDir]
    : [];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...execArgv, sideScript, ...args], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), sideTimeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      try {
        const r = JSON.parse(out.trim().split('\n').pop() ?? '') as SideResult;
        resolve({ ...r, pid: child.pid ?? 0 });
      } catch {
        reject(new Error(`a profile side exited with ${code} and no result`));
      }
    });
  });
}

type Category = 'idle' | 'gc' | 'pairlock' | 'ioredis' | 'socket writes' | 'node' | 'driver';
const names: Record<Category, string> = {
  idle: 'idle (waiting for Redis or the peer)',
  gc: 'garbage collection',
  pairlock: "pairlock's own code",
  ioredis: 'ioredis and its parser',
  'socket writes': 'socket writes (the write system call included)',
  node: "Node's streams, timers and promises",
  driver: 'the profile driver',
};

function categoryOf(url: string, fn: string): Category {
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'gc';
  if (fn === 'writeUtf8String') return 'socket writes';
  if (/node_modules\/(ioredis|redis-parser|standard-as-callback|@ioredis)/.test(url))
    return 'ioredis';
  if (url.includes('/bench/profile/')) return 'driver';
  if (url.includes('/dist/')) return 'pairlock';
  return 'node';
}

interface Profile {
  nodes: { id: number; callFrame: { functionName: string; url: string } }[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Time by category, and pairlock's by function, within [from, to] (µs, the profile's clock). */
function breakdown(file: string, from: number, to: number) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const time = new Map<number, number>();
  let at = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    at += dt;
    if (at < from || at > to) continue;
    const id = p.samples[i] as number;
    time.set(id, (time.get(id) ?? 0) + dt);
  }
  const byCat = new Map<Category, number>();
  const byFn = new Map<string, number>();
  let total = 0;
  for (const node of p.nodes) {
    const t = time.get(node.id) ?? 0;
    total += t;
    const cat = categoryOf(node.callFrame.url, node.callFrame.functionName);
    byCat.set(cat, (byCat.get(cat) ?? 0) + t);
    if (cat === 'pairlock') {
      const f = node.callFrame.functionName || '(anonymous)';
      byFn.set(f, (byFn.get(f) ?? 0) + t);
    }
  }
  return { total, byCat, byFn };
}

const redis = await startRedis();
const pct = (v: number, of: number) => `${((100 * v) / of).toFixed(1)}%`;
const cpuSeconds = (info: Record<string, string>) =>
  Number(info.used_cpu_user) + Number(info.used_cpu_sys);
try {
  console.log(
    `Pair profile: ${tasks.toLocaleString('en-US')} tasks per round, both sides run() every task (${handlerMs > 0 ? `a handler that waits ${handlerMs} ms on a timer` : 'trivial handler'}), 64 in flight per side, ${rounds} round(s)${profiled ? '' : ', without the profiler'}\n`,
  );
  console.log('| round | tasks/s | worker CPU/task, both sides (user + system) | Redis CPU/task |');
  console.log('|---|---|---|---|');
  const profiles: { dir: string; sides: SideResult[] }[] = [];
  for (let r = 1; r <= rounds; r++) {
    await redis.flush();
    const cpu0 = cpuSeconds(parseInfo(await redis.admin.info('cpu')));
    const dir = profiled ? mkdtempSync(path.join(tmpdir(), 'pairlock-profile-')) : '';
    const startAt = Date.now() + 1_500;
    const prefix = `r${r}x${Date.now()}`;
    const sides = await Promise.all(
      ['A', 'B'].map((name) =>
        runSide(
          [redis.url, name, String(tasks), '64', String(startAt), prefix, String(handlerMs)],
          dir,
        ),
      ),
    );
    const redisS = cpuSeconds(parseInfo(await redis.admin.info('cpu'))) - cpu0;
    profiles.push({ dir, sides });
    const ms = Math.max(...sides.map((s) => s.ms));
    const user = sides.reduce((a, s) => a + s.userUs, 0);
    const system = sides.reduce((a, s) => a + s.systemUs, 0);
    console.log(
      `| ${r} | ${Math.round((tasks * 1000) / ms).toLocaleString('en-US')} | ${(user + system).toFixed(0)} µs (${user.toFixed(0)} + ${system.toFixed(0)}) | ${((redisS * 1e6) / (tasks + 2_000)).toFixed(0)} µs (warm-up included) |`,
    );
  }
  laneTable(profiles.flatMap((p) => p.sides));
  if (profiled) summary(profiles);
} finally {
  await redis.stop();
}

/** Where a lane's time went, per side of each round. */
function laneTable(sides: SideResult[]): void {
  const f = (v: number) => v.toFixed(2);
  console.log(
    `\n| side | tasks it ran | run() → handler | in the handler | handler → run() resolved | a peer's task: run() → resolved | lane cycle (64 ÷ tasks/s) | event loop busy |`,
  );
  console.log('|---|---|---|---|---|---|---|---|');
  for (const s of sides) {
    const l = s.lane;
    const cycle = (64 * s.ms) / tasks;
    console.log(
      `| ${s.name} | ${l.won.toLocaleString('en-US')} | ${f(l.toStartMs)} ms | ${f(l.handlerMs)} ms | ${f(l.toDoneMs)} ms | ${f(l.lostWaitMs)} ms | ${f(cycle)} ms | ${(100 * l.elu).toFixed(0)}% |`,
    );
  }
}

function summary(profiles: { dir: string; sides: SideResult[] }[]): void {
  const cats = new Map<Category, number>();
  const fns = new Map<string, number>();
  let total = 0;
  for (const { dir, sides } of profiles)
    for (const f of readdirSync(dir)) {
      // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: matched to its side by pid
      const side = sides.find((s) => String(s.pid) === f.split('.')[3]);
      if (!side) continue;
      const b = breakdown(path.join(dir, f), side.from, side.to);
      total += b.total;
      for (const [k, v] of b.byCat) cats.set(k, (cats.get(k) ?? 0) + v);
      for (const [k, v] of b.byFn) fns.set(k, (fns.get(k) ?? 0) + v);
    }
  const busy = total - (cats.get('idle') ?? 0);
  console.log(
    '\n| where a side spent the measured window (cpu profile, both sides) | of samples | of busy samples |',
  );
  console.log('|---|---|---|');
  for (const [k, v] of [...cats].sort((a, b) => b[1] - a[1]))
    console.log(`| ${names[k]} | ${pct(v, total)} | ${k === 'idle' ? '' : pct(v, busy)} |`);
  console.log(
    `\nLargest pairlock functions (self time, of busy samples): ${[...fns]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8)
      .map(([k, v]) => `${k} ${pct(v, busy)}`)
      .join(', ')}`,
  );
  const dirs = profiles.map((p) => p.dir);
  if (keep) console.log(`\nProfiles kept in: ${dirs.join(', ')}`);
  else for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
