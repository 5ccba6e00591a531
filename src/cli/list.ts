import { type Command, Option } from 'commander';
import { CorruptRecordError } from '../errors.js';
import type { TaskInfo } from '../worker.js';
import {
  type CliConnection,
  detail,
  type GlobalOptions,
  globEscape,
  type Io,
  iso,
  parsePositiveInt,
  scanHashFields,
  scanKeys,
  table,
  taskJson,
  withConnection,
} from './common.js';

export const states = ['running', 'done', 'failed', 'released'] as const;
export type State = (typeof states)[number];

export interface ListOptions {
  state?: State;
  limit: number;
  json?: boolean;
  hash?: string;
  count: number;
}

/**
 * Every task record of the namespace (or of one hash), page by page: SCAN / HSCAN for
 * the names, then the `inspect` script for each record, so a listing decodes records
 * exactly as the workers do.
 */
export async function* records(
  conn: CliConnection,
  opts: { hash?: string; count: number; pace?: () => Promise<void> },
  warn: (line: string) => void,
): AsyncGenerator<TaskInfo, void, void> {
  const { keys, client, inspector } = conn;
  const hash = opts.hash;
  const pages =
    hash === undefined
      ? scanKeys(client, `${globEscape(keys.base)}t:*`, opts.count)
      : scanHashFields(client, keys.task('-', hash).container, opts.count);
  const taskPrefix = `${keys.base}t:`;
  for await (const page of pages) {
    const ids = hash === undefined ? page.map((k) => k.slice(taskPrefix.length)) : page;
    const infos = await Promise.all(
      ids.map((id) =>
        inspector
          .inspect(id, hash === undefined ? {} : { hash: { key: hash } })
          .catch((err: unknown) => {
            // one unreadable record must not hide the others
            if (
              err instanceof CorruptRecordError ||
              (err as { code?: string }).code === 'ERR_INVALID_TASK_ID'
            ) {
              warn(`pairlock: skipping ${JSON.stringify(id)}: ${(err as Error).message}`);
              return null;
            }
            throw err;
          }),
      ),
    );
    for (const info of infos) if (info) yield info;
    // a long-running reader (the dashboard) spaces its pages out
    await opts.pace?.();
  }
}

export async function listCommand(opts: ListOptions, g: GlobalOptions, io: Io): Promise<void> {
  await withConnection(g, async (conn) => {
    const found: TaskInfo[] = [];
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
      io.out(`no ${opts.state ?? ''}${opts.state ? ' ' : ''}tasks in namespace ${g.namespace}`);
      return;
    }
    const rows = found.map((i) => [
      i.taskId,
      i.state,
      String(i.token),
      String(i.attempt),
      i.worker,
      iso(i.updatedAt),
      detail(i),
    ]);
    for (const line of table(
      ['TASK', 'STATE', 'TOKEN', 'ATTEMPT', 'WORKER', 'UPDATED', 'DETAIL'],
      rows,
    )) {
      io.out(line);
    }
    io.out(
      more
        ? `(${found.length} shown; --limit ${opts.limit} reached, pass a higher --limit to see more)`
        : `(${found.length} task${found.length === 1 ? '' : 's'})`,
    );
  });
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
