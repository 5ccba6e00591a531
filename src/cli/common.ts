import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { Keys } from '../redis/keys.js';
import { connectClient } from '../redis/store.js';
import { keySlot } from '../redis/topology-cluster.js';
import { RedisUnavailableError } from '../shared/errors.js';
import { PairedWorker } from '../worker/worker.js';
import {
  type ConnectionSpec,
  clusterClient,
  connectionHint,
  describeTopology,
  type Topology,
} from './connection.js';
import { CliError, ExitCode } from './exit.js';

export { DEFAULT_REDIS_URL } from './connection.js';
export { CliError, ExitCode } from './exit.js';
export * from './format.js';

/** Options every command understands (see program.ts). */
export interface GlobalOptions {
  /** Where Redis is: one Redis, Sentinel, Cluster or quorum nodes (see connection.ts). */
  connection: ConnectionSpec;
  namespace: string;
  keyPrefix: string;
  timeout: number;
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
 * One Redis server as the CLI reads it: one Redis or a Sentinel-managed master (one view),
 * a Cluster (one view, whose client routes to the namespace's shard), or each node in
 * quorum mode.
 */
export interface NodeView {
  /** host:port, for messages and per-node output. */
  readonly label: string;
  /** Commands on the namespace's keys. */
  readonly client: Redis | Cluster;
  /** The record as this server holds it (in quorum mode: this node alone). */
  readonly inspector: PairedWorker;
  /** Whether it answered when the command started (quorum mode goes on without a minority). */
  up: boolean;
  /** Why it did not answer. */
  error?: string;
}

/** A few quick attempts, then 'end': a command reports the address instead of waiting. */
const giveUp = (times: number) => (times > 2 ? null : 100 * times);

/**
 * A connection for one command: clients that give up after a few failed attempts (a CLI
 * must answer, not hang), the namespace's keys, and PairedWorkers used only to `inspect`
 * (they never open a session, so the CLI is invisible to the pair).
 */
export class CliConnection {
  readonly keys: Keys;
  readonly topology: Topology;
  readonly nodes: readonly NodeView[];
  /** The record as a worker sees it: the majority's view in quorum mode. */
  readonly inspector: PairedWorker;
  /** Nodes a quorum decision needs (1 outside quorum mode). */
  readonly majority: number;
  private readonly lastError = new Map<Redis | Cluster, string>();

  private constructor(readonly opts: GlobalOptions) {
    this.topology = opts.connection.topology;
    this.keys = new Keys(opts.keyPrefix, opts.namespace);
    const t = this.topology;
    const quick: RedisOptions = {
      lazyConnect: true,
      connectTimeout: opts.timeout,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: giveUp,
      sentinelRetryStrategy: giveUp,
    };
    const inspectorOf = (where: { redis: Redis | Cluster } | { nodes: (Redis | Cluster)[] }) =>
      new PairedWorker({
        ...where,
        namespace: opts.namespace,
        keyPrefix: opts.keyPrefix,
        name: 'pairlock-cli',
        connectTimeoutMs: opts.timeout,
      });
    const view = (label: string, client: Redis | Cluster): NodeView => ({
      label,
      client: this.watchErrors(client),
      inspector: inspectorOf({ redis: client }),
      up: false,
    });
    if (t.kind === 'quorum') {
      this.nodes = t.nodes.map((n) => view(n.label, new Redis({ ...n.options, ...quick })));
      this.inspector = inspectorOf({ nodes: this.nodes.map((n) => n.client) });
      this.majority = Math.floor(t.nodes.length / 2) + 1;
      return;
    }
    const client =
      t.kind === 'cluster'
        ? clusterClient(t, {
            lazyConnect: true,
            enableOfflineQueue: false,
            clusterRetryStrategy: giveUp,
            slotsRefreshTimeout: opts.timeout,
            redisOptions: { connectTimeout: opts.timeout, maxRetriesPerRequest: 0 },
          })
        : new Redis({ ...(t.kind === 'redis' ? t.node.options : t.options), ...quick });
    const only = view(t.kind === 'redis' ? t.node.label : describeTopology(t), client);
    this.nodes = [only];
    this.inspector = only.inspector;
    this.majority = 1;
  }

  /** Keep the last connection error of a client: it names the address that failed. */
  private watchErrors<C extends Redis | Cluster>(client: C): C {
    // a Cluster says only 'Failed to refresh slots cache': the nodes' own errors say why
    const nodeErrors = new Map<string, string>();
    client.on('error', (err: Error) => {
      const plain = (m: string) => m.replace(/\.$/, '');
      const nodes = [...nodeErrors].map(([address, m]) => `${address}: ${plain(m)}`).join('; ');
      this.lastError.set(client, nodes ? `${plain(err.message)}; ${nodes}` : err.message);
    });
    client.on('node error', (err: Error, address: string) => {
      nodeErrors.set(address, err.message);
    });
    return client;
  }

  static async open(opts: GlobalOptions, warn: (line: string) => void = () => {}) {
    const conn = new CliConnection(opts);
    const results = await Promise.allSettled(
      conn.nodes.map((n) => connectClient(n.client, opts.timeout)),
    );
    results.forEach((r, i) => {
      const n = conn.nodes[i];
      if (!n) return;
      n.up = r.status === 'fulfilled';
      if (r.status === 'rejected') {
        n.error = conn.lastError.get(n.client) ?? (r.reason as Error).message;
        n.client.disconnect();
      }
    });
    const down = conn.nodes.filter((n) => !n.up);
    if (conn.nodes.length - down.length >= conn.majority) {
      for (const n of down) {
        warn(
          `pairlock: quorum node ${n.label} is unreachable (${n.error}); reading the other ${conn.nodes.length - down.length}`,
        );
      }
      return conn;
    }
    await conn.close();
    if (conn.topology.kind !== 'quorum') throw conn.unreachable(new Error(down[0]?.error));
    throw new CliError(
      `pairlock: cannot reach a majority of the ${conn.nodes.length} quorum nodes (${conn.majority} needed): ${down
        .map((n) => `${n.label} (${n.error})`)
        .join(', ')}.\n${connectionHint(conn.topology)}`,
      ExitCode.Unreachable,
    );
  }

  /** The address, for messages. */
  get where(): string {
    return describeTopology(this.topology);
  }

  /** The one client outside quorum mode (in quorum mode, read `nodes`). */
  get client(): Redis | Cluster {
    const only = this.nodes[0];
    if (this.topology.kind === 'quorum' || !only)
      throw new Error('a quorum connection has one client per node: read `nodes`');
    return only.client;
  }

  /** The nodes that answered. */
  get upNodes(): NodeView[] {
    return this.nodes.filter((n) => n.up);
  }

  /**
   * The server to SCAN for the namespace's keys: the node itself, or on a Cluster the
   * master serving the namespace's hash slot (every key of a namespace is in that slot).
   */
  async scanTarget(node: NodeView): Promise<{ client: Redis; label: string }> {
    const c = node.client;
    if (!(c instanceof Cluster)) return { client: c, label: node.label };
    const slot = keySlot(this.keys.channel);
    let owner = c.slots[slot]?.[0];
    if (owner === undefined) {
      await new Promise<void>((resolve) => c.refreshSlotsCache(() => resolve()));
      owner = c.slots[slot]?.[0];
    }
    const shard = c.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner);
    if (!shard) {
      throw new RedisUnavailableError(
        `no master of the cluster serves slot ${slot} of namespace ${this.opts.namespace}`,
      );
    }
    return { client: shard, label: `${owner} (slot ${slot})` };
  }

  unreachable(err: unknown): CliError {
    const node = this.nodes[0];
    const own =
      this.topology.kind === 'quorum' || !node ? undefined : this.lastError.get(node.client);
    const reason = own ?? (err as Error | undefined)?.message ?? String(err);
    if (/WRONGPASS|NOAUTH|invalid password|invalid username/i.test(reason)) {
      return new CliError(
        `pairlock: ${this.where} refused the credentials (${reason}).\nCheck --user and --password (PAIRLOCK_USER, PAIRLOCK_PASSWORD), or the user and password in the URL.`,
        ExitCode.Unreachable,
      );
    }
    return new CliError(
      `pairlock: cannot reach ${this.where} (${reason}).\n${connectionHint(this.topology)}`,
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
      const msg = (err as Error | undefined)?.message ?? '';
      if (/NOPERM/.test(msg)) {
        throw new CliError(
          `pairlock: ${this.where} refused a command to this user (${msg}).\nThe commands the CLI sends are listed in docs/cli.md (Connection options).`,
          ExitCode.Error,
        );
      }
      throw err;
    }
  }

  async close(): Promise<void> {
    const inspectors = new Set([this.inspector, ...this.nodes.map((n) => n.inspector)]);
    await Promise.all([...inspectors].map((i) => i.close().catch(() => {})));
    await Promise.all(
      this.nodes.map((n) =>
        n.up ? n.client.quit().catch(() => n.client.disconnect()) : n.client.disconnect(),
      ),
    );
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
  warn?: (line: string) => void,
): Promise<T> {
  const conn = await CliConnection.open(opts, warn);
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
  client: Redis | Cluster,
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
