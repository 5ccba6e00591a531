import type { Command } from 'commander';
import type { Io } from './common.js';
import { parsePositiveInt } from './common.js';

export interface DemoOptions {
  tasks?: number;
}

/**
 * `pairlock demo`: a pair of workers racing for tasks on a Redis of their own (or on
 * `--redis` / REDIS_URL when given), with a crash and a takeover along the way.
 */
export async function demoCommand(
  opts: DemoOptions,
  io: Io,
  redisUrl: string | undefined,
): Promise<void> {
  const { runDemo } = await import('../demo/index.js');
  await runDemo({
    ...(redisUrl === undefined ? {} : { redisUrl }),
    ...(opts.tasks === undefined ? {} : { tasks: opts.tasks }),
    out: io.out,
  });
}

export function registerDemo(
  program: Command,
  io: Io,
  explicitRedis: () => string | undefined,
): void {
  program
    .command('demo')
    .description(
      'watch a worker pair race, settle, crash and take over (starts its own redis-server unless --redis or REDIS_URL is given)',
    )
    .option('--tasks <n>', 'how many tasks the pair runs', parsePositiveInt('--tasks'))
    .action((opts: DemoOptions) => demoCommand(opts, io, explicitRedis()));
}
