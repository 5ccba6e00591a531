/**
 * Starts real Redis servers for tests, the demo and the benchmarks.
 *
 * The normal path runs the `redis-server` binary as a child process. When the binary is missing
 * and a container runtime is reachable, `testcontainers` runs `redis:7` instead (loaded lazily, so
 * the process path never pays for it). With neither, `HarnessUnavailableError` explains what to
 * install.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  accessSync,
  constants,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { rm } from 'node:fs/promises';
import net, { type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { StartedTestContainer } from 'testcontainers';

export interface RedisServerOptions {
  /** Port to listen on. Default: a free port (retried on a bind race). */
  port?: number;
  /** Extra redis-server args, appended last so they override the defaults. */
  args?: string[];
  /** Path or name of the binary. Default: `REDIS_SERVER_BIN` env, else `redis-server` on PATH. */
  binary?: string;
  /** How long to wait for the first PONG. Default 10 000 ms. */
  startTimeoutMs?: number;
  /**
   * Config file passed as the FIRST argument (redis-server requires that position), e.g. a
   * sentinel config. It must be writable: sentinels rewrite it. Process servers only.
   */
  configFile?: string;
}

export class HarnessUnavailableError extends Error {
  readonly code = 'ERR_HARNESS_UNAVAILABLE';
  constructor(message: string) {
    super(message);
    this.name = 'HarnessUnavailableError';
  }
}

/** redis-server exited or never answered PING during startup; `log` holds its last lines. */
export class RedisServerStartError extends Error {
  readonly code = 'ERR_REDIS_START';
  constructor(
    message: string,
    readonly log: string[],
    /** True when the port was taken: the caller may retry on another port. */
    readonly portInUse: boolean,
  ) {
    super(
      log.length > 0
        ? `${message}\n--- redis-server log (last lines) ---\n${log.join('\n')}`
        : message,
    );
    this.name = 'RedisServerStartError';
  }
}

const HOST = '127.0.0.1';
/** Bind-race retries when the caller did not ask for a specific port. */
const START_ATTEMPTS = 5;
/** Lines of server output kept for error messages. */
const LOG_LINES = 50;
/** After SIGTERM, how long stop() waits before it falls back to SIGKILL. */
const STOP_GRACE_MS = 5_000;
/** The cluster bus listens on port + 10000 unless `cluster-port` says otherwise. */
const CLUSTER_BUS_OFFSET = 10_000;

// ---------------------------------------------------------------------------------------------
// binary lookup

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function resolveBinary(binary?: string): string | undefined {
  const name = binary ?? process.env.REDIS_SERVER_BIN ?? 'redis-server';
  if (name.includes('/') || name.includes(path.sep)) {
    return isExecutableFile(name) ? path.resolve(name) : undefined;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/** True when the redis-server binary (REDIS_SERVER_BIN or PATH, or `binary`) is usable. */
export function redisServerAvailable(binary?: string): boolean {
  return resolveBinary(binary) !== undefined;
}

/** Throws HarnessUnavailableError unless the binary exists (topologies need real processes). */
export function requireRedisServerBinary(binary?: string): string {
  const found = resolveBinary(binary);
  if (!found) throw new HarnessUnavailableError(missingBinaryMessage(binary));
  return found;
}

function missingBinaryMessage(binary?: string, extra?: string): string {
  const name = binary ?? process.env.REDIS_SERVER_BIN ?? 'redis-server';
  return (
    `cannot start Redis: '${name}' was not found on PATH` +
    (extra ? ` and ${extra}` : '') +
    `. Install redis-server (e.g. 'apt-get install redis-server' or 'brew install redis'), ` +
    `point REDIS_SERVER_BIN at a redis-server binary, or run a container runtime (Docker/Podman) ` +
    `so testcontainers can start redis:7.`
  );
}

// ---------------------------------------------------------------------------------------------
// ports

/** Well-known ports of a developer's own Redis; never hand these out even if they look free. */
const RESERVED_PORTS = new Set([6379, 16379, 26379]);
/** Ports this process already handed out: a second caller must not get one before it is bound. */
const handedOut = new Set<number>();

function ephemeralLow(): number {
  try {
    const lo = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
    if (Number.isInteger(lo) && lo > 2048) return lo;
  } catch {
    // not Linux: use the IANA default below
  }
  return 49152;
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ host: HOST, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

function osAssignedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host: HOST, port: 0, exclusive: true }, () => {
      const addr = srv.address() as net.AddressInfo;
      srv.close(() => resolve(addr.port));
    });
  });
}

/**
 * A free port on 127.0.0.1, with `port + span` free too when `span > 0` (cluster bus).
 *
 * Ports are drawn from BELOW the kernel's ephemeral range: outgoing client connections take their
 * source ports from that range, so a port picked there could be grabbed by some client socket
 * while a killed server is down, and restart() on the same port would then fail.
 */
