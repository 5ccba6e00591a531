/**
 * `npm run bench` — pairlock side by side with the original redis-paired-worker
 * algorithm, redlock and BullMQ, on Redis servers started here (never an existing one).
 *
 *   npm run bench                 the default run (a few minutes)
 *   npm run bench -- --quick      a smoke run, well under a minute
 *   npm run bench -- --only=latency,crash
 *
 * Prints one table per scenario, and writes bench/results/latest.json, latest.md and
 * latency.svg. Numbers are reported, never asserted.
 */

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Ctx } from './lib/context.js';
import { describeMachine, type Machine } from './lib/machine.js';
import { type BenchRedis, startRedis } from './lib/redis.js';
import { newResult, renderScenario, type ScenarioResult } from './lib/report.js';
import { renderSvg } from './lib/svg.js';
import { cluster } from './scenarios/cluster.js';
import {
  BULL_DEFAULTS,
  type BullCrash,
  bullBound,
  crash,
  startBullCrash,
} from './scenarios/crash.js';
import { handover } from './scenarios/handover.js';
import { idle } from './scenarios/idle.js';
import { latency } from './scenarios/latency.js';
import { quorum } from './scenarios/quorum.js';
import { scale } from './scenarios/scale.js';
import { stall } from './scenarios/stall.js';
import { standby } from './scenarios/standby.js';
import { throughput } from './scenarios/throughput.js';

export interface BenchOptions {
  /** A smoke run: small counts and short windows (well under a minute). */
  readonly quick?: boolean;
  /** Where the report goes, line by line. @default console.log */
  readonly out?: (s: string) => void;
  /** Run only these scenarios: throughput, latency, standby, crash, handover, scale, quorum, stall, cluster, idle. */
  readonly only?: readonly string[];
  /** Progress lines. @default stderr */
  readonly log?: (s: string) => void;
  /** Where the results files go. @default bench/results */
  readonly resultsDir?: string;
}

export interface BenchResults {
  readonly startedAt: string;
  readonly quick: boolean;
  readonly command: string;
  readonly machine: Machine;
  readonly scenarios: ScenarioResult[];
  durationMs: number;
}

export const scenarioNames = [
  'throughput',
  'latency',
  'standby',
  'crash',
  'handover',
  'scale',
  'quorum',
  'stall',
  'cluster',
  'idle',
] as const;

const scenarios: Record<(typeof scenarioNames)[number], (ctx: Ctx) => Promise<ScenarioResult>> = {
  throughput,
  latency,
  standby,
  crash,
  handover,
  scale,
  quorum,
  stall,
  cluster,
  idle,
};

const titles: Record<(typeof scenarioNames)[number], string> = {
  throughput: '1. Pair throughput',
  latency: '2. Claim latency',
  standby: '3. Standby outcome latency',
  crash: '4. Crash takeover',
  handover: '5. Graceful handover',
  scale: '6. Scale',
  quorum: '7. Quorum',
  stall: '8. Stalls nobody acted on',
  cluster: '9. Pair on a Redis Cluster',
  idle: '10. Idle cost as the namespace grows',
};

