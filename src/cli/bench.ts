import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { CliError, ExitCode, type GlobalOptions, type Io } from './common.js';
import { packageRoot } from './root.js';

export interface BenchOptions {
  quick?: boolean;
}

/**
 * `pairlock bench`: the benchmark suite lives in bench/run.ts of the source repository
 * (it needs the dev dependencies it compares against). Run it when it is there.
 */
export async function benchCommand(
  opts: BenchOptions,
  io: Io,
  redisUrl?: string,
  root: string | undefined = packageRoot(),
): Promise<number> {
  const script = root === undefined ? undefined : join(root, 'bench', 'run.ts');
  if (root === undefined || script === undefined || !existsSync(script)) {
    throw new CliError(
      'pairlock: the benchmarks ship with the source repository (bench/run.ts), not with the installed package.\n' +
        'Clone the repository, run `npm ci`, then `npx pairlock bench` (or `npm run bench`) there.',
      ExitCode.Error,
    );
  }
  const args = ['--import', 'tsx', script, ...(opts.quick ? ['--quick'] : [])];
  io.err(`running ${['node', ...args.slice(0, 2), 'bench/run.ts', ...args.slice(3)].join(' ')}`);
  const env = { ...process.env };
  if (redisUrl !== undefined) env.REDIS_URL = redisUrl;
  const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit', env });
  const forward = (sig: NodeJS.Signals) => child.kill(sig);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code) => resolve(code ?? 1));
    });
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
}

/** The Redis URL given for the benchmarks, if any: they measure one Redis. */
function benchRedis(g: GlobalOptions): string | undefined {
  const { topology, explicit } = g.connection;
  if (!explicit) return undefined;
  if (topology.kind !== 'redis') {
    throw new CliError(
      `pairlock: bench measures one Redis: give --redis <url> (got ${topology.kind === 'quorum' ? '--nodes' : `--${topology.kind}`})`,
      ExitCode.Error,
    );
  }
  return topology.url;
}

export function registerBench(
  program: Command,
  globals: () => GlobalOptions,
  io: Io,
  setExit: (code: number) => void,
): void {
  program
    .command('bench')
    .description(
      'run the benchmark suite (source repository only): pairlock against the original algorithm, BullMQ and redlock',
    )
    .option('--quick', 'a short run (a few seconds per scenario)')
    .action(async (opts: BenchOptions) =>
      setExit(await benchCommand(opts, io, benchRedis(globals()))),
    );
}
