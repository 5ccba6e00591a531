import { type Command, Option } from 'commander';
import {
  detail,
  type GlobalOptions,
  type Io,
  iso,
  parsePositiveInt,
  printable,
  table,
  taskJson,
  withConnection,
} from './common.js';
import { type ListedTask, records } from './read.js';

export { records } from './read.js';

export const states = ['running', 'done', 'failed', 'released'] as const;
export type State = (typeof states)[number];

export interface ListOptions {
  state?: State;
  limit: number;
  json?: boolean;
  hash?: string;
  count: number;
}

export async function listCommand(opts: ListOptions, g: GlobalOptions, io: Io): Promise<void> {
  await withConnection(
    g,
    async (conn) => {
      const found: ListedTask[] = [];
      let more = false;
      for await (const info of records(conn, opts, io.err)) {
        if (opts.state !== undefined && info.state !== opts.state) continue;
        if (found.length >= opts.limit) {
          more = true;
          break;
        }
        found.push(info);
      }
      found.sort((a, b) => (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0));
      if (opts.json) {
        io.out(JSON.stringify(found.map((i) => taskJson(i, opts.hash))));
        return;
      }
      if (found.length === 0) {
        io.out(
          `no ${opts.state ?? ''}${opts.state ? ' ' : ''}tasks in namespace ${printable(g.namespace)}`,
        );
        return;
      }
      // quorum mode: how many nodes hold the record the majority holds
      const agree = conn.topology.kind === 'quorum' ? ['NODES'] : [];
      const rows = found.map((i) => [
        i.taskId,
        i.state,
        String(i.token),
        String(i.attempt),
        i.worker,
        iso(i.updatedAt),
        ...(i.quorum ? [`${i.quorum.agree}/${i.quorum.of}`] : []),
        detail(i),
      ]);
      for (const line of table(
        ['TASK', 'STATE', 'TOKEN', 'ATTEMPT', 'WORKER', 'UPDATED', ...agree, 'DETAIL'],
        rows,
      )) {
        io.out(line);
      }
      io.out(
        more
          ? `(${found.length} shown; --limit ${opts.limit} reached, pass a higher --limit to see more)`
          : `(${found.length} task${found.length === 1 ? '' : 's'})`,
      );
    },
    io.err,
  );
}

export function registerList(program: Command, globals: () => GlobalOptions, io: Io): void {
  program
    .command('list')
    .description('list the task records of the namespace (paged with SCAN, never KEYS)')
    .addOption(new Option('--state <state>', 'only records in this state').choices(states))
    .option('--limit <n>', 'show at most n records', parsePositiveInt('--limit'), 100)
    .option(
      '--hash <key>',
      'list the fields of this hash (hash-field mode) instead of plain records',
    )
    .option(
      '--count <n>',
      'SCAN COUNT hint: keys examined per call',
      parsePositiveInt('--count'),
      500,
    )
    .option('--json', 'print a JSON array')
    .action((opts: ListOptions) => listCommand(opts, globals(), io));
}
