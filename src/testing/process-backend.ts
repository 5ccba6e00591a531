/**
 * The process backend: `redis-server` as a child process on 127.0.0.1. Launch (with a private
 * --dir and the harness defaults), graceful stop, SIGKILL, SIGSTOP/SIGCONT, and restart on the
 * same port. Children and their directories never outlive this process: an exit hook reaps them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Backend, RedisServerOptions } from './backend.js';
import { RedisServerStartError } from './errors.js';
import { HOST } from './ports.js';
import { probe } from './probe.js';

/** Lines of server output kept for error messages. */
const LOG_LINES = 50;
/** After SIGTERM, how long stop() waits before it falls back to SIGKILL. */
const STOP_GRACE_MS = 5_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// children must never outlive this process

const liveChildren = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;

function isAlive(child: ChildProcess | undefined): child is ChildProcess {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

function killAllSync(): void {
  for (const child of liveChildren) {
    try {
      if (isAlive(child)) child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
  for (const dir of liveDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
  liveDirs.clear();
}

/**
 * Installed once. 'exit' handlers must be synchronous, hence SIGKILL (a SIGTERM would let Redis
 * run its shutdown while we are already gone). On SIGINT/SIGTERM/SIGHUP: if the program has its
 * own handler, it decides (it may still want Redis for a graceful shutdown) and the 'exit' hook
 * reaps later; if not, the children are killed and the signal is re-raised so the default action
 * (terminate) still happens.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', killAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      if (process.listenerCount(sig) > 0) return;
      killAllSync();
      process.kill(process.pid, sig);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// the backend

/** The last LOG_LINES lines a child wrote to stdout/stderr. */
class LogRing {
  private readonly lines: string[] = [];
  private partial = '';

  push(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const line of parts) {
      this.lines.push(line);
      if (this.lines.length > LOG_LINES) this.lines.shift();
    }
  }

  tail(): string[] {
    return this.partial ? [...this.lines, this.partial] : [...this.lines];
  }

  text(): string {
    return this.tail().join('\n');
  }
}

export class ProcessBackend implements Backend {
  readonly kind = 'process';
  readonly host = HOST;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private log = new LogRing();
  private paused = false;
  private stopping: Promise<void> | undefined;
  private removed = false;

  private constructor(
    readonly port: number,
    private readonly binary: string,
    private readonly argv: string[],
    private readonly dir: string,
    private readonly startTimeoutMs: number,
  ) {}

  /** Spawns on `port`; rejects with RedisServerStartError (portInUse set on a bind race). */
  static async launch(
    binary: string,
    port: number,
    opts: RedisServerOptions,
    startTimeoutMs: number,
  ): Promise<ProcessBackend> {
    installExitHook();
    const dir = mkdtempSync(path.join(os.tmpdir(), `pairlock-redis-${port}-`));
    liveDirs.add(dir);
    const argv = [
      ...(opts.configFile ? [path.resolve(opts.configFile)] : []),
      '--port',
      String(port),
      '--bind',
      HOST,
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      // '' = log to stdout, which we read (and must keep draining, or Redis blocks on a full pipe)
      '--logfile',
      '',
      // SIGTERM exits at once: no RDB, no waiting up to shutdown-timeout (10 s) for lagging replicas
      '--shutdown-on-sigterm',
      'nosave',
      'now',
      // Redis 7 waits 5 s for more replicas before a diskless full sync; every replica attach
      // (startup, a restarted ex-master rejoining) would pay that
      '--repl-diskless-sync-delay',
      '0',
      // DEBUG SLEEP etc. from loopback clients, handy to simulate a stalled server
      '--enable-debug-command',
      'local',
      ...(opts.args ?? []),
    ];
    const backend = new ProcessBackend(port, binary, argv, dir, startTimeoutMs);
    try {
      await backend.spawnAndWait();
    } catch (err) {
      liveDirs.delete(dir);
      await rm(dir, { recursive: true, force: true }).catch(() => {});
      throw err;
    }
    return backend;
  }

  pid(): number | undefined {
    return isAlive(this.child) ? this.child.pid : undefined;
  }

  running(): boolean {
    return isAlive(this.child);
  }

  logTail(): string[] {
    return this.log.tail();
  }

  private spawnOnce(): ChildProcess {
    this.log = new LogRing();
    const child = spawn(this.binary, this.argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.paused = false;
    liveChildren.add(child);
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => this.log.push(d));
    child.stderr?.on('data', (d: string) => this.log.push(d));
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        liveChildren.delete(child);
        resolve();
      });
      // spawn failure (ENOENT, EACCES): 'exit' may never come
      child.once('error', (err) => {
        this.log.push(`spawn error: ${err.message}\n`);
        liveChildren.delete(child);
        resolve();
      });
    });
    // Unref'd: a forgotten server never keeps the program alive (the 'exit' hook kills it).
    // Waits for the exit ref the child again (untilExit) so an awaited stop() is not cut short.
    child.unref();
    (child.stdout as Socket | null)?.unref();
    (child.stderr as Socket | null)?.unref();
    return child;
  }

  private async untilExit(child: ChildProcess): Promise<void> {
    child.ref();
    try {
      await this.exited;
    } finally {
      child.unref();
    }
  }

  private async spawnAndWait(): Promise<void> {
    const child = this.spawnOnce();
    let gone = false;
    void this.exited.then(() => {
      gone = true;
    });
    const deadline = Date.now() + this.startTimeoutMs;
    while (Date.now() < deadline) {
      if (gone) break;
      const answer = await probe(this.host, this.port, 500);
      if (answer.pong && answer.pid === child.pid) return;
      if (gone) break;
      await sleep(20);
    }
    if (!gone) {
      child.kill('SIGKILL');
      await this.untilExit(child);
      throw new RedisServerStartError(
        `redis-server on ${this.host}:${this.port} did not answer PING within ${this.startTimeoutMs} ms`,
        this.log.tail(),
        false,
      );
    }
    // let the last stdout chunk land before reading the log
    await sleep(10);
    const text = this.log.text();
    throw new RedisServerStartError(
      `redis-server on ${this.host}:${this.port} exited during startup ` +
        `(code ${child.exitCode ?? 'none'}, signal ${child.signalCode ?? 'none'})`,
      this.log.tail(),
      /Address already in use|EADDRINUSE/.test(text),
    );
  }

  private async waitExitOrKill(graceMs: number): Promise<void> {
    const child = this.child;
    if (!isAlive(child)) return;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.untilExit(child).then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut && isAlive(child)) {
      child.kill('SIGKILL');
      await this.untilExit(child);
    }
  }

  /** SIGTERM (after SIGCONT if paused: a stopped process would never handle it), then wait. */
  private async terminate(): Promise<void> {
    const child = this.child;
    if (!isAlive(child)) return;
    child.kill('SIGTERM');
    if (this.paused) child.kill('SIGCONT');
    this.paused = false;
    await this.waitExitOrKill(STOP_GRACE_MS);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.terminate();
      if (!this.removed) {
        this.removed = true;
        liveDirs.delete(this.dir);
        await rm(this.dir, { recursive: true, force: true }).catch(() => {});
      }
    })();
    return this.stopping;
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!isAlive(child)) return;
    child.kill('SIGKILL');
    this.paused = false;
    await this.untilExit(child);
  }

  pause(): void {
    if (!isAlive(this.child)) throw new Error(`redis-server on port ${this.port} is not running`);
    this.child.kill('SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    if (!isAlive(this.child)) throw new Error(`redis-server on port ${this.port} is not running`);
    this.child.kill('SIGCONT');
    this.paused = false;
  }

  async pauseAsync(): Promise<void> {
    this.pause();
  }

  async resumeAsync(): Promise<void> {
    this.resume();
  }

  /**
   * Same port, same args, same --dir (so files a node wrote, e.g. a cluster nodes.conf inside
   * it, survive). The port can be briefly unavailable, so bind failures are retried until
   * startTimeoutMs.
   */
  async restart(): Promise<void> {
    await this.terminate();
    this.stopping = undefined;
    if (this.removed) {
      mkdirSync(this.dir, { recursive: true });
      this.removed = false;
    }
    liveDirs.add(this.dir);
    const deadline = Date.now() + this.startTimeoutMs;
    for (;;) {
      try {
        await this.spawnAndWait();
        return;
      } catch (err) {
        if (!(err instanceof RedisServerStartError) || !err.portInUse || Date.now() > deadline) {
          throw err;
        }
        await sleep(100);
      }
    }
  }
}
