import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { checkConnection } from '../redis/connection.js';
import { ClosedError, InvalidOptionError, InvalidTaskIdError } from '../shared/errors.js';
import type { Logger } from '../shared/options.js';
import type { HandlerContext, Outcome, PairedWorker } from '../worker/worker.js';
import { sleep } from './shared.js';

/** One entry of a Redis stream, as a stream feed hands it to the handler. */
export interface StreamEntry {
  readonly stream: string;
  /** The entry id, e.g. `1718000000000-0`; the same on both sides of the pair. */
  readonly id: string;
  readonly fields: Readonly<Record<string, string>>;
}

export interface StreamFeedOptions<T> {
  /** The Redis holding the stream: an ioredis client (it is duplicated for the blocking reads), a URL or options. */
  readonly redis: Redis | Cluster | string | RedisOptions;
  /** The stream key. */
  readonly stream: string;
  /**
   * This side's consumer group. Each side of a pair needs its OWN group, so both sides
   * see every entry. @default `pairlock:<worker name>`
   */
  readonly group?: string;
  /**
   * The consumer within the group. Keep it stable across restarts: the entries a
   * consumer was given but did not acknowledge are read again when it comes back.
   * @default the worker name
   */
  readonly consumer?: string;
  /** Runs on the side that wins the entry's task. */
  readonly handler: (entry: StreamEntry, ctx: HandlerContext) => T | Promise<T>;
  /**
   * The task id of an entry; both sides must derive the same one.
   * @default `<stream>:<entry id>`
   */
  readonly taskId?: (entry: StreamEntry) => string;
  /** Keep the task records as fields of this hash (hash-field mode). */
  readonly hash?: { readonly key: string };
  /**
   * Where a new group starts: `$` (entries added from now on) or `0` (the whole stream).
   * A group that starts at `0` on a stream holding entries settled longer than
   * `retentionMs` ago runs those again.
   * @default '$'
   */
  readonly startId?: string;
  /** Entries asked for per read. @default 100 */
  readonly count?: number;
  /** Entries whose outcome is awaited at once; reading pauses beyond it. @default 100 */
  readonly maxInFlight?: number;
  /** How long one read blocks waiting for new entries. @default 2000 */
  readonly blockMs?: number;
  /** Every outcome, on both sides (role tells who ran it). */
  readonly onOutcome?: (outcome: Outcome<T>, entry: StreamEntry) => void;
  /** Faults: a failed read, a failed XACK, a run() that ended without an outcome. */
  readonly onError?: (error: Error, entry?: StreamEntry) => void;
  /** @default the worker's logger */
  readonly logger?: Logger;
}

export interface StreamFeedStats {
  /** Entries handed to run(). */
  read: number;
  /** Entries acknowledged after their outcome. */
  acked: number;
  /** Outcomes by role. */
  ran: number;
  watched: number;
  tookOver: number;
  /** Outcomes in state failed (acknowledged too: the failure is the outcome). */
  failed: number;
}

export interface StreamFeed {
  readonly group: string;
  readonly consumer: string;
  readonly stats: Readonly<StreamFeedStats>;
  /** Resolves when the feed stopped (after stop(), or after a fatal fault). */
  readonly stopped: Promise<void>;
  /**
   * Stop reading. With `drain` (default) wait for the outcomes of the entries in flight
   * (they are acknowledged); without, leave them pending: they are read again when the
   * feed starts again.
   */
  stop(opts?: { drain?: boolean }): Promise<void>;
}

type RawEntry = [string, string[] | null];
type RawReply = [string, RawEntry[]][] | null;

function fieldsOf(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i] as string] = flat[i + 1] as string;
  return out;
}

function positive(name: string, v: number | undefined, def: number): number {
  const n = v ?? def;
  if (!Number.isInteger(n) || n < 1) {
    throw new InvalidOptionError(
      `Expected \`${name}\` to be an integer >= 1, got \`${String(v)}\``,
    );
  }
  return n;
}

