import { readFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { Cluster, type RedisOptions } from 'ioredis';
import type { RedisConnection } from '../shared/options.js';
import { CliError, ExitCode } from './exit.js';

/*
 * Where the CLI connects: the same choices as the library's PairedWorker options, as
 * command-line options, each also read from an environment variable. One Redis
 * (`redis`: a URL), a Sentinel-managed master (`redis: { sentinels, name }`), a Cluster
 * (`redis: new Cluster(…)`) or quorum mode (`nodes: [url, url, url]`); TLS and an ACL user
 * apply to every connection of the chosen topology.
 *
 * Precedence: a topology chosen on the command line wins over one named in the
 * environment (REDIS_URL set in a shell does not stand in the way of --cluster); two
 * topologies from the same place are an error. Companion options (--master, --tls,
 * --tls-ca, --user, --password) come from either place, the command line first.
 */

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

const GROUP = 'Connection (each also from its environment variable):';

/** The connection options: flag, environment variable, help. */
export const CONNECTION_OPTIONS = {
  redis: { flag: '--redis <url>', env: 'REDIS_URL', help: 'one Redis: redis://… or rediss://…' },
  sentinel: {
    flag: '--sentinel <host:port,…>',
    env: 'PAIRLOCK_SENTINEL',
    help: 'a master managed by these sentinels (with --master)',
  },
  master: {
    flag: '--master <name>',
    env: 'PAIRLOCK_MASTER',
    help: 'the name the sentinels monitor the master under',
  },
  cluster: {
    flag: '--cluster <host:port,…>',
    env: 'PAIRLOCK_CLUSTER',
    help: 'a Redis Cluster, through these startup nodes',
  },
  nodes: {
    flag: '--nodes <url,url,url>',
    env: 'PAIRLOCK_NODES',
    help: 'quorum mode: an odd number (3 or 5) of independent Redis masters',
  },
  tls: {
    flag: '--tls',
    env: 'PAIRLOCK_TLS',
    help: 'TLS on every connection (rediss:// implies it)',
  },
  tlsCa: {
    flag: '--tls-ca <file>',
    env: 'PAIRLOCK_TLS_CA',
    help: 'TLS, trusting the CA certificate(s) in this PEM file',
  },
  user: { flag: '--user <name>', env: 'PAIRLOCK_USER', help: 'ACL user (with --password)' },
  password: {
    flag: '--password <secret>',
    env: 'PAIRLOCK_PASSWORD',
    help: 'password (prefer the environment variable: a command line is visible to ps)',
  },
} as const;

export type ConnectionKey = keyof typeof CONNECTION_OPTIONS;
const TOPOLOGY_KEYS = ['redis', 'sentinel', 'cluster', 'nodes'] as const;
type TopologyKey = (typeof TOPOLOGY_KEYS)[number];

/** Every environment variable the connection options read. */
export const CONNECTION_ENV: readonly string[] = Object.values(CONNECTION_OPTIONS).map(
  (o) => o.env,
);

/** One given value and where it came from. */
export interface Given {
  readonly value: string;
  readonly source: 'cli' | 'env';
}
export type ConnectionInput = Partial<Record<ConnectionKey, Given>>;

export interface HostPort {
  host: string;
  port: number;
}

/** One Redis server: its options (TLS and user included) and a label for messages. */
export interface NodeAddress {
  /** host:port (or the socket path); never the password. */
  readonly label: string;
  readonly options: RedisOptions;
}

export type Topology =
  | { readonly kind: 'redis'; readonly url: string; readonly node: NodeAddress }
  | {
      readonly kind: 'sentinel';
      readonly sentinels: readonly HostPort[];
      readonly master: string;
      /** ioredis options: sentinels, name, user and TLS. */
      readonly options: RedisOptions;
    }
  | {
      readonly kind: 'cluster';
      readonly startup: readonly HostPort[];
      /** Options of every node connection (`redisOptions`): user and TLS. */
      readonly options: RedisOptions;
    }
  | { readonly kind: 'quorum'; readonly nodes: readonly NodeAddress[] };

/** A validated connection choice. */
export interface ConnectionSpec {
  readonly topology: Topology;
  /** Whether any topology option was given (otherwise: the default URL). */
  readonly explicit: boolean;
  /** The same choice as environment variables, for child processes (`run`, `demo`). */
  readonly env: Readonly<Record<string, string>>;
}

/** Adds the connection options to a command (the program: every subcommand inherits them). */
export function addConnectionOptions(cmd: Command): Command {
  for (const [key, o] of Object.entries(CONNECTION_OPTIONS)) {
    const opt = new Option(o.flag, o.help).env(o.env).helpGroup(GROUP);
    if (key === 'redis') opt.default(DEFAULT_REDIS_URL);
    cmd.addOption(opt);
  }
  return cmd;
}

/** The connection values a parsed command holds, with their source. */
export function connectionInput(
  cmd: Command,
  env: NodeJS.ProcessEnv = process.env,
): ConnectionInput {
  const opts = cmd.opts<Record<string, unknown>>();
  const input: ConnectionInput = {};
  for (const [key, o] of Object.entries(CONNECTION_OPTIONS) as [
    ConnectionKey,
    (typeof CONNECTION_OPTIONS)[ConnectionKey],
  ][]) {
    const source = cmd.getOptionValueSource(key) as string | undefined;
    if (source !== 'cli' && source !== 'env') continue;
    const v = opts[key];
    // a boolean flag from the environment: its text decides (PAIRLOCK_TLS=0 means no)
    const value = typeof v === 'string' ? v : source === 'env' ? (env[o.env] ?? '') : 'true';
    input[key] = { value, source };
  }
  return input;
}

/** The connection values of an environment alone (a worker process started by the CLI). */
export function connectionInputFromEnv(env: NodeJS.ProcessEnv = process.env): ConnectionInput {
  const input: ConnectionInput = {};
  for (const [key, o] of Object.entries(CONNECTION_OPTIONS) as [
    ConnectionKey,
    (typeof CONNECTION_OPTIONS)[ConnectionKey],
  ][]) {
    const value = env[o.env];
    if (value !== undefined) input[key] = { value, source: 'env' };
  }
  return input;
}

function usage(message: string): CliError {
  return new CliError(`pairlock: ${message}`, ExitCode.Error);
}

/** How to name a value in a message: the flag, or the variable it came from. */
function nameOf(key: ConnectionKey, given: Given | undefined): string {
  const o = CONNECTION_OPTIONS[key];
  const flag = o.flag.split(' ')[0] ?? o.flag;
  return given?.source === 'env' ? `${o.env} (${flag})` : flag;
}

function flagOf(key: ConnectionKey): string {
  return CONNECTION_OPTIONS[key].flag.split(' ')[0] ?? key;
}

/** A URL as it may be shown: without its password. */
export function redact(text: string): string {
  return text.replace(/^([a-z]+:\/\/[^:@/]*):[^@/]*@/i, '$1:***@');
}

function bool(key: ConnectionKey, given: Given | undefined): boolean {
  if (!given) return false;
  const v = given.value.trim().toLowerCase();
  if (v === '' || v === '0' || v === 'false' || v === 'no') return false;
  if (v === '1' || v === 'true' || v === 'yes') return true;
  throw usage(`${nameOf(key, given)}: expected 1/true/yes or 0/false/no, got ${JSON.stringify(v)}`);
}

function label(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** `host:port[,host:port…]`, IPv6 hosts in brackets. */
export function parseHostList(text: string, what: string): HostPort[] {
  const entries = text.split(',').map((e) => e.trim());
  if (text.trim() === '') throw usage(`${what}: expected host:port[,host:port…], got nothing`);
  return entries.map((entry) => {
    const m =
      /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(entry) ?? /^([^\s:/,[\]@]+):(\d{1,5})$/.exec(entry);
    const port = Number(m?.[2]);
    if (!m?.[1] || !Number.isInteger(port) || port < 1 || port > 65_535) {
      const hint = /^[a-z]+:\/\//i.test(entry) ? ' (give host:port, without a scheme)' : '';
      throw usage(
        `${what}: expected host:port[,host:port…] with a port from 1 to 65535, got ${JSON.stringify(redact(entry))}${hint}`,
      );
    }
    return { host: m[1], port };
  });
}

interface Common {
  readonly tls: RedisOptions['tls'] | undefined;
  readonly user: string | undefined;
  readonly password: string | undefined;
  readonly passwordName: string;
}

function auth(c: Common): RedisOptions {
  return {
    ...(c.user === undefined ? {} : { username: c.user }),
    ...(c.password === undefined ? {} : { password: c.password }),
  };
}

/** A redis:// or rediss:// URL (or a socket path) to the options of one server. */
export function parseRedisUrl(text: string, what: string, c: Common): NodeAddress {
  if (text.startsWith('/')) {
    return {
      label: text,
      options: { path: text, ...auth(c), ...(c.tls ? { tls: c.tls } : {}) },
    };
  }
  if (!/^rediss?:\/\//i.test(text)) {
    const hint = /^[^/\s]+:\d+$/.test(text) ? ` (did you mean redis://${redact(text)}?)` : '';
    throw usage(
      `${what}: expected a redis:// or rediss:// URL, got ${JSON.stringify(redact(text))}${hint}`,
    );
  }
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw usage(`${what}: not a valid URL: ${JSON.stringify(redact(text))}`);
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (host === '') throw usage(`${what}: the URL names no host: ${JSON.stringify(redact(text))}`);
  const port = u.port === '' ? 6379 : Number(u.port);
  const options: RedisOptions = { host, port };
  const db = u.pathname.replace(/^\//, '');
  if (db !== '') {
    if (!/^\d+$/.test(db))
      throw usage(`${what}: the URL's path must be a database number, got ${JSON.stringify(db)}`);
    options.db = Number(db);
  }
  u.searchParams.forEach((value, key) => {
    (options as Record<string, unknown>)[key] = key === 'family' ? Number(value) : value;
  });
  if (u.username !== '' || u.password !== '') {
    if (c.password !== undefined || c.user !== undefined) {
      throw usage(
        `${what}: the URL carries a user or password of its own, and ${c.passwordName} gives another; give them in one place`,
      );
    }
    if (u.username !== '') options.username = decodeURIComponent(u.username);
    if (u.password !== '') options.password = decodeURIComponent(u.password);
  } else Object.assign(options, auth(c));
  if (u.protocol === 'rediss:' || c.tls) options.tls = { ...(c.tls ?? {}) };
  return { label: label(host, port), options };
}

function readCa(given: Given): Buffer {
  const what = nameOf('tlsCa', given);
  let ca: Buffer;
  try {
    ca = readFileSync(given.value);
  } catch (err) {
    throw usage(
      `${what}: cannot read ${JSON.stringify(given.value)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  if (!ca.toString('latin1').includes('-----BEGIN CERTIFICATE-----')) {
    throw usage(
      `${what}: ${JSON.stringify(given.value)} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    );
  }
  return ca;
}

/** Validate the connection options: every message names the option (or variable) to fix. */
export function parseConnection(input: ConnectionInput): ConnectionSpec {
  const fromCli = TOPOLOGY_KEYS.filter((k) => input[k]?.source === 'cli');
  const fromEnv = TOPOLOGY_KEYS.filter((k) => input[k]?.source === 'env');
  if (fromCli.length > 1) {
    throw usage(
      `give one of --redis, --sentinel, --cluster or --nodes, not ${fromCli.map(flagOf).join(' and ')}`,
    );
  }
  if (fromCli.length === 0 && fromEnv.length > 1) {
    throw usage(
      `the environment names more than one topology (${fromEnv.map((k) => CONNECTION_OPTIONS[k].env).join(', ')}); unset all but one, or choose with --redis, --sentinel, --cluster or --nodes`,
    );
  }
  const chosen: TopologyKey = fromCli[0] ?? fromEnv[0] ?? 'redis';
  const given = input[chosen];
  const master = input.master;
  if (chosen !== 'sentinel' && master?.source === 'cli')
    throw usage('--master names the master the sentinels monitor; it needs --sentinel');
  const user = input.user;
  const password = input.password;
  if (user !== undefined && user.value === '')
    throw usage(`${nameOf('user', user)}: expected a user name, got nothing`);
  if (user !== undefined && password === undefined) {
    throw usage(`${nameOf('user', user)} needs --password (or ${CONNECTION_OPTIONS.password.env})`);
  }
  const ca = input.tlsCa ? readCa(input.tlsCa) : undefined;
  const tlsOn = bool('tls', input.tls) || ca !== undefined;
  const common: Common = {
    tls: tlsOn ? (ca ? { ca } : {}) : undefined,
    user: user?.value,
    password: password?.value,
    passwordName: user ? nameOf('user', user) : nameOf('password', password),
  };

  // the same choice, as environment variables for child processes
  const env: Record<string, string> = {};
  const keep = (k: ConnectionKey) => {
    const g = input[k];
    if (g) env[CONNECTION_OPTIONS[k].env] = g.value;
  };
  for (const k of ['tls', 'tlsCa', 'user', 'password'] as const) keep(k);

  let topology: Topology;
  const what = nameOf(chosen, given);
  switch (chosen) {
    case 'redis': {
      const url = given?.value ?? DEFAULT_REDIS_URL;
      topology = { kind: 'redis', url, node: parseRedisUrl(url, what, common) };
      env[CONNECTION_OPTIONS.redis.env] = url;
      break;
    }
    case 'sentinel': {
      const sentinels = parseHostList(given?.value ?? '', what);
      if (!master || master.value.trim() === '') {
        throw usage(
          `${what} needs --master <name> (or ${CONNECTION_OPTIONS.master.env}): the name the sentinels monitor the master under`,
        );
      }
      const tls = common.tls;
      topology = {
        kind: 'sentinel',
        sentinels,
        master: master.value,
        options: {
          sentinels,
          name: master.value,
          ...auth(common),
          // TLS to the sentinels and to the master they name
          ...(tls ? { tls, sentinelTLS: tls, enableTLSForSentinelMode: true } : {}),
        },
      };
      keep('sentinel');
      keep('master');
      break;
    }
    case 'cluster': {
      const startup = parseHostList(given?.value ?? '', what);
      topology = {
        kind: 'cluster',
        startup,
        options: { ...auth(common), ...(common.tls ? { tls: common.tls } : {}) },
      };
      keep('cluster');
      break;
    }
    case 'nodes': {
      const urls = (given?.value ?? '').split(',').map((u) => u.trim());
      if (urls.length < 3 || urls.length % 2 === 0) {
        throw usage(
          `${what}: quorum mode needs an odd number (3 or more; 3 or 5 in practice) of independent Redis masters, got ${urls.length}`,
        );
      }
      const nodes = urls.map((u, i) => parseRedisUrl(u, `${what} (node ${i + 1})`, common));
      const seen = new Set<string>();
      for (const n of nodes) {
        if (seen.has(n.label)) {
          throw usage(`${what}: ${n.label} is listed twice; quorum mode needs independent masters`);
        }
        seen.add(n.label);
      }
      topology = { kind: 'quorum', nodes };
      keep('nodes');
      break;
    }
  }
  return { topology, explicit: given !== undefined, env };
}

/** The address in words, for messages. */
export function describeTopology(t: Topology): string {
  switch (t.kind) {
    case 'redis':
      return `Redis at ${t.node.label}`;
    case 'sentinel':
      return `master ${JSON.stringify(t.master)} through the sentinels ${t.sentinels.map((s) => label(s.host, s.port)).join(', ')}`;
    case 'cluster':
      return `the Redis Cluster at ${t.startup.map((s) => label(s.host, s.port)).join(', ')}`;
    case 'quorum':
      return `${t.nodes.length} quorum nodes (${t.nodes.map((n) => n.label).join(', ')})`;
  }
}

/** What to check when the address does not answer. */
export function connectionHint(t: Topology): string {
  switch (t.kind) {
    case 'redis':
      return `Pass the address with --redis <url> or set REDIS_URL (default ${DEFAULT_REDIS_URL}).`;
    case 'sentinel':
      return 'Check --sentinel <host:port,…> and --master <name> (PAIRLOCK_SENTINEL, PAIRLOCK_MASTER).';
    case 'cluster':
      return 'Check --cluster <host:port,…> (PAIRLOCK_CLUSTER).';
    case 'quorum':
      return 'Check --nodes <url,url,url> (PAIRLOCK_NODES); a majority of the nodes must answer.';
  }
}

/** A Cluster client for the topology, with `extra` cluster options. */
export function clusterClient(
  t: Extract<Topology, { kind: 'cluster' }>,
  extra: { redisOptions?: RedisOptions } & Record<string, unknown> = {},
): Cluster {
  const { redisOptions, ...rest } = extra;
  return new Cluster(
    t.startup.map((s) => ({ ...s })),
    { ...rest, redisOptions: { ...t.options, ...redisOptions } },
  );
}

/**
 * The connection as PairedWorker options (`redis` or `nodes`), and how to close what was
 * made for it: the library closes clients it created from options, not a Cluster it was
 * given.
 */
export function workerConnection(spec: ConnectionSpec): {
  options: { redis: RedisConnection } | { nodes: RedisConnection[] };
  close(): Promise<void>;
} {
  const t = spec.topology;
  const none = async () => {};
  switch (t.kind) {
    case 'redis':
      return { options: { redis: t.node.options }, close: none };
    case 'sentinel':
      return { options: { redis: t.options }, close: none };
    case 'quorum':
      return { options: { nodes: t.nodes.map((n) => n.options) }, close: none };
    case 'cluster': {
      const cluster = clusterClient(t, {
        // fail fast; pairlock retries on its own terms
        enableOfflineQueue: false,
        redisOptions: { maxRetriesPerRequest: 0 },
      });
      cluster.on('error', () => {});
      return {
        options: { redis: cluster },
        close: () =>
          cluster.quit().then(
            () => {},
            () => cluster.disconnect(),
          ),
      };
    }
  }
}
