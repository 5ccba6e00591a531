import type { Command } from 'commander';
import { schedule } from '../feeds/schedule.js';
import { streamFeed } from '../feeds/stream.js';
import type { Logger } from '../shared/options.js';
import { handleSignals } from '../worker/runtime.js';
import { type Outcome, PairedWorker } from '../worker/worker.js';
import {
  CliError,
  ExitCode,
  type GlobalOptions,
  type Io,
  parsePositiveInt,
  printable,
} from './common.js';
import { workerConnection } from './connection.js';
import { loadRunModule, type RunTaskInput } from './run-module.js';

export interface RunWorkerOptions {
  name: string;
  concurrency?: number;
  verbose?: boolean;
  maxPending: number;
}

/** A pino-compatible logger writing one line per record to stderr (control characters escaped). */
export function lineLogger(io: Io, verbose = false): Logger {
  const write = (level: string) => (obj: object, msg?: string) => {
    const fields: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(obj)) fields[k] = v instanceof Error ? v.message : v;
    const extra = Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : '';
    io.err(printable(`${level}: ${msg ?? ''}${extra}`));
  };
  return {
    debug: verbose ? write('debug') : () => {},
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
  };
}

/**
 * One worker process of `pairlock run`: a PairedWorker fed by the module's task source,
 * closed with handover on SIGTERM/SIGINT or when the supervisor goes away.
 */
export async function runWorker(
  modulePath: string,
  opts: RunWorkerOptions,
  g: GlobalOptions,
  io: Io,
): Promise<void> {
  // a signal while the module loads: nothing is held yet, leave at once
  const early = () => process.exit(0);
  process.once('SIGTERM', early);
  process.once('SIGINT', early);
  const mod = await loadRunModule(modulePath);
  const topology = g.connection.topology;
  if (mod.stream && topology.kind === 'quorum') {
    throw new CliError(
      `pairlock: ${modulePath}: a \`stream\` source reads one Redis; in quorum mode (--nodes) there is no one Redis to read it from. Use \`tasks\` with streamFeed's reads of your own, or --redis, --sentinel or --cluster`,
      ExitCode.Error,
    );
  }
  const logger = lineLogger(io, opts.verbose);
  const connection = workerConnection(g.connection);
  const worker = new PairedWorker({
    ...mod.worker,
    ...connection.options,
    namespace: g.namespace,
    keyPrefix: g.keyPrefix,
    name: opts.name,
    ...(opts.concurrency === undefined ? {} : { concurrency: opts.concurrency }),
    logger,
  });
  const say = (line: string) => io.out(printable(line));

  // from here on a signal closes the worker with handover
  const stopSource = new AbortController();
  let stopFeed: () => Promise<void> = async () => {};
  let closing = false;
  const signals = handleSignals(worker, {
    logger,
    beforeClose: async () => {
      closing = true;
      say('closing with handover');
      stopSource.abort();
      await stopFeed();
    },
  });
  process.off('SIGTERM', early);
  process.off('SIGINT', early);
  // the supervisor went away (killed): leave as on SIGTERM
  const onDisconnect = () => process.kill(process.pid, 'SIGTERM');
  process.on('disconnect', onDisconnect);

  worker.on('took-over', (e) =>
    say(`took over ${e.taskId} from ${e.from} (${e.kind}, token ${e.token})`),
  );
  worker.on('peer-failed', (e) => say(`peer ${e.worker} failed; covering ${e.tasks} task(s)`));
  const report = (o: Outcome<unknown>) => {
    if (opts.verbose || o.state === 'failed') {
      say(
        `${o.state} ${o.taskId} role=${o.role} token=${o.token} attempts=${o.attempts} by ${o.worker}`,
      );
    }
  };

  try {
    await worker.start();
  } catch (err) {
    if (closing) {
      await signals.closed;
      return;
    }
    throw err;
  }
  if (closing) {
    await signals.closed;
    return;
  }
  say(`worker ${worker.id} started (namespace ${g.namespace})`);

  let finished: Promise<void>;
  if (mod.stream) {
    const feed = streamFeed(worker, {
      ...mod.stream,
      redis: 'redis' in connection.options ? connection.options.redis : '',
      handler: (entry, ctx) => mod.handler({ id: ctx.taskId, data: entry }, ctx),
      onOutcome: report,
      logger,
    });
    stopFeed = () => feed.stop({ drain: false });
    finished = feed.stopped;
  } else if (mod.schedule) {
    const cron = schedule(worker, {
      ...mod.schedule,
      handler: (tick, ctx) =>
        mod.handler({ id: tick.taskId, data: { name: tick.name, at: tick.at.toISOString() } }, ctx),
      onOutcome: report,
      logger,
    });
    stopFeed = () => cron.stop({ drain: false });
    finished = new Promise<void>((resolve) =>
      stopSource.signal.addEventListener('abort', () => resolve()),
    );
  } else {
    const tasks = mod.tasks?.({ worker, signal: stopSource.signal });
    finished = (async () => {
      if (!tasks) return;
      const inFlight = new Set<Promise<void>>();
      for await (const item of tasks as AsyncIterable<RunTaskInput>) {
        if (stopSource.signal.aborted) break;
        const task = typeof item === 'string' ? { id: item } : item;
        const p = worker
          .run(task.id, (ctx) => mod.handler(task, ctx))
          .then(report, (err: unknown) => {
            if (!stopSource.signal.aborted)
              logger.error({ err, taskId: task.id }, 'pairlock: task ended without an outcome');
          })
          .finally(() => inFlight.delete(p));
        inFlight.add(p);
        if (inFlight.size >= opts.maxPending) await Promise.race(inFlight);
      }
      await Promise.allSettled([...inFlight]);
    })();
  }

  await finished;
  if (closing) {
    await signals.closed;
    return;
  }
  // the task source ended: every outcome is known
  signals.dispose();
  process.off('disconnect', onDisconnect);
  await worker.close();
  await connection.close();
  say('all tasks have an outcome; exiting');
  if (process.connected) process.disconnect();
}

export function registerRunWorker(program: Command, globals: () => GlobalOptions, io: Io): void {
  program
    .command('run-worker', { hidden: true })
    .argument('<module>')
    .requiredOption('--name <name>')
    .option('--concurrency <n>', '', parsePositiveInt('--concurrency'))
    .option('--max-pending <n>', '', parsePositiveInt('--max-pending'), 1_000)
    .option('--verbose')
    .action((modulePath: string, opts: RunWorkerOptions) =>
      runWorker(modulePath, opts, globals(), io),
    );
}