async function pickPort(span = 0): Promise<number> {
  const lo = 10_000;
  const hi = ephemeralLow() - span;
  for (let i = 0; i < 200; i++) {
    const port =
      hi - lo >= 1_000 ? lo + Math.floor(Math.random() * (hi - lo)) : await osAssignedPort();
    if (RESERVED_PORTS.has(port) || handedOut.has(port) || port + span > 65_535) continue;
    if (!(await canListen(port))) continue;
    if (span > 0 && !(await canListen(port + span))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error('could not find a free port on 127.0.0.1');
}

/** A free TCP port on 127.0.0.1 (not 6379/16379/26379, not in the ephemeral range). */
export function freePort(): Promise<number> {
  return pickPort(0);
}

/** A free port whose cluster bus port (port + 10000) is free as well. */
export function freeClusterPort(): Promise<number> {
  return pickPort(CLUSTER_BUS_OFFSET);
}

function argValue(args: readonly string[], name: string): string | undefined {
  const i = args.lastIndexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function needsClusterBusPort(args: readonly string[]): boolean {
  return (
    argValue(args, '--cluster-enabled') === 'yes' && argValue(args, '--cluster-port') === undefined
  );
}

// ---------------------------------------------------------------------------------------------
// PING over a raw socket (no client library, no reconnect noise)

/** One PING round trip; resolves true only on +PONG (not on -LOADING and friends). */
export async function pingOnce(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return (await probe(host, port, timeoutMs)).pong;
}

/**
 * PING plus INFO server, pipelined in one write. The pid from INFO tells whether the server that
 * answers is really the child we spawned: if our child failed to bind, whoever else holds the
 * port would answer the PING just as well.
 */
function probe(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<{ pong: boolean; pid?: number }> {
  return new Promise((resolve) => {
    let settled = false;
    let buf = '';
    const sock = net.connect({ host, port });
    const finish = (result: { pong: boolean; pid?: number }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ pong: false }), timeoutMs);
    sock.setEncoding('latin1');
    sock.on('connect', () =>
      sock.write('*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n'),
    );
    sock.on('data', (d: string) => {
      buf += d;
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return;
      if (!buf.startsWith('+PONG')) return finish({ pong: false });
      // second reply: $<len>\r\n<body>\r\n (latin1 keeps byte length == string length)
      const rest = buf.slice(eol + 2);
      const head = /^\$(\d+)\r\n/.exec(rest);
      if (!head) {
        if (rest.length > 0 && !rest.startsWith('$')) finish({ pong: true });
        return;
      }
      const body = rest.slice(head[0].length);
      if (body.length < Number(head[1])) return;
      const pid = /^process_id:(\d+)/m.exec(body)?.[1];
      finish({ pong: true, pid: pid === undefined ? undefined : Number(pid) });
    });
    sock.on('error', () => finish({ pong: false }));
    sock.on('close', () => finish({ pong: false }));
  });
}

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
// backends

interface Backend {
  readonly kind: 'process' | 'container';
  readonly host: string;
  readonly port: number;
  pid(): number | undefined;
  running(): boolean;
  logTail(): string[];
  stop(): Promise<void>;
  kill(): Promise<void>;
  pause(): void;
  resume(): void;
  pauseAsync(): Promise<void>;
  resumeAsync(): Promise<void>;
  restart(): Promise<void>;
}

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

class ProcessBackend implements Backend {
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

class ContainerBackend implements Backend {
  readonly kind = 'container';
  private stopped = false;
  private killed = false;
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly container: StartedTestContainer,
    private readonly client: {
      container: {
        getById(id: string): {
          kill(): Promise<unknown>;
          pause(): Promise<unknown>;
          unpause(): Promise<unknown>;
        };
      };
    },
    readonly host: string,
    readonly port: number,
    private readonly startTimeoutMs: number,
  ) {}

  static async launch(opts: RedisServerOptions, startTimeoutMs: number): Promise<ContainerBackend> {
    let tc: typeof import('testcontainers');
    try {
      // A non-literal specifier: bundlers (tsup/esbuild) leave it alone instead of inlining
      // testcontainers (a devDependency) into dist/testing.js.
      const specifier = 'testcontainers';
      tc = (await import(specifier)) as typeof import('testcontainers');
    } catch {
      throw new HarnessUnavailableError(
        missingBinaryMessage(opts.binary, 'testcontainers is not installed'),
      );
    }
    let client: Awaited<ReturnType<typeof tc.getContainerRuntimeClient>>;
    try {
      client = await tc.getContainerRuntimeClient();
    } catch {
      throw new HarnessUnavailableError(
        missingBinaryMessage(opts.binary, 'no container runtime is reachable'),
      );
    }
    if (opts.configFile) {
      throw new HarnessUnavailableError(
        missingBinaryMessage(opts.binary, 'configFile needs a process server'),
      );
    }
    // A fixed host port (rather than a random mapping) keeps restart() on the same port.
    const hostPort = opts.port ?? (await freePort());
    const container = await new tc.GenericContainer('redis:7')
      .withExposedPorts({ container: 6379, host: hostPort })
      .withCommand(['redis-server', '--save', '', '--appendonly', 'no', ...(opts.args ?? [])])
      .withStartupTimeout(startTimeoutMs)
      .start();
    const backend = new ContainerBackend(
      container,
      client,
      container.getHost(),
      container.getMappedPort(6379),
      startTimeoutMs,
    );
    await backend.waitReady();
    return backend;
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + this.startTimeoutMs;
    while (Date.now() < deadline) {
      if (await pingOnce(this.host, this.port, 500)) return;
      await sleep(50);
    }
    throw new RedisServerStartError(
      `redis container on ${this.host}:${this.port} did not answer PING within ${this.startTimeoutMs} ms`,
      [],
      false,
    );
  }

  pid(): number | undefined {
    return undefined;
  }

  running(): boolean {
    return !this.stopped && !this.killed;
  }

  logTail(): string[] {
    return [];
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.stopped = true;
      await this.container.stop({ timeout: 0 }).catch(() => {});
    })();
    return this.stopping;
  }

  async kill(): Promise<void> {
    if (this.stopped || this.killed) return;
    this.killed = true;
    await this.client.container.getById(this.container.getId()).kill();
  }

  pause(): void {
    throw new Error(
      'pause() is synchronous and only supported for process servers; ' +
        'this server runs in a container: use `await server.pauseAsync()`',
    );
  }

  resume(): void {
    throw new Error(
      'resume() is synchronous and only supported for process servers; ' +
        'this server runs in a container: use `await server.resumeAsync()`',
    );
  }

  async pauseAsync(): Promise<void> {
    await this.client.container.getById(this.container.getId()).pause();
  }

  async resumeAsync(): Promise<void> {
    await this.client.container.getById(this.container.getId()).unpause();
  }

  async restart(): Promise<void> {
    if (this.stopped)
      throw new Error('container server was stopped (and removed); start a new one');
    await this.container.restart({ timeout: 0 });
    this.killed = false;
    await this.waitReady();
  }
}

