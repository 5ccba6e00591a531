/**
 * Starts real Redis servers for tests, the demo and the benchmarks.
 *
 * The normal path runs the `redis-server` binary as a child process. When the binary is missing
 * and a container runtime is reachable, `testcontainers` runs `redis:7` instead (loaded lazily, so
 * the process path never pays for it). With neither, `HarnessUnavailableError` explains what to
 * install.
 */
import type { Backend, RedisServerOptions } from './backend.js';
import { resolveBinary } from './binary.js';
import { ContainerBackend } from './container-backend.js';
import { RedisServerStartError } from './errors.js';
import { freeClusterPort, freePort, needsClusterBusPort } from './ports.js';
import { ProcessBackend } from './process-backend.js';

/** Bind-race retries when the caller did not ask for a specific port. */
const START_ATTEMPTS = 5;

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
