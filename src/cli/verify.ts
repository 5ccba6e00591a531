import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import type { RedisOptions } from 'ioredis';
import type { CoordNode, Progress, VerifyResult } from '../verify/verify.js';
import {
  CliError,
  ExitCode,
  type GlobalOptions,
  type Io,
  parsePositiveInt,
  printable,
} from './common.js';
import { connectionHint, describeTopology, type NodeAddress } from './connection.js';

export interface VerifyCommandOptions {
  tasks: number;
  seconds: number;
  faults?: string;
  seed?: number;
  out?: string;
  json?: boolean;
}

/**
 * The nodes verify proxies to, from the global connection options: one Redis (`--redis`) or
 * quorum nodes (`--nodes`), TLS and the ACL user included. Every proxied connection is a
 * plain TCP stream (TLS passes through, still checked against the real host name), so a
 * client that is redirected to addresses of the server's choosing (Sentinel, Cluster)
 * cannot be kept behind the run's proxies, and a socket path cannot be proxied.
 */
export function verifyNodes(g: GlobalOptions): CoordNode[] {
  const t = g.connection.topology;
  switch (t.kind) {
    case 'redis':
      return [coordNode(t.node)];
    case 'quorum':
      return t.nodes.map(coordNode);
    case 'sentinel':
      throw new CliError(
        `pairlock verify: Sentinel redirects its clients to the current master, past the proxies verify puts each worker behind; give the master's address with --redis (${describeTopology(t)})`,
        ExitCode.Error,
      );
    case 'cluster':
      throw new CliError(
        `pairlock verify: a Cluster redirects its clients to other nodes (MOVED), past the proxies verify puts each worker behind; give the address of the node that holds the namespace with --redis (${describeTopology(t)})`,
        ExitCode.Error,
      );
  }
}

function coordNode(n: NodeAddress): CoordNode {
  const { host, port, path, tls, ...rest } = n.options;
  if (path !== undefined) {
    throw new CliError(
      `pairlock verify: ${n.label} is a socket; verify puts each worker behind a local TCP proxy: give a redis:// URL`,
      ExitCode.Error,
    );
  }
  const h = host ?? '127.0.0.1';
  const options: RedisOptions = { ...rest };
  if (tls) {
    // the workers get their options over IPC (JSON): the CA as PEM text
    const ca = tls.ca;
    const pem = (c: unknown) => (Buffer.isBuffer(c) ? c.toString('latin1') : c);
    options.tls = {
      ...tls,
      ...(ca === undefined ? {} : { ca: (Array.isArray(ca) ? ca.map(pem) : pem(ca)) as string }),
      // connected to 127.0.0.1, the certificate is still checked against the real host
      servername: tls.servername ?? h,
    };
  }
  return { label: n.label, host: h, port: port ?? 6379, options };
}

function progressLine(p: Progress): string {
  const faults = Object.entries(p.faults)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  return `verify: ${(p.elapsedMs / 1_000).toFixed(0)} s, ${p.phase === 'releasing' ? 'released' : 'draining,'} ${p.released}/${p.planned} tasks, ${p.settled} answered, faults: ${faults || 'none yet'}`;
}

/**
 * What verify tells before it starts: how long it takes, where it writes, and that the
 * handlers it runs are its own (some of them disobedient on purpose).
 */
export function verifyPreamble(p: {
  seconds: number;
  /** The longest the run waits for the last answers after the release window (ms). */
  drainMs: number;
  namespace: string;
  keyPrefix: string;
  where: string;
}): string[] {
  const least = p.seconds + 2;
  const most = least + Math.ceil(p.drainMs / 1_000);
  return [
    `verify: takes about ${least + 5} s: ${least} s of tasks and faults (--seconds ${p.seconds}), then the last answers, ${most} s at most`,
    `verify: writes only keys of namespace ${p.namespace} (prefix ${p.keyPrefix}) on ${p.where}, and deletes them at the end`,
    "verify: its 4 worker processes (two pairs) run verify's own test handlers, not yours; about half of the tasks get a handler that ignores its abort signal on purpose,",
    'verify: so that the fence is seen refusing late writes: the report\'s "handler ignored its abort signal" overlaps are those deliberately disobedient handlers',
  ];
}