// ---------------------------------------------------------------------------------------------
// public class

/** A real Redis server: a child process (kind 'process') or a testcontainers container. */
export class RedisServer {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  readonly kind: 'process' | 'container';

  private constructor(private readonly backend: Backend) {
    this.host = backend.host;
    this.port = backend.port;
    this.url = `redis://${backend.host}:${backend.port}`;
    this.kind = backend.kind;
  }

  /**
   * Starts a server and resolves once it answers PING. Without `opts.port`, a bind race (another
   * process took the port between our probe and Redis' bind) is retried on a new port, up to 5
   * attempts.
   */
  static async start(opts: RedisServerOptions = {}): Promise<RedisServer> {
    const startTimeoutMs = opts.startTimeoutMs ?? 10_000;
    const binary = resolveBinary(opts.binary);
    if (!binary) return new RedisServer(await ContainerBackend.launch(opts, startTimeoutMs));
    const cluster = needsClusterBusPort(opts.args ?? []);
    const attempts = opts.port === undefined ? START_ATTEMPTS : 1;
    for (let attempt = 1; ; attempt++) {
      const port = opts.port ?? (cluster ? await freeClusterPort() : await freePort());
      try {
        return new RedisServer(await ProcessBackend.launch(binary, port, opts, startTimeoutMs));
      } catch (err) {
        if (!(err instanceof RedisServerStartError) || !err.portInUse || attempt >= attempts)
          throw err;
      }
    }
  }

  /** OS pid while the process runs; undefined when it is not running or for containers. */
  get pid(): number | undefined {
    return this.backend.pid();
  }

  /** False after stop()/kill() until restart(). */
  get running(): boolean {
    return this.backend.running();
  }

  /** The last ~50 lines the server logged (process servers only). */
  get logTail(): string[] {
    return this.backend.logTail();
  }

  /** { host, port }, the shape ioredis and the topologies use for addresses. */
  get address(): { host: string; port: number } {
    return { host: this.host, port: this.port };
  }

  /** Graceful: SIGTERM (Redis runs SHUTDOWN NOSAVE NOW), waits for exit, SIGKILL after 5 s. Idempotent. */
  stop(): Promise<void> {
    return this.backend.stop();
  }

  /** SIGKILL (a crash: no goodbye to clients or replicas); waits for the exit. */
  kill(): Promise<void> {
    return this.backend.kill();
  }

  /** SIGSTOP: the process freezes, sockets stay open, commands hang. Process servers only. */
  pause(): void {
    this.backend.pause();
  }

  /** SIGCONT after pause(). Process servers only. */
  resume(): void {
    this.backend.resume();
  }

  /** pause() that also works for containers (docker pause). */
  pauseAsync(): Promise<void> {
    return this.backend.pauseAsync();
  }

  /** resume() that also works for containers (docker unpause). */
  resumeAsync(): Promise<void> {
    return this.backend.resumeAsync();
  }

  /** Stops the server if it still runs, then starts it on the SAME port with the same args. */
  restart(): Promise<void> {
    return this.backend.restart();
  }
}
