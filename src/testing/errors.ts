/** Errors the test harness throws when it cannot give a caller a running Redis server. */

/** Neither a redis-server binary nor a container runtime is usable; the message says what to do. */
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
