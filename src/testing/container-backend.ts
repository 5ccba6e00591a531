/**
 * The container backend: `redis:7` through testcontainers, used when no redis-server binary is
 * found. testcontainers is loaded lazily, so the process path never pays for it; a missing
 * package or an unreachable container runtime ends in `HarnessUnavailableError`.
 */
import type { StartedTestContainer } from 'testcontainers';
import type { Backend, RedisServerOptions } from './backend.js';
import { missingBinaryMessage } from './binary.js';
import { HarnessUnavailableError, RedisServerStartError } from './errors.js';
import { freePort } from './ports.js';
import { pingOnce } from './probe.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class ContainerBackend implements Backend {
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
