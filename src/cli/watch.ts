import type { Command } from 'commander';
import { Cluster, type Redis } from 'ioredis';
import { parseTaskRef } from '../redis/keys.js';
import { workerOf } from '../redis/store.js';
import { grantKinds } from '../shared/codes.js';
import { type NamespaceEvent, parseNamespaceMessage } from '../shared/events.js';
import { CliConnection, type GlobalOptions, type Io, printable } from './common.js';
import { type EventSubscription, subscribeEvents } from './events.js';

export interface WatchOptions {
  json?: boolean;
}

/** A namespace event, decoded for people and scripts. */
export interface WatchEvent {
  /** Local time the event was received (ISO 8601). */
  time: string;
  /**
   * claimed (fresh grant), took-over (from another worker), reclaimed (a worker took its
   * own task back after losing its lease), done, failed, released; while watched also
   * standby and rejected
   */
  event:
    | 'claimed'
    | 'took-over'
    | 'reclaimed'
    | 'done'
    | 'failed'
    | 'released'
    | 'standby'
    | 'rejected'
    | string;
  task: string;
  /** The hash, for a task kept as a hash field. */
  hash?: string;
  state: 'running' | 'done' | 'failed' | 'released' | string;
  token: number;
  attempt: number;
  /** Worker id of the owner after the transition (session without `#epoch`). */
  worker: string;
  session: string;
  /** How a grant came about (claimed, took-over). */
  kind?: string;
  /** The previous owner's worker id (took-over). */
  from?: string;
  /** standby: the worker now covering the owner. */
  by?: string;
  /** rejected: why Redis refused the late settle. */
  reason?: string;
}

const rejectReasonOf: Record<number, string> = {
  [-12]: 'token superseded',
  [-14]: 'session expired',
  [-15]: 'deadline passed',
};

const stateNames: Record<string, string> = { R: 'running', D: 'done', F: 'failed', X: 'released' };

/** A task ref (keys.ts) back to its task id and hash. */
export function parseRef(ref: string): { task: string; hash?: string } {
  const { taskId, hashKey } = parseTaskRef(ref);
  return hashKey === undefined ? { task: taskId } : { hash: hashKey, task: taskId };
}

export function decodeEvent(ev: NamespaceEvent, receivedAt: number): WatchEvent {
  const { task, hash } = parseRef(String(ev.r));
  const state = stateNames[ev.s] ?? String(ev.s);
  let event: string = ev.e;
  let kind: string | undefined;
  if (ev.e === 'claimed') {
    kind = grantKinds[Number(ev.kind ?? 0)] ?? String(ev.kind);
    // a worker taking back its own task is neither a peer's takeover nor a fresh claim
    if (kind === 'reclaimed') event = 'reclaimed';
    else if (kind !== 'fresh') event = 'took-over';
  } else if (ev.e === 'settled') {
    event = state;
  }
  const out: WatchEvent = {
    time: new Date(receivedAt).toISOString(),
    event,
    task,
    state,
    token: Number(ev.k),
    attempt: Number(ev.a),
    worker: workerOf(String(ev.o)),
    session: String(ev.o),
  };
  if (hash !== undefined) out.hash = hash;
  if (kind !== undefined) out.kind = kind;
  if (ev.from) out.from = workerOf(String(ev.from));
  if (ev.by) out.by = workerOf(String(ev.by));
  if (ev.why !== undefined) out.reason = rejectReasonOf[Number(ev.why)] ?? String(ev.why);
  return out;
}

/** One readable line per event (task ids and names with their control characters escaped). */
export function formatEvent(w: WatchEvent): string {
  const task = w.hash === undefined ? w.task : `${w.task} (hash ${w.hash})`;
  let tail = '';
  if (w.event === 'claimed') tail = '';
  else if (w.event === 'took-over') tail = `  from ${w.from ?? '?'} (${w.kind})`;
  else if (w.event === 'standby') tail = `  covered by ${w.by ?? '?'}`;
  else if (w.event === 'rejected') tail = `  late settle refused: ${w.reason} (lease lost)`;
  return printable(
    `${w.time}  ${w.event.padEnd(9)}  ${task}  token ${w.token}  attempt ${w.attempt}  by ${w.worker}${tail}`,
  );
}

/** While a watch runs it keeps this flag alive; claim scripts publish fresh claims only then. */
const WATCH_FLAG_TTL_MS = 30_000;

/**
 * The CLI's clients give up after a few failed attempts (a one-shot command must answer);
 * a command that runs for hours (watch, dashboard) must come back after a Redis restart.
 */
export function keepReconnecting(client: Redis | Cluster): void {
  const backoff = (times: number) => Math.min(100 * times, 2_000);
  if (client instanceof Cluster) client.options.clusterRetryStrategy = backoff;
  else {
    client.options.retryStrategy = backoff;
    client.options.sentinelRetryStrategy = backoff;
  }
}

