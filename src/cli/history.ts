import type { Command } from 'commander';
import {
  attemptDurations,
  type HistoryTransition,
  mergeHistories,
  readHistory,
} from '../redis/history.js';
import {
  CliError,
  ExitCode,
  type GlobalOptions,
  type Io,
  parsePositiveInt,
  withConnection,
} from './common.js';
import { duration, iso, table } from './format.js';

export interface HistoryOptions {
  hash?: string;
  limit?: number;
  json?: boolean;
}

function json(t: HistoryTransition, ms: number | undefined): Record<string, unknown> {
  return {
    at: t.at,
    taskId: t.taskId,
    ...(t.hashKey === undefined ? {} : { hash: t.hashKey }),
    kind: t.kind,
    token: t.token,
    attempt: t.attempt,
    worker: t.worker,
    session: t.session,
    ...(ms === undefined ? {} : { durationMs: ms }),
    ...(t.detail === '' ? {} : { detail: t.detail }),
  };
}

/**
 * `pairlock history [taskId]`: the transitions the workers recorded (claims, takeovers,
 * outcomes, releases), from the namespace's capped history; for one task, every attempt
 * with its worker, token, duration and error.
 */
export async function historyCommand(
  taskId: string | undefined,
  opts: HistoryOptions,
  g: GlobalOptions,
  io: Io,
): Promise<void> {
  await withConnection(
    g,
    async (conn) => {
      const q = {
        ...(taskId === undefined ? {} : { taskId }),
        ...(opts.hash === undefined ? {} : { hashKey: opts.hash }),
        limit: opts.limit ?? (taskId === undefined ? 50 : 1_000),
      };
      // quorum mode: each node keeps its own history; a node that is down adds nothing
      const lists = await Promise.all(
        conn.nodes.map((n) =>
          readHistory(n.client, conn.keys, q).catch((err: unknown) => {
            if (conn.nodes.length === 1) throw err;
            return [];
          }),
        ),
      );
      const ts = mergeHistories(lists).slice(-q.limit);
      const ms = attemptDurations(ts);
      if (opts.json) {
        io.out(JSON.stringify(ts.map((t) => json(t, ms.get(t)))));
        return;
      }
      if (ts.length === 0) {
        const what =
          taskId === undefined
            ? 'no transitions'
            : `no transitions of task ${JSON.stringify(taskId)}`;
        throw new CliError(
          `pairlock: ${what} in the history of namespace ${JSON.stringify(g.namespace)} ` +
            '(never claimed, older than the history keeps, or written with historyLength 0)',
          ExitCode.UnknownTask,
        );
      }
      const rows = ts.map((t) => [
        iso(t.at),
        ...(taskId === undefined
          ? [t.hashKey === undefined ? t.taskId : `${t.hashKey}/${t.taskId}`]
          : []),
        t.kind,
        String(t.token),
        String(t.attempt),
        t.worker,
        ms.has(t) ? duration(ms.get(t)) : '',
        t.kind === 'done' || t.kind === 'failed' || t.detail === '' ? t.detail : `from ${t.detail}`,
      ]);
      const head = ['TIME', ...(taskId === undefined ? ['TASK'] : []), 'EVENT', 'TOKEN', 'ATTEMPT'];
      for (const line of table([...head, 'WORKER', 'DURATION', 'DETAIL'], rows)) io.out(line);
    },
    io.err,
  );
}

export function registerHistory(program: Command, globals: () => GlobalOptions, io: Io): void {
  program
    .command('history')
    .description(
      "the transitions the workers recorded (claims, takeovers, outcomes, releases): one task's attempts, or the namespace's latest",
    )
    .argument('[taskId]', 'one task (default: the whole namespace)')
    .option('--hash <key>', 'the task is a field of this hash (hash-field mode, hlock)')
    .option(
      '--limit <n>',
      'at most this many transitions, the latest (default 50, or 1000 for one task)',
      parsePositiveInt('--limit'),
    )
    .option('--json', 'print a JSON array of transitions')
    .action((taskId: string | undefined, opts: HistoryOptions) =>
      historyCommand(taskId, opts, globals(), io),
    );
}
