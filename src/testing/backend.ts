/** The options of a harness server and the contract its two backends (process, container) keep. */

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

/** One running (or stopped) server, as the `RedisServer` facade drives it. */
export interface Backend {
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