/**
 * Feed a worker from a Redis stream. Each side of the pair reads the stream through its
 * own consumer group, so both sides see every entry and race for it with `run()`; the
 * entry is acknowledged (XACK) only once its outcome is known, so an entry whose
 * outcome this side never learned (a crash, a restart) stays pending and is read again
 * (XREADGROUP from id 0) before new entries ('>'). The task record makes the second
 * reading harmless: a settled task is not run again while its record is retained.
 *
 * @example
 * const feed = streamFeed(worker, { redis, stream: 'orders', handler: (e) => ship(e.fields.order) });
 * // later
 * await feed.stop();
 */
export function streamFeed<T>(worker: PairedWorker, opts: StreamFeedOptions<T>): StreamFeed {
  if (typeof opts !== 'object' || opts === null)
    throw new InvalidOptionError('Expected stream feed options');
  if (typeof opts.stream !== 'string' || opts.stream === '') {
    throw new InvalidOptionError('Expected `stream` to be a non-empty string');
  }
  if (typeof opts.handler !== 'function')
    throw new InvalidOptionError('Expected `handler` to be a function');
  if (opts.redis === undefined)
    throw new InvalidOptionError('Expected `redis` (an ioredis client, a URL or options)');
  // no silent default: '' or {} would connect to 127.0.0.1:6379
  checkConnection('redis', opts.redis);
  const count = positive('count', opts.count, 100);
  const maxInFlight = positive('maxInFlight', opts.maxInFlight, 100);
  const blockMs = positive('blockMs', opts.blockMs, 2_000);
  const stream = opts.stream;
  const group = opts.group ?? `pairlock:${worker.options.name}`;
  const consumer = opts.consumer ?? worker.options.name;
  const startId = opts.startId ?? '$';
  const taskIdOf = opts.taskId ?? ((e: StreamEntry) => `${e.stream}:${e.id}`);
  const logger = opts.logger ?? worker.logger;
  const report = (error: Error, entry?: StreamEntry) => {
    if (opts.onError) {
      try {
        opts.onError(error, entry);
      } catch {
        // a faulty onError must not stop the feed
      }
    } else
      logger.warn({ err: error, stream, group, entry: entry?.id }, 'pairlock: stream feed fault');
  };

  // one connection for commands (XACK, XGROUP) and one for the blocking reads
  let owned: Redis | Cluster | undefined;
  let client: Redis | Cluster;
  if (opts.redis instanceof Redis || opts.redis instanceof Cluster) client = opts.redis;
  else {
    owned = typeof opts.redis === 'string' ? new Redis(opts.redis) : new Redis(opts.redis);
    client = owned;
  }
  const reader = client.duplicate() as Redis | Cluster;
  reader.on('error', () => {
    // reconnection is ioredis's job; a failed read is reported by the loop
  });

  const stats: StreamFeedStats = { read: 0, acked: 0, ran: 0, watched: 0, tookOver: 0, failed: 0 };
  const inFlight = new Map<string, Promise<void>>();
  const stopController = new AbortController();
  let drain = true;
  let slotFreed: (() => void) | undefined;
  const freeSlot = () => {
    const wake = slotFreed;
    slotFreed = undefined;
    wake?.();
  };
  stopController.signal.addEventListener('abort', freeSlot, { once: true });
  const waitForSlot = () =>
    new Promise<void>((resolve) => {
      slotFreed = resolve;
    });

  const ack = async (entry: StreamEntry) => {
    try {
      await client.xack(stream, group, entry.id);
      stats.acked += 1;
    } catch (err) {
      // left pending: read again after a restart, and then answered from the record
      report(err as Error, entry);
    }
  };

  const dispatch = (entry: StreamEntry) => {
    if (inFlight.has(entry.id)) return;
    stats.read += 1;
    let taskId: string;
    try {
      taskId = taskIdOf(entry);
    } catch (err) {
      report(err as Error, entry);
      return;
    }
    const p = worker
      .run(taskId, (ctx) => opts.handler(entry, ctx), opts.hash ? { hash: opts.hash } : {})
      .then(
        async (outcome) => {
          if (outcome.role === 'ran') stats.ran += 1;
          else if (outcome.role === 'took-over') stats.tookOver += 1;
          else stats.watched += 1;
          if (outcome.state === 'failed') stats.failed += 1;
          await ack(entry);
          try {
            opts.onOutcome?.(outcome, entry);
          } catch (err) {
            report(err as Error, entry);
          }
        },
        async (err: unknown) => {
          // an entry that can never become a task would be read again forever: drop it
          if (err instanceof InvalidTaskIdError) await ack(entry);
          if (!(err instanceof ClosedError && stopController.signal.aborted))
            report(err as Error, entry);
        },
      )
      .finally(() => {
        inFlight.delete(entry.id);
        freeSlot();
      });
    inFlight.set(entry.id, p);
  };

  const ensureGroup = async () => {
    try {
      await client.xgroup('CREATE', stream, group, startId, 'MKSTREAM');
    } catch (err) {
      if (!/BUSYGROUP/.test((err as Error).message)) throw err;
    }
  };

  const read = async (id: string, block: boolean, room: number): Promise<StreamEntry[]> => {
    const args: (string | number)[] = ['GROUP', group, consumer, 'COUNT', room];
    if (block) args.push('BLOCK', blockMs);
    args.push('STREAMS', stream, id);
    const reply = (await reader.call('XREADGROUP', ...args)) as RawReply;
    const out: StreamEntry[] = [];
    for (const [, entries] of reply ?? []) {
      for (const [entryId, flat] of entries) {
        if (flat === null) {
          // pending, but deleted from the stream (XDEL, trimming): nothing left to run
          await client.xack(stream, group, entryId).catch(() => {});
          continue;
        }
        out.push({ stream, id: entryId, fields: fieldsOf(flat) });
      }
    }
    return out;
  };

  const loop = async () => {
    const signal = stopController.signal;
    let backoff = 100;
    // first what this consumer was given and never acknowledged, then new entries
    let pendingFrom: string | undefined = '0';
    let grouped = false;
    while (!signal.aborted) {
      if (inFlight.size >= maxInFlight) {
        await waitForSlot();
        continue;
      }
      try {
        if (!grouped) {
          await worker.start();
          await ensureGroup();
          grouped = true;
        }
        const room = Math.min(count, maxInFlight - inFlight.size);
        if (pendingFrom !== undefined) {
          const entries = await read(pendingFrom, false, room);
          if (signal.aborted) break;
          const last = entries[entries.length - 1];
          if (last === undefined) pendingFrom = undefined;
          else {
            pendingFrom = last.id;
            for (const e of entries) dispatch(e);
          }
        } else {
          const entries = await read('>', true, room);
          if (signal.aborted) break;
          for (const e of entries) dispatch(e);
        }
        backoff = 100;
      } catch (err) {
        if (signal.aborted) break;
        if (err instanceof ClosedError) {
          report(err);
          break;
        }
        if (/NOGROUP/.test((err as Error).message)) grouped = false;
        report(err as Error);
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, 5_000);
        // whatever was delivered but lost on the way is pending: read it again
        pendingFrom = '0';
      }
    }
  };

  const stopped = loop()
    .catch((err: unknown) => report(err as Error))
    .then(async () => {
      if (drain) await Promise.allSettled([...inFlight.values()]);
      reader.disconnect();
      if (owned) await owned.quit().catch(() => owned?.disconnect());
    });

  return {
    group,
    consumer,
    stats,
    stopped,
    async stop(o: { drain?: boolean } = {}) {
      drain = o.drain ?? true;
      if (!stopController.signal.aborted) {
        stopController.abort();
        // cut a blocked XREADGROUP short; entries it may have been given stay pending
        reader.disconnect();
      }
      await stopped;
    },
  };
}
