import type { Command } from 'commander';
import {
  type CliConnection,
  CliError,
  describeTask,
  ExitCode,
  type GlobalOptions,
  type Io,
  iso,
  quoted,
  table,
  taskJson,
  withConnection,
} from './common.js';
import { type QuorumRead, readEverywhere } from './read.js';

export interface InspectOptions {
  hash?: string;
  json?: boolean;
}

function unknownTask(taskId: string, opts: InspectOptions, g: GlobalOptions, extra = ''): CliError {
  const where = opts.hash === undefined ? '' : ` in hash ${quoted(opts.hash)}`;
  return new CliError(
    `pairlock: no record of task ${quoted(taskId)}${where} in namespace ${quoted(g.namespace)}${extra} ` +
      '(never claimed, or its retention ran out)',
    ExitCode.UnknownTask,
  );
}

/** Each node's copy, one line each: the view to read when the nodes disagree. */
function nodeTable(r: QuorumRead): string[] {
  const rows = r.nodes.map((n) => {
    const rec = n.record;
    if (!rec) return [n.node, n.status, '', '', '', '', n.error ?? ''];
    return [
      n.node,
      rec.state,
      String(rec.token),
      String(rec.attempt),
      rec.worker,
      iso(rec.updatedAt),
      '',
    ];
  });
  return table(['NODE', 'STATE', 'TOKEN', 'ATTEMPT', 'WORKER', 'UPDATED', ''], rows);
}

/**
 * Quorum mode: the majority's record (what a worker acts on), how many nodes agree, and
 * each node's copy.
 */
async function inspectQuorum(
  conn: CliConnection,
  taskId: string,
  opts: InspectOptions,
  g: GlobalOptions,
  io: Io,
): Promise<void> {
  const r = await readEverywhere(conn, taskId, opts.hash);
  const of = conn.nodes.length;
  const split = r.agree < conn.majority;
  const found = r.nodes.filter((n) => n.status === 'record').length;
  if (opts.json) {
    if (!r.verdict && found === 0) throw unknownTask(taskId, opts, g);
    const nodes = r.nodes.map((n) => ({
      ...n,
      ...(n.record ? { record: taskJson(n.record, opts.hash) } : {}),
    }));
    io.out(
      JSON.stringify({
        ...(r.verdict ? taskJson(r.verdict, opts.hash) : { taskId, found: false }),
        quorum: { agree: r.agree, of, majority: conn.majority, split },
        nodes,
      }),
    );
    if (!r.verdict) throw unknownTask(taskId, opts, g, ` on a majority of the ${of} nodes`);
    return;
  }
  if (!r.verdict) {
    if (found === 0) throw unknownTask(taskId, opts, g);
    for (const line of nodeTable(r)) io.out(line);
    throw unknownTask(
      taskId,
      opts,
      g,
      ` on a majority of the ${of} nodes (${found} of them hold one, shown above)`,
    );
  }
  for (const line of describeTask(r.verdict, opts.hash)) io.out(line);
  io.out(
    `${'verdict:'.padEnd(12)} ${
      split
        ? `no majority: the nodes are split; this is the largest group's record (${r.agree} of ${of} nodes, ${conn.majority} needed)`
        : `the majority's record (${r.agree} of ${of} nodes agree, ${conn.majority} needed)`
    }`,
  );
  io.out('nodes:');
  for (const line of nodeTable(r)) io.out(`  ${line}`);
}

/** `pairlock inspect <taskId>`: one task record, decoded by the same script the workers use. */
export async function inspectCommand(
  taskId: string,
  opts: InspectOptions,
  g: GlobalOptions,
  io: Io,
): Promise<void> {
  await withConnection(
    g,
    async (conn) => {
      if (conn.topology.kind === 'quorum') {
        await inspectQuorum(conn, taskId, opts, g, io);
        return;
      }
      const info = await conn.inspector.inspect(
        taskId,
        opts.hash === undefined ? {} : { hash: { key: opts.hash } },
      );
      if (!info) throw unknownTask(taskId, opts, g);
      if (opts.json) io.out(JSON.stringify(taskJson(info, opts.hash)));
      else for (const line of describeTask(info, opts.hash)) io.out(line);
    },
    io.err,
  );
}

export function registerInspect(program: Command, globals: () => GlobalOptions, io: Io): void {
  program
    .command('inspect')
    .description(
      'show the record of one task: state, owner, token, lease, result or error (in quorum mode: each node and the majority)',
    )
    .argument('<taskId>', 'the task id given to run()')
    .option('--hash <key>', 'the task is a field of this hash (hash-field mode, hlock)')
    .option('--json', 'print the record as JSON')
    .action((taskId: string, opts: InspectOptions) => inspectCommand(taskId, opts, globals(), io));
}
