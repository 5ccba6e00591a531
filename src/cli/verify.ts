import type { Command } from 'commander';
import type { CoordNode, Progress, VerifyResult } from '../verify/verify.js';
import { CliError, ExitCode, type GlobalOptions, type Io, parsePositiveInt } from './common.js';

export interface VerifyCommandOptions {
  tasks: number;
  seconds: number;
  faults?: string;
  seed?: number;
  out?: string;
  json?: boolean;
}

/**
 * The nodes verify proxies to, from the global connection options: one Redis (`--redis`).
 * Every proxied connection is a plain TCP stream (TLS passes through), so a topology whose
 * client follows redirections to other addresses (Sentinel, Cluster) cannot be put behind
 * the run's proxies.
 */
export function verifyNodes(
  g: GlobalOptions,
  nodeFromUrl: (url: string) => CoordNode,
): CoordNode[] {
  return [nodeFromUrl(g.redis)];
}

function progressLine(p: Progress): string {
  const faults = Object.entries(p.faults)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  return `verify: ${(p.elapsedMs / 1_000).toFixed(0)} s, ${p.phase === 'releasing' ? 'released' : 'draining,'} ${p.released}/${p.planned} tasks, ${p.settled} answered, faults: ${faults || 'none yet'}`;
}

/** `pairlock verify`: see src/verify/verify.ts and docs/cli.md. */
export async function verifyCommand(
  opts: VerifyCommandOptions,
  g: GlobalOptions,
  namespaceGiven: boolean,
  io: Io,
): Promise<number> {
  const { nodeFromUrl, parseFaults, runVerify, VerifyError } = await import('../verify/verify.js');
  const { formatReport } = await import('../verify/report.js');
  const stop = new AbortController();
  const onSignal = () => stop.abort(new Error('interrupted'));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let result: VerifyResult;
  try {
    const nodes = verifyNodes(g, nodeFromUrl);
    result = await runVerify({
      nodes,
      ...(namespaceGiven ? { namespace: g.namespace } : {}),
      keyPrefix: g.keyPrefix,
      tasks: opts.tasks,
      seconds: opts.seconds,
      ...(opts.faults === undefined ? {} : { faults: parseFaults(opts.faults, nodes.length) }),
      ...(opts.seed === undefined ? {} : { seed: opts.seed }),
      ...(opts.out === undefined ? {} : { out: opts.out }),
      timeoutMs: g.timeout,
      say: (msg) => io.err(`verify: ${msg}`),
      progress: (p) => io.err(progressLine(p)),
      signal: stop.signal,
    });
  } catch (err) {
    if (err instanceof VerifyError) {
      throw new CliError(
        err.message,
        err.kind === 'unreachable' ? ExitCode.Unreachable : ExitCode.Error,
      );
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
