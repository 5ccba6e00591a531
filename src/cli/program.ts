import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { PairlockError } from '../shared/errors.js';
import { registerBench } from './bench.js';
import {
  CliError,
  ExitCode,
  type GlobalOptions,
  type Io,
  parsePositiveInt,
  printableLines,
  stdio,
} from './common.js';
import { addConnectionOptions, connectionInput, parseConnection } from './connection.js';
import { registerDashboard } from './dashboard/index.js';
import { registerDemo } from './demo.js';
import { addCommandHelp } from './help.js';
import { registerHistory } from './history.js';
import { registerInspect } from './inspect.js';
import { registerList } from './list.js';
import { packageRoot } from './root.js';
import { registerRun } from './run.js';
import { registerRunWorker } from './run-worker.js';
import { registerStats } from './stats.js';
import { registerVerify } from './verify.js';
import { registerWatch } from './watch.js';

/** The package version, read from package.json beside the sources or the build. */
export function version(): string {
  const root = packageRoot();
  if (root === undefined) return '0.0.0';
  try {
    return (
      (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: string })
        .version ?? '0.0.0'
    );
  } catch {
    return '0.0.0';
  }
}

/** The `pairlock` command and its subcommands. `exitCode()` is set by commands that choose one. */
export function createProgram(io: Io = stdio): { program: Command; exitCode: () => number } {
  let code: number = ExitCode.Ok;
  const program = new Command('pairlock')
    .description(
      'pairlock: paired-worker lock coordinator on Redis; inspect and operate a namespace',
    )
    .version(version());
  addConnectionOptions(program)
    .option('--namespace <ns>', 'the namespace of tasks and workers', 'default')
    .option('--key-prefix <prefix>', 'prefix of every key', 'pairlock')
    .option(
      '--timeout <ms>',
      'bound on connecting and on each Redis call',
      parsePositiveInt('--timeout'),
      5_000,
    )
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, '')),
      writeErr: (s) => io.err(printableLines(s.replace(/\n$/, ''))),
    })
    .exitOverride();
  // read when a command runs: a connection option that fails validation ends it with exit 1
  const globals = (): GlobalOptions => {
    const o = program.opts<{ namespace: string; keyPrefix: string; timeout: number }>();
    return {
      connection: parseConnection(connectionInput(program)),
      namespace: o.namespace,
      keyPrefix: o.keyPrefix,
      timeout: o.timeout,
    };
  };
  const setExit = (c: number) => {
    code = c;
  };
  registerInspect(program, globals, io);
  registerHistory(program, globals, io);
  registerList(program, globals, io);
  registerStats(program, globals, io);
  registerWatch(program, globals, io);
  registerDashboard(program, globals, io);
  registerDemo(program, globals, io);
  registerBench(program, globals, io, setExit);
  registerRun(program, globals, io, setExit);
  registerRunWorker(program, globals, io);
  registerVerify(program, globals, io, setExit);
  // each command's examples; the global options are listed once, in `pairlock --help`
  addCommandHelp(program);
  return { program, exitCode: () => code };
}

/** Run the CLI with `argv` (as process.argv); resolves to the exit code. */
export async function main(
  argv: readonly string[] = process.argv,
  io: Io = stdio,
): Promise<number> {
  const { program, exitCode } = createProgram(io);
  try {
    await program.parseAsync([...argv]);
    return exitCode();
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors were already printed
      return err.exitCode === 0 ? ExitCode.Ok : ExitCode.Error;
    }
    // a message may echo a task id or a server's reply: control characters escaped
    if (err instanceof CliError) {
      io.err(printableLines(err.message));
      return err.exitCode;
    }
    if (err instanceof PairlockError) {
      io.err(`pairlock: ${printableLines(err.message)}`);
      return err.code === 'ERR_REDIS_UNAVAILABLE' ? ExitCode.Unreachable : ExitCode.Error;
    }
    io.err(`pairlock: ${printableLines((err as Error)?.stack ?? String(err))}`);
    return ExitCode.Error;
  }
}