export async function runBench(opts: BenchOptions = {}): Promise<BenchResults> {
  const out = opts.out ?? ((s: string) => console.log(s));
  const log = opts.log ?? ((s: string) => process.stderr.write(`[bench] ${s}\n`));
  const quick = opts.quick ?? false;
  const only = opts.only?.length ? opts.only : scenarioNames;
  for (const name of only) {
    if (!(scenarioNames as readonly string[]).includes(name)) {
      throw new Error(
        `unknown scenario ${JSON.stringify(name)}; expected one of ${scenarioNames.join(', ')}`,
      );
    }
  }
  const t0 = performance.now();
  const redis = await startRedis();
  const results: BenchResults = {
    startedAt: new Date().toISOString(),
    quick,
    command: `npm run bench${quick ? ' -- --quick' : ''}${opts.only?.length ? ` ${quick ? '' : '-- '}--only=${only.join(',')}` : ''}`,
    machine: await describeMachine(redis.version),
    scenarios: [],
    durationMs: 0,
  };
  const m = results.machine;
  const header = [
    `# pairlock benchmark${quick ? ' (quick)' : ''}`,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memory} RAM, ${m.os}; load average at start ${m.loadAtStart}`,
    `Software: Node ${m.node}, Redis ${m.redis} (local process, loopback), BullMQ ${m.bullmq}, redlock ${m.redlock}`,
    `Command: ${results.command}`,
    '',
  ].join('\n');
  out(header);
  // BullMQ's stalled-job recovery under its defaults takes up to a minute and a half: it
  // runs in the background (a Redis of its own, idle workers) while the rest is measured
  let backgroundRedis: BenchRedis | undefined;
  let bullDefaultCrash: BullCrash | undefined;
  if (!quick && only.includes('crash')) {
    try {
      log('background: BullMQ crash round with default settings');
      backgroundRedis = await startRedis();
      bullDefaultCrash = await startBullCrash(
        backgroundRedis,
        20,
        BULL_DEFAULTS,
        bullBound(BULL_DEFAULTS) + 10_000,
      );
    } catch (err) {
      log(`background: BullMQ crash round could not start: ${(err as Error).message}`);
    }
  }
  const ctx: Ctx = {
    quick,
    redis,
    log,
    runId: randomBytes(3).toString('hex'),
    background: bullDefaultCrash ? { bullDefaultCrash } : {},
  };
  try {
    for (const name of only as (typeof scenarioNames)[number][]) {
      const started = performance.now();
      log(`scenario ${name}`);
      let r: ScenarioResult;
      try {
        r = await scenarios[name](ctx);
      } catch (err) {
        r = newResult(name, titles[name]);
        r.error = String((err as Error)?.stack ?? err);
      }
      r.durationMs = Math.round(performance.now() - started);
      results.scenarios.push(r);
      out(renderScenario(r));
    }
  } finally {
    await bullDefaultCrash?.result.catch(() => {});
    await backgroundRedis?.stop();
    await redis.stop();
  }
  results.durationMs = Math.round(performance.now() - t0);
  results.machine.loadAtEnd = Number(loadavg()[0]?.toFixed(2));
  const footer = `Total bench time: ${(results.durationMs / 1000).toFixed(1)} s; load average (1 min) at the end ${results.machine.loadAtEnd} on ${m.cores} cores.`;
  out(footer);
  const dir = opts.resultsDir ?? fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/latest.json`, `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(
    `${dir}/latest.md`,
    `${header}\n${results.scenarios.map(renderScenario).join('\n')}\n${footer}\n`,
  );
  writeFileSync(
    `${dir}/latency.svg`,
    renderSvg(
      results.scenarios.flatMap((s) => s.series),
      m,
    ),
  );
  formatResults([`${dir}/latest.json`, `${dir}/latest.md`]);
  return results;
}

/**
 * The results sit where the project's formatter looks (bench/**): write them in its
 * style, so that a lint after a bench run stays clean. Skipped when it is not installed.
 */
function formatResults(files: string[]): void {
  const bin = fileURLToPath(new URL('../node_modules/.bin/biome', import.meta.url));
  if (!existsSync(bin)) return;
  spawnSync(bin, ['format', '--write', ...files], { stdio: 'ignore', timeout: 60_000 });
}

function parseArgs(argv: readonly string[]): BenchOptions {
  let quick = false;
  let only: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--quick') quick = true;
    else if (a.startsWith('--only=')) only = a.slice('--only='.length).split(',').filter(Boolean);
    else if (a === '--only') only = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: npm run bench [-- --quick] [--only=throughput,latency,standby,crash,handover,scale,quorum,stall,cluster,idle]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return { quick, only };
}

const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (isMain) {
  const opts = parseArgs(process.argv.slice(2));
  // every loop is bounded; this is the last line of defence against a hang
  const guard = setTimeout(
    () => {
      console.error('bench: the run exceeded its time budget; stopping');
      process.exit(2);
    },
    opts.quick ? 180_000 : 900_000,
  );
  guard.unref();
  runBench(opts).then(
    (r) => {
      const failed = r.scenarios.filter((s) => s.error);
      if (failed.length) console.error(`bench: ${failed.map((s) => s.name).join(', ')} failed`);
      process.exit(failed.length ? 1 : 0);
    },
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
