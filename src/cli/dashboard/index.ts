import { type Command, Option } from 'commander';
import {
  CliConnection,
  CliError,
  ExitCode,
  type GlobalOptions,
  type Io,
  parsePositiveInt,
} from '../common.js';
import { type NamespaceFeed, subscribeNamespace, untilStopped } from '../watch.js';
import { Collector, type Health } from './collect.js';
import { plainLine, redisProblem } from './health.js';
import { readPast } from './history.js';
import { type Credentials, type DashboardServer, isLoopback, startServer } from './server.js';
import { DashboardState } from './state.js';

export interface DashboardOptions {
  port: number;
  host: string;
  auth?: Credentials;
  hash?: string;
  maxTasks: number;
  count: number;
}

export const DEFAULT_DASHBOARD_PORT = 7380;

export function parsePort(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n) || n > 65_535) {
    throw new CliError(
      `pairlock: --port must be a TCP port from 0 to 65535 (0: any free port), got ${JSON.stringify(value)}`,
      ExitCode.Error,
    );
  }
  return n;
}

export function parseAuth(value: string): Credentials {
  const colon = value.indexOf(':');
  if (colon < 1 || colon === value.length - 1) {
    throw new CliError(
      'pairlock: --auth must be <user>:<password>, both non-empty (or set PAIRLOCK_DASHBOARD_AUTH)',
      ExitCode.Error,
    );
  }
  return { user: value.slice(0, colon), password: value.slice(colon + 1) };
}

function listenError(err: NodeJS.ErrnoException, opts: DashboardOptions): CliError {
  const where = `${opts.host}:${opts.port}`;
  const hint =
    err.code === 'EADDRINUSE'
      ? `the port is in use; pass another --port (or --port 0 for any free port)`
      : err.code === 'EACCES'
        ? 'not allowed to listen there; pass a --port above 1023'
        : `pass an address of this machine with --host`;
  return new CliError(
    `pairlock: cannot listen on ${where} (${err.code ?? err.message}): ${hint}`,
    ExitCode.Error,
  );
}

/**
 * `pairlock dashboard`: serve a live page of the namespace until SIGINT/SIGTERM (or until
 * `stop` settles, for embedding). Writes nothing to Redis but the watch flag.
 */
export async function dashboardCommand(
  opts: DashboardOptions,
  g: GlobalOptions,
  io: Io,
  stop?: Promise<unknown>,
  onListening?: (url: string) => void,
): Promise<void> {
  const conn = await CliConnection.open(g, io.err);
  // listening from here on: a signal sent as soon as the address is printed is caught
  const stopping = untilStopped(stop);
  // subscribeNamespace keeps the clients reconnecting: the reads below come back with them
  const state = new DashboardState(opts.maxTasks);
  const collector = new Collector(conn, state, { hash: opts.hash, count: opts.count });
  const feed: Health = { ok: true, since: Date.now() };
  let sub: NamespaceFeed | undefined;
  let server: DashboardServer | undefined;
  try {
    sub = await subscribeNamespace(conn, {
      onEvent: (ev, at) => {
        state.onEvent(ev, at);
        for (const s of [ev.o, ev.by]) if (s) collector.sessionSeen(String(s));
        if (ev.e === 'claimed') collector.granted(String(ev.r));
      },
      status: (line, up) => {
        if (up !== feed.ok) Object.assign(feed, { ok: up, since: Date.now() });
        if (up) delete feed.error;
        else feed.error = plainLine(line);
        io.err(line);
      },
    });
    await collector.start();
    // what came before this dashboard: the history's latest transitions, on the clock the
    // first TTL reading estimated (collector.start)
    try {
      const past = await readPast(conn, collector.serverOffsetMs);
      state.seedHistory(past.items, past.from);
    } catch (err) {
      state.warn(`cannot read the task history: ${redisProblem(err)}`);
    }
    try {
      server = await startServer({
        host: opts.host,
        port: opts.port,
        auth: opts.auth,
        conn,
        state,
        collector,
        feed,
        hash: opts.hash,
        count: opts.count,
      });
    } catch (err) {
      const syscall = (err as NodeJS.ErrnoException).syscall;
      if (syscall === 'listen' || syscall === 'bind' || syscall === 'getaddrinfo')
        throw listenError(err as NodeJS.ErrnoException, opts);
      throw err;
    }
    if (!isLoopback(opts.host)) {
      io.err(
        opts.auth
          ? `pairlock: warning: the dashboard listens on ${opts.host} with basic authentication over plain HTTP: the password crosses the network in clear; put it behind a TLS proxy or keep --host 127.0.0.1`
          : `pairlock: warning: the dashboard listens on ${opts.host} WITHOUT authentication: anyone who can reach this port reads the namespace (task ids, notes, results, errors). Pass --auth <user:password> or keep --host 127.0.0.1`,
      );
    }
    io.out(server.url);
    io.err(`dashboard of namespace ${g.namespace} on ${sub.where}: ${server.url} (Ctrl-C to stop)`);
    onListening?.(server.url);
    await stopping.until;
  } finally {
    stopping.dispose();
    await server?.close();
    await collector.stop();
    sub?.close();
    await conn.close();
  }
}

export function registerDashboard(program: Command, globals: () => GlobalOptions, io: Io): void {
  program
    .command('dashboard')
    .description(
      'serve a live web page of the namespace: workers, running tasks by holder, takeovers, rates, task lookup',
    )
    .option(
      '--port <port>',
      'TCP port to listen on (0: any free port)',
      parsePort,
      DEFAULT_DASHBOARD_PORT,
    )
    .option(
      '--host <address>',
      'address to listen on; anything but loopback exposes the namespace, see --auth',
      '127.0.0.1',
    )
    .addOption(
      new Option('--auth <user:password>', 'require HTTP basic authentication')
        .env('PAIRLOCK_DASHBOARD_AUTH')
        .argParser(parseAuth),
    )
    .option(
      '--hash <key>',
      'show the fields of this hash (hash-field mode) instead of plain records',
    )
    .option(
      '--max-tasks <n>',
      'running records kept in detail (counts cover all of them)',
      parsePositiveInt('--max-tasks'),
      10_000,
    )
    .option(
      '--count <n>',
      'SCAN COUNT hint: keys examined per call',
      parsePositiveInt('--count'),
      500,
    )
    .action((opts: DashboardOptions) => dashboardCommand(opts, globals(), io));
}
