import { Redis } from 'ioredis';
import { RedisUnavailableError } from '../errors.js';
import { Keys } from '../keys.js';
import { connectClient, describeClient } from '../store.js';
import { PairedWorker, type TaskInfo } from '../worker.js';

/** Exit codes of the `pairlock` CLI. */
export const ExitCode = {
  Ok: 0,
  Error: 1,
  Unreachable: 2,
  UnknownTask: 3,
} as const;

/** An error that ends the command with a message on stderr and a given exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** Options every command understands (see main.ts). */
export interface GlobalOptions {
  redis: string;
  namespace: string;
  keyPrefix: string;
  timeout: number;
}

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

export function defaultRedisUrl(): string {
  return process.env.REDIS_URL || DEFAULT_REDIS_URL;
}

/** Where the CLI writes; tests and embedding replace it. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
}

export const stdio: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/**
 * A connection for one command: a client that gives up after a few failed attempts
 * (a CLI must answer, not hang), the namespace's keys, and a PairedWorker used only for
 * `inspect` (it never opens a session, so the CLI is invisible to the pair).
 */
export class CliConnection {
  readonly client: Redis;
  readonly keys: Keys;
  readonly inspector: PairedWorker;
  private lastError: Error | undefined;

  private constructor(readonly opts: GlobalOptions) {
    this.client = new Redis(opts.redis, {
      lazyConnect: true,
      connectTimeout: opts.timeout,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      // a few quick attempts, then 'end': the command reports the address instead of waiting
      retryStrategy: (times) => (times > 2 ? null : 100 * times),
    });
    this.client.on('error', (err: Error) => {
      this.lastError = err;
    });
    this.keys = new Keys(opts.keyPrefix, opts.namespace);
    this.inspector = new PairedWorker({
      redis: this.client,
      namespace: opts.namespace,
      keyPrefix: opts.keyPrefix,
      name: 'pairlock-cli',
      connectTimeoutMs: opts.timeout,
    });
  }

  static async open(opts: GlobalOptions): Promise<CliConnection> {
    const conn = new CliConnection(opts);
    try {
      await connectClient(conn.client, opts.timeout);
    } catch (err) {
      conn.client.disconnect();
      throw conn.unreachable(err);
    }
    return conn;
  }

  /** The address, for messages. */
  get where(): string {
    return describeClient(this.client);
  }

  unreachable(err: unknown): CliError {
    const reason = this.lastError?.message ?? (err as Error).message;
    return new CliError(
      `pairlock: cannot reach ${this.where} (${reason}).\n` +
        'Pass the address with --redis <url> or set REDIS_URL (default redis://127.0.0.1:6379).',
      ExitCode.Unreachable,
    );
  }

  /** Run `fn`; a connection fault while it runs becomes exit code 2 with the address. */
  async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof RedisUnavailableError || isConnectionFault(err))
        throw this.unreachable(err);
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.inspector.close().catch(() => {});
    await this.client.quit().catch(() => this.client.disconnect());
  }
}

export function isConnectionFault(err: unknown): boolean {
  const msg = (err as Error | undefined)?.message ?? '';
  return /ECONNREFUSED|ECONNRESET|EPIPE|Connection is closed|Stream isn't writeable|enableOfflineQueue|max retries/i.test(
    msg,
  );
}

/** Run a command body with a connection, always closing it. */
export async function withConnection<T>(
  opts: GlobalOptions,
  fn: (conn: CliConnection) => Promise<T>,
): Promise<T> {
  const conn = await CliConnection.open(opts);
  try {
    return await conn.guard(() => fn(conn));
  } finally {
    await conn.close();
  }
}

/** Escape Redis glob characters, so a key prefix matches only itself in SCAN MATCH. */
export function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

/**
 * Every key matching `pattern`, page by page with SCAN (never KEYS), so a large
 * keyspace costs many small calls instead of one long block of the server.
 */
