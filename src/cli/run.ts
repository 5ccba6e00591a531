import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, extname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { CliError, ExitCode, type GlobalOptions, type Io, parsePositiveInt } from './common.js';
import { CONNECTION_ENV } from './connection.js';

export interface RunOptions {
  name?: string;
  concurrency?: number;
  verbose?: boolean;
  maxRestarts: number;
  restartDelay: number;
  graceMs: number;
}

interface Slot {
  readonly name: string;
  child: ChildProcess | undefined;
  restarts: number;
  startedAt: number;
  timer: NodeJS.Timeout | undefined;
  /** Exited for good: finished its tasks, stopped, or out of restarts. */
  done: boolean;
  ok: boolean;
}

/** Worker names must match [A-Za-z0-9_.-]{1,64}. */
export function workerBaseName(name: string | undefined, modulePath: string): string {
  const raw = name ?? `${hostname()}-${basename(modulePath, extname(modulePath))}`;
  return raw.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 60) || 'pairlock';
}

const MAX_BACKOFF_MS = 30_000;
/** A child that ran this long before crashing starts its backoff afresh. */
const HEALTHY_MS = 60_000;

/**
 * `pairlock run <module>`: a redundant pair on one host. Two worker processes, each a
 * PairedWorker with its own name, race for the same tasks; a crashed one is restarted
 * with exponential backoff (its tasks are taken over by the other meanwhile). SIGTERM
 * and SIGINT are forwarded so that both close with handover; the command exits when
 * both have exited (0 when both ended cleanly).
 */
export async function runCommand(
  modulePath: string,
  opts: RunOptions,
  g: GlobalOptions,
  io: Io,
): Promise<number> {
  const abs = resolve(process.cwd(), modulePath);
  if (!existsSync(abs))
    throw new CliError(`pairlock: no such module: ${modulePath}`, ExitCode.Error);
  const entry = process.argv[1];
  if (entry === undefined)
    throw new CliError('pairlock: cannot find the CLI entry to start workers', ExitCode.Error);
  const base = workerBaseName(opts.name, modulePath);
  const slots: Slot[] = [1, 2].map((i) => ({
    name: `${base}-${i}`,
    child: undefined,
    restarts: 0,
    startedAt: 0,
    timer: undefined,
    done: false,
    ok: true,
  }));
  // the connection travels in the environment (never a password on a command line)
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const name of CONNECTION_ENV) delete childEnv[name];
  Object.assign(childEnv, g.connection.env);
  let stopping = false;
  let resolveAll!: () => void;
  const allDone = new Promise<void>((r) => {
    resolveAll = r;
  });
  const checkDone = () => {
    if (slots.every((s) => s.done)) resolveAll();
  };

  const pipe = (name: string, stream: NodeJS.ReadableStream | null, write: (l: string) => void) => {
    if (!stream) return;
    createInterface({ input: stream }).on('line', (line) => write(`[${name}] ${line}`));
  };

  const start = (slot: Slot) => {
    slot.timer = undefined;
    if (stopping) {
      slot.done = true;
      checkDone();
      return;
    }
    const args = [
      '--namespace',
      g.namespace,
      '--key-prefix',
      g.keyPrefix,
      'run-worker',
      abs,
      '--name',
      slot.name,
      ...(opts.concurrency === undefined ? [] : ['--concurrency', String(opts.concurrency)]),
      ...(opts.verbose ? ['--verbose'] : []),
    ];
    // a process group of its own: a terminal's Ctrl-C reaches the supervisor only, which
    // forwards one SIGTERM (a second signal would make the worker exit without handover)
    const child = fork(entry, args, {
      execArgv: process.execArgv,
      env: childEnv,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      detached: true,
    });
    slot.child = child;
    slot.startedAt = Date.now();
    pipe(slot.name, child.stdout, io.out);
    pipe(slot.name, child.stderr, io.err);
    child.on('error', (err) => io.err(`[${slot.name}] ${err.message}`));
    // 'close', not 'exit': the child's last output lines are through the pipes by then
    child.on('close', (code, signal) => {
      slot.child = undefined;
      const clean = code === 0;
      if (clean || stopping) {
        slot.done = true;
        slot.ok = clean || (stopping && signal === 'SIGTERM');
        if (!clean) io.err(`supervisor: ${slot.name} exited with ${signal ?? `code ${code}`}`);
        checkDone();
        return;
      }
      if (Date.now() - slot.startedAt >= HEALTHY_MS) slot.restarts = 0;
      if (slot.restarts >= opts.maxRestarts) {
        io.err(
          `supervisor: ${slot.name} exited with ${signal ?? `code ${code}`}; ${opts.maxRestarts} restarts used, giving up on it`,
        );
        slot.done = true;
        slot.ok = false;
        checkDone();
        return;
      }
      const delay = Math.min(opts.restartDelay * 2 ** slot.restarts, MAX_BACKOFF_MS);
      slot.restarts += 1;
      io.err(
        `supervisor: ${slot.name} exited with ${signal ?? `code ${code}`}; restarting in ${delay} ms`,
      );
      slot.timer = setTimeout(() => start(slot), delay);
    });
  };

  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      io.err(`supervisor: ${signal} again; killing the workers`);
      for (const s of slots) s.child?.kill('SIGKILL');
      return;
    }
    stopping = true;
    io.err(`supervisor: ${signal}; closing both workers with handover`);
    for (const s of slots) {
      if (s.timer) {
        clearTimeout(s.timer);
        s.timer = undefined;
        s.done = true;
      }
      s.child?.kill('SIGTERM');
    }
    checkDone();
    const grace = setTimeout(() => {
      for (const s of slots) {
        if (s.child) {
          io.err(`supervisor: ${s.name} did not exit within ${opts.graceMs} ms; killing it`);
          s.child.kill('SIGKILL');
        }
      }
    }, opts.graceMs);
    grace.unref();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  io.err(`supervisor: starting ${slots.map((s) => s.name).join(' and ')} for ${modulePath}`);
  for (const s of slots) start(s);
  try {
    await allDone;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
  return slots.every((s) => s.ok) ? ExitCode.Ok : ExitCode.Error;
}

export function registerRun(
  program: Command,
  globals: () => GlobalOptions,
  io: Io,
  setExit: (code: number) => void,
): void {
  program
    .command('run')
    .description(
      'run a handler module as a redundant pair: two supervised worker processes on this host',
    )
    .argument(
      '<module>',
      'a module exporting { handler, tasks | stream | schedule } (see docs/cli.md)',
    )
    .option(
      '--name <name>',
      'base name of the two workers (they are <name>-1 and <name>-2)',
      undefined,
    )
    .option('--concurrency <n>', 'handlers at once per worker', parsePositiveInt('--concurrency'))
    .option(
      '--max-restarts <n>',
      'restarts of a crashing worker before giving up on it',
      parsePositiveInt('--max-restarts'),
      10,
    )
    .option(
      '--restart-delay <ms>',
      'first restart delay; doubles on each crash',
      parsePositiveInt('--restart-delay'),
      500,
    )
    .option(
      '--grace-ms <ms>',
      'after SIGTERM, kill workers that have not exited by then',
      parsePositiveInt('--grace-ms'),
      30_000,
    )
    .option('--verbose', 'print every outcome')
    .action(async (modulePath: string, opts: RunOptions) =>
      setExit(await runCommand(modulePath, opts, globals(), io)),
    );
}
