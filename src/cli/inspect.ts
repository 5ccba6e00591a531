import type { Command } from 'commander';
import {
  CliError,
  describeTask,
  ExitCode,
  type GlobalOptions,
  type Io,
  taskJson,
  withConnection,
} from './common.js';

export interface InspectOptions {
  hash?: string;
  json?: boolean;
}

/** `pairlock inspect <taskId>`: one task record, decoded by the same script the workers use. */
export async function inspectCommand(
  taskId: string,
  opts: InspectOptions,
  g: GlobalOptions,
  io: Io,
): Promise<void> {
  await withConnection(g, async (conn) => {
    const info = await conn.inspector.inspect(
      taskId,
      opts.hash === undefined ? {} : { hash: { key: opts.hash } },
    );
    if (!info) {
      const where = opts.hash === undefined ? '' : ` in hash ${JSON.stringify(opts.hash)}`;
      throw new CliError(
        `pairlock: no record of task ${JSON.stringify(taskId)}${where} in namespace ${JSON.stringify(g.namespace)} ` +
          '(never claimed, or its retention ran out)',
        ExitCode.UnknownTask,
      );
    }
    if (opts.json) io.out(JSON.stringify(taskJson(info, opts.hash)));
    else for (const line of describeTask(info, opts.hash)) io.out(line);
  });
}

export function registerInspect(program: Command, globals: () => GlobalOptions, io: Io): void {
  program
    .command('inspect')
    .description('show the record of one task: state, owner, token, lease, result or error')
    .argument('<taskId>', 'the task id given to run()')
    .option('--hash <key>', 'the task is a field of this hash (hash-field mode, hlock)')
    .option('--json', 'print the record as JSON')
    .action((taskId: string, opts: InspectOptions) => inspectCommand(taskId, opts, globals(), io));
}