export interface NamespaceFeedHandlers {
  /** Every event of the namespace (and, while the flag is kept, fresh claims and standbys). */
  onEvent(ev: NamespaceEvent, receivedAt: number): void;
  /** A subscriber lost or regained its connection (`up`); events in between were not seen. */
  status(line: string, up: boolean): void;
}

export interface NamespaceFeed {
  /** Where the events are read, for messages. */
  readonly where: string;
  /** Stop keeping the flag and close the subscribers. */
  close(): void;
}

/**
 * Subscribe to the namespace's events and keep the watch flag alive on every node, so that
 * claim scripts publish fresh claims, standbys and refused settles too (`pairlock watch`,
 * `pairlock dashboard`). The flag is the only key this writes. The command clients are
 * kept reconnecting, and set the flag again as soon as they are back (a restarted Redis has
 * lost it). Pub/sub is at-most-once: events published while a subscriber is down are not seen.
 */
export async function subscribeNamespace(
  conn: CliConnection,
  h: NamespaceFeedHandlers,
): Promise<NamespaceFeed> {
  const { channel } = conn.keys;
  const flagKey = `${channel}:watching`;
  // on every node: each one's claim script reads its own copy of the flag
  const keepFlag = () =>
    Promise.all(
      conn.nodes.map((n) =>
        n.client.set(flagKey, '1', 'PX', WATCH_FLAG_TTL_MS).catch((err: unknown) => {
          if (conn.topology.kind !== 'quorum') throw err;
        }),
      ),
    );
  let sub: EventSubscription | undefined;
  await conn.guard(async () => {
    // fresh claims travel on a side channel of their own, and only while a watcher
    // keeps the flag key alive (workers do not need them)
    sub = await subscribeEvents(conn, [channel, `${channel}:claims`], {
      message: (msg) => {
        const at = Date.now();
        for (const ev of parseNamespaceMessage(msg)) h.onEvent(ev, at);
      },
      status: h.status,
    });
    try {
      await keepFlag();
    } catch (err) {
      sub.close();
      throw err;
    }
  });
  const setFlag = () => void keepFlag().catch(() => {});
  for (const n of conn.nodes) {
    keepReconnecting(n.client);
    n.client.on('ready', setFlag);
  }
  const flag = setInterval(setFlag, WATCH_FLAG_TTL_MS / 3);
  const opened = sub as EventSubscription | undefined;
  return {
    where: opened?.where ?? conn.where,
    close() {
      clearInterval(flag);
      for (const n of conn.nodes) n.client.off('ready', setFlag);
      opened?.close();
    },
  };
}

/**
 * `pairlock watch`: print every event of the namespace channel until SIGINT/SIGTERM
 * (or until `stop` resolves, for embedding). Pub/sub is at-most-once: events published
 * while the connection is down are not shown; the gap is reported.
 */
export async function watchCommand(
  opts: WatchOptions,
  g: GlobalOptions,
  io: Io,
  stop?: Promise<unknown>,
): Promise<void> {
  const conn = await CliConnection.open(g, io.err);
  let feed: NamespaceFeed | undefined;
  // listening before anything is printed: a signal sent on seeing the first line is caught
  const stopping = untilStopped(stop);
  try {
    feed = await subscribeNamespace(conn, {
      onEvent: (ev, receivedAt) => {
        const w = decodeEvent(ev, receivedAt);
        io.out(opts.json ? JSON.stringify(w) : formatEvent(w));
      },
      status: (line) => io.err(printable(line)),
    });
    io.err(printable(`watching ${conn.keys.channel} on ${feed.where} (Ctrl-C to stop)`));
    await stopping.until;
  } finally {
    stopping.dispose();
    feed?.close();
    await conn.close();
  }
}

/**
 * SIGINT, SIGTERM or `stop` settling (for embedding). Listens from the call on, so a signal
 * sent as soon as the command printed its first line is caught.
 */
export function untilStopped(stop?: Promise<unknown>): {
  until: Promise<void>;
  dispose(): void;
} {
  let stopped!: () => void;
  const until = new Promise<void>((resolve) => {
    stopped = resolve;
  });
  const done = () => stopped();
  process.once('SIGINT', done);
  process.once('SIGTERM', done);
  stop?.then(done, done);
  return {
    until,
    dispose() {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
    },
  };
}

export function registerWatch(program: Command, globals: () => GlobalOptions, io: Io): void {
  program
    .command('watch')
    .description(
      'print claims, takeovers, settles and releases of the namespace as they happen, until Ctrl-C',
    )
    .option('--json', 'print one JSON object per line')
    .action((opts: WatchOptions) => watchCommand(opts, globals(), io));
}
