import type { Command } from 'commander';
import { type GlobalOptions, type Io, parsePositiveInt } from './common.js';
import { describeTopology } from './connection.js';

export interface DemoOptions {
  tasks?: number;
}

/**
 * `pairlock demo`: a pair of workers racing for tasks on a Redis of their own (or on the
 * topology the connection options name), with a crash and a takeover along the way.
 */
export async function demoCommand(opts: DemoOptions, io: Io, g: GlobalOptions): Promise<void> {
  const { runDemo } = await import('../demo/index.js');
  const { topology, explicit, env } = g.connection;
  await runDemo({
    ...(explicit ? { connection: { env, description: describeTopology(topology) } } : {}),
    ...(opts.tasks === undefined ? {} : { tasks: opts.tasks }),
    out: io.out,
  });
}

export function registerDemo(program: Command, globals: () => GlobalOptions, io: Io): void {
  program
    .command('demo')
    .description(
      'watch a worker pair race, settle, crash and take over (starts its own redis-server unless a connection option is given)',
    )
    .option('--tasks <n>', 'how many tasks the pair runs', parsePositiveInt('--tasks'))
    .action((opts: DemoOptions) => demoCommand(opts, io, globals()));
}