/** `pairlock verify`: see src/verify/verify.ts and docs/cli.md. */
export async function verifyCommand(
  opts: VerifyCommandOptions,
  g: GlobalOptions,
  namespaceGiven: boolean,
  io: Io,
): Promise<number> {
  const { parseFaults, runVerify, VerifyError } = await import('../verify/verify.js');
  const { formatReport } = await import('../verify/report.js');
  const { runCallBoundMs } = await import('../verify/common.js');
  const stop = new AbortController();
  const onSignal = () => stop.abort(new Error('interrupted'));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let result: VerifyResult;
  try {
    const nodes = verifyNodes(g);
    // chosen here, so that it is said up front (a namespace of its own unless one is given)
    const namespace = namespaceGiven
      ? g.namespace
      : `pairlock-verify-${randomBytes(4).toString('hex')}`;
    const preamble = verifyPreamble({
      seconds: opts.seconds,
      // as runVerify waits: the bound of a run() call, and 5 s more
      drainMs: runCallBoundMs() + 5_000,
      namespace,
      keyPrefix: g.keyPrefix,
      where: describeTopology(g.connection.topology),
    });
    // said with the first message of the run: after the input is checked and a node
    // answered, so that a refused run does not announce a minute of work
    const upFront = () => {
      for (const line of preamble.splice(0)) io.err(printable(line));
    };
    result = await runVerify({
      nodes,
      namespace,
      keyPrefix: g.keyPrefix,
      tasks: opts.tasks,
      seconds: opts.seconds,
      ...(opts.faults === undefined ? {} : { faults: parseFaults(opts.faults, nodes.length) }),
      ...(opts.seed === undefined ? {} : { seed: opts.seed }),
      ...(opts.out === undefined ? {} : { out: opts.out }),
      timeoutMs: g.timeout,
      say: (msg) => {
        upFront();
        io.err(printable(`verify: ${msg}`));
      },
      progress: (p) => {
        upFront();
        io.err(printable(progressLine(p)));
      },
      signal: stop.signal,
    });
  } catch (err) {
    if (err instanceof VerifyError) {
      if (err.kind === 'unreachable') {
        throw new CliError(
          `${err.message}\n${connectionHint(g.connection.topology)}`,
          ExitCode.Unreachable,
        );
      }
      throw new CliError(err.message, ExitCode.Error);
    }
    if (stop.signal.aborted) {
      io.err('pairlock verify: interrupted; the workers are stopped and the keys deleted');
      return 130;
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const r = result;
  if (opts.json) {
    io.out(
      JSON.stringify({
        ok: r.report.ok,
        namespace: r.namespace,
        roundTripMs: Math.round(r.roundTripMs * 100) / 100,
        keysDeleted: r.keysDeleted,
        keysLeft: r.keysLeft,
        runDirectory: r.runDirectory ?? null,
        report: r.report,
      }),
    );
  } else {
    io.out(formatReport(r.report));
    io.out(
      `namespace ${r.namespace}: ${r.keysDeleted} keys written and deleted${r.keysLeft > 0 ? `, ${r.keysLeft} could not be deleted` : ''}`,
    );
    if (r.runDirectory) io.out(`run directory (logs, plan, dumps): ${r.runDirectory}`);
  }
  if (r.keysLeft > 0) io.err(`pairlock verify: ${r.keysLeft} keys of ${r.namespace} are left`);
  return r.report.ok && r.keysLeft === 0 ? ExitCode.Ok : ExitCode.Error;
}

export function registerVerify(
  program: Command,
  globals: () => GlobalOptions,
  io: Io,
  setExit: (code: number) => void,
): void {
  program
    .command('verify')
    .description(
      "check your own deployment: two worker pairs on this machine run tasks against your Redis under client-side faults (kills, pauses, cuts, delays, partitions, late replies, handovers), then the chaos run's invariants are checked; exits 1 when one fails",
    )
    .option('--tasks <n>', 'tasks to run', parsePositiveInt('--tasks'), 1_000)
    .option(
      '--seconds <s>',
      'how long tasks are released and faults injected (the whole run takes a little longer)',
      parsePositiveInt('--seconds'),
      50,
    )
    .option(
      '--faults <list>',
      'fault kinds, comma-separated (default: kill,pause,cut,delay,partition,abort,timeout,handover; with quorum nodes also cut-node,slow-minority)',
    )
    .option('--seed <n>', 'seed of the task plan and the fault schedule', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0)
        throw new CliError(
          `pairlock: --seed must be an integer >= 0, got ${JSON.stringify(v)}`,
          ExitCode.Error,
        );
      return n;
    })
    .option('--out <dir>', 'keep the logs, plan and dumps of the run in this directory')
    .option('--json', 'print the report as JSON (for CI)')
    .action(async (opts: VerifyCommandOptions) => {
      const namespaceGiven = program.getOptionValueSource('namespace') !== 'default';
      setExit(await verifyCommand(opts, globals(), namespaceGiven, io));
    });
}