export async function* scanKeys(
  client: Redis,
  pattern: string,
  count: number,
): AsyncGenerator<string[], void, void> {
  let cursor = '0';
  const seen = new Set<string>();
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', count);
    cursor = next;
    // SCAN may return a key more than once (rehashing): report each once
    const fresh = keys.filter((k) => !seen.has(k));
    for (const k of fresh) seen.add(k);
    if (fresh.length > 0) yield fresh;
  } while (cursor !== '0');
}

/** Fields of a hash, page by page with HSCAN. */
export async function* scanHashFields(
  client: Redis,
  key: string,
  count: number,
): AsyncGenerator<string[], void, void> {
  let cursor = '0';
  const seen = new Set<string>();
  do {
    const [next, flat] = await client.hscan(key, cursor, 'COUNT', count);
    cursor = next;
    const fields: string[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      const f = flat[i] as string;
      if (!seen.has(f)) {
        seen.add(f);
        fields.push(f);
      }
    }
    if (fields.length > 0) yield fields;
  } while (cursor !== '0');
}

export function parsePositiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) {
      throw new CliError(
        `pairlock: ${name} must be a positive integer, got ${JSON.stringify(value)}`,
        ExitCode.Error,
      );
    }
    return n;
  };
}

// ---------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------

export function iso(ms: number): string {
  return Number.isFinite(ms) && ms > 0 ? new Date(ms).toISOString() : '-';
}

export function duration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms < 0) return `${ms} ms`;
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

function short(value: unknown, max = 80): string {
  const text = value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A TaskInfo as JSON-friendly data (undefined fields dropped). */
export function taskJson(info: TaskInfo, hash?: string): Record<string, unknown> {
  const out: Record<string, unknown> = { ...info };
  if (hash !== undefined) out.hash = hash;
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out;
}

/** One short line of detail for a record (list, stats). */
export function detail(info: TaskInfo): string {
  switch (info.state) {
    case 'running':
      return info.ownerAlive
        ? `lease ${duration(info.leaseRemainingMs)}${info.progress === undefined ? '' : `, progress ${info.progress}`}`
        : 'orphaned (owner session gone)';
    case 'done':
      return info.result === undefined ? '' : `result ${short(info.result, 60)}`;
    case 'failed':
      return `${info.error ? `${info.error.name}: ${short(info.error.message, 50)}` : ''}${
        info.deadlineInMs !== undefined && info.deadlineInMs > 0
          ? ` (retry in ${duration(info.deadlineInMs)})`
          : ''
      }`;
    default:
      return 'handed over, claimable';
  }
}

/** The human-readable form of one record (`pairlock inspect`). */
export function describeTask(info: TaskInfo, hash?: string): string[] {
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`${`${k}:`.padEnd(12)} ${v}`);
  row('task', hash === undefined ? info.taskId : `${info.taskId} (field of hash ${hash})`);
  row('state', info.state);
  row('token', String(info.token));
  row('attempt', String(info.attempt));
  row('worker', info.worker);
  row('session', `${info.session} (${info.ownerAlive ? 'alive' : 'gone'})`);
  row('claimed', iso(info.claimedAt));
  row('updated', iso(info.updatedAt));
  if (info.state === 'running') {
    row(
      'lease',
      info.ownerAlive
        ? `${duration(info.leaseRemainingMs)} left`
        : 'orphaned: a peer may take it over',
    );
    row('deadline', `in ${duration(info.deadlineInMs)}`);
  }
  if (info.state === 'failed' && info.deadlineInMs !== undefined) {
    row(
      'retry',
      info.deadlineInMs > 0
        ? `not before ${duration(info.deadlineInMs)}`
        : 'allowed now (if attempts remain)',
    );
  }
  if (info.progress !== undefined) row('progress', String(info.progress));
  if (info.note !== undefined) row('note', JSON.stringify(info.note));
  if (info.result !== undefined) row('result', JSON.stringify(info.result));
  if (info.error !== undefined) {
    row(
      'error',
      `${info.error.name}: ${info.error.message}${info.error.code ? ` [${info.error.code}]` : ''}`,
    );
  }
  row('kept', info.keepMs < 0 ? 'no expiry' : `${duration(info.keepMs)} more`);
  return lines;
}

/** Left-aligned columns. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [fmt(header), ...rows.map(fmt)];
}
