import type { Command } from 'commander';

/*
 * The help of each command: its own options and one or two examples. The global options
 * (where Redis is, the namespace, the timeout) are listed once, in `pairlock --help`;
 * a command's help points there instead of repeating them.
 */

/** Examples by command name: a command line, then what it does. */
export const examples: Record<string, [string, string][]> = {
  inspect: [
    ['pairlock --redis redis://db:6379 inspect order-1', 'one task, human-readable'],
    [
      'pairlock --namespace billing inspect invoice-7 --json | jq .state',
      'one task as JSON (a field of a hash: add --hash <key>)',
    ],
  ],
  history: [
    ['pairlock history order-1', 'the transitions of one task'],
    ['pairlock --namespace billing history --limit 50 --json', 'the latest of the namespace'],
  ],
  list: [
    ['pairlock list --state running', 'the running tasks of the default namespace'],
    ['pairlock --namespace billing list --limit 1000 --json > tasks.json', 'as a JSON array'],
  ],
  stats: [
    ['pairlock stats', 'counts by state, live workers and what they hold'],
    [
      'pairlock --nodes redis://a:6379,redis://b:6379,redis://c:6379 stats --json',
      'quorum mode: each node and the tasks they disagree on',
    ],
  ],
  watch: [
    ['pairlock --namespace billing watch', 'every claim, takeover and settle as it happens'],
    [
      'pairlock watch --json | jq -c \'select(.event == "took-over")\'',
      'takeovers only, as JSON lines',
    ],
  ],
  dashboard: [
    ['pairlock --namespace billing dashboard', 'a live page on http://127.0.0.1:<port>/'],
    [
      'PAIRLOCK_DASHBOARD_AUTH=ops:secret pairlock dashboard --host 0.0.0.0 --port 8080',
      'on every interface, behind basic authentication',
    ],
  ],
  demo: [
    ['pairlock demo', 'a pair racing on a redis-server of its own'],
    ['pairlock --redis redis://127.0.0.1:6379 demo --tasks 20', 'on your Redis'],
  ],
  bench: [['npx pairlock bench --quick', 'in a clone of the source repository, after npm ci']],
  run: [
    [
      'pairlock --redis redis://db:6379 --namespace billing run ./jobs.mjs --name billing',
      'two workers, billing-1 and billing-2, race for the tasks of ./jobs.mjs',
    ],
    ['pairlock run ./jobs.mjs --concurrency 4 --verbose', 'four handlers at once, every outcome'],
  ],
  verify: [
    ['pairlock --redis redis://db:6379 verify', 'about a minute of faults against your Redis'],
    [
      'pairlock --redis redis://db:6379 verify --seconds 20 --json > verify.json',
      'a shorter run, the report as JSON for CI',
    ],
  ],
};

/** The text after a command's options: its examples, and where the global options are. */
export function commandHelpText(name: string): string {
  const list = examples[name] ?? [];
  const lines = list.flatMap(([cmd, what]) => [`  # ${what}`, `  $ ${cmd}`]);
  return [
    ...(lines.length > 0 ? ['', list.length === 1 ? 'Example:' : 'Examples:', ...lines] : []),
    '',
    'Where Redis is and the namespace (--redis, --sentinel, --cluster, --nodes, --namespace,',
    '--key-prefix, --timeout, TLS and ACL options) go before the command: see `pairlock --help`.',
  ].join('\n');
}

/** Add the examples and the pointer to the global options to every command of `program`. */
export function addCommandHelp(program: Command): void {
  for (const cmd of program.commands) cmd.addHelpText('after', commandHelpText(cmd.name()));
  program.addHelpText(
    'after',
    [
      '',
      'Examples:',
      '  $ pairlock --redis redis://db:6379 --namespace billing list',
      '  $ pairlock inspect --help',
      '',
      'Every command, its output and exit codes: docs/cli.md (shipped in the package:',
      'node_modules/pairlock/docs/cli.md).',
    ].join('\n'),
  );
}
