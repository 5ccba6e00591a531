/**
 * The dashboard's reads of Redis, each bounded:
 *
 * - twice a second, one pipeline per node: `TIME` and the `PTTL` of each known session
 *   (O(workers)), so that a TTL bar follows even a short session TTL; on the first node
 *   also its description (`GET`, a few bytes), for what it says of the worker (`paused`);
 * - every 5 s (or 10 × the last scan's duration, if longer), and when an event names a
 *   session it does not know, a `SCAN` of the session keys (`liveSessions`, as `pairlock stats`);
 * - a census of the records (`records`, as `pairlock list`: SCAN pages, each record
 *   decoded by the `inspect` script), paced: after each page it waits as long as the page
 *   took, and the next census starts after 4 × the last one's duration (at least
 *   `censusEveryMs`), so on a large namespace it costs Redis a small share of its time;
 * - after a grant event, the record of that task (for its deadline and progress), at most
 *   ENRICH_BATCH a quarter second; the rest waits for the census.
 *
 * Nothing is written but the watch flag (subscribeNamespace).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { CliConnection } from '../common.js';
import { records } from '../read.js';
import { liveSessions } from '../stats.js';
import { redisProblem } from './health.js';
import type { SessionDesc } from './sessions.js';
import { type CensusResult, type DashboardState, entryOf } from './state.js';

const ENRICH_BATCH = 100;
const ENRICH_QUEUE_MAX = 1_000;

export interface CollectorOptions {
  /** Census of the fields of this hash instead of plain records. */
  hash?: string;
  /** SCAN COUNT hint. */
  count: number;
  /** TTL readings of known sessions. @default 500 */
  readEveryMs?: number;
  /** Scan for sessions. @default 5000 */
  discoverEveryMs?: number;
  /** Shortest time between two censuses. @default 2000 */
  censusEveryMs?: number;
}

export interface Health {
  ok: boolean;
  /** Local ms of the last change of `ok`. */
  since: number;
  /** What went wrong, in plain words (health.ts). */
  error?: string;
}

/** What a session's description says of its worker beyond its identity; undefined if unreadable. */
export function descOf(value: unknown): SessionDesc | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    const d = JSON.parse(value) as { paused?: unknown };
    return { paused: d.paused === true };
  } catch {
    return undefined;
  }
}

export class Collector {
  /** Server clock minus local clock (ms), from `TIME`. */
  serverOffsetMs = 0;
  readonly redis: Health = { ok: true, since: Date.now() };
  private readonly abort = new AbortController();
  private readonly enrichQueue = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private discovering: Promise<void> | undefined;
  private lastDiscovery = 0;
  private lastDiscoveryMs = 0;
  private discoverSoon: NodeJS.Timeout | undefined;
  private census: Promise<void> | undefined;
  private readonly opts: Required<Omit<CollectorOptions, 'hash'>> & { hash?: string };

  constructor(
    private readonly conn: CliConnection,
    private readonly state: DashboardState,
    opts: CollectorOptions,
  ) {
    this.opts = { readEveryMs: 500, discoverEveryMs: 5_000, censusEveryMs: 2_000, ...opts };
  }

  /** First reads (so the page opens on data), then the timers. */
  async start(): Promise<void> {
    await this.discover();
    await this.readTtls();
    const every = (ms: number, fn: () => Promise<void>) => {
      let busy = false;
      const t = setInterval(() => {
        if (busy) return;
        busy = true;
        fn().finally(() => {
          busy = false;
        });
      }, ms);
      this.timers.push(t);
    };
    every(this.opts.readEveryMs, () => this.readTtls());
    // a scan of a large keyspace takes longer: scan at most a tenth of the time
    every(this.opts.discoverEveryMs, () =>
      Date.now() - this.lastDiscovery >= 10 * this.lastDiscoveryMs
        ? this.discover()
        : Promise.resolve(),
    );
    every(250, () => this.enrich());
    this.census = this.censusLoop();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.discoverSoon);
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.census?.catch(() => {});
    await this.discovering?.catch(() => {});
  }

  private healthy(): void {
    if (!this.redis.ok) Object.assign(this.redis, { ok: true, since: Date.now() });
    delete this.redis.error;
  }

  private failed(err: unknown): void {
    if (this.redis.ok) Object.assign(this.redis, { ok: false, since: Date.now() });
    this.redis.error = redisProblem(err);
  }

  /** A session named by an event is unknown: scan for sessions soon (at most twice a second). */
  sessionSeen(session: string): void {
    if (this.state.sessions.has(session) || this.discovering || this.discoverSoon) return;
    const wait = Math.max(0, this.lastDiscovery + 500 - Date.now());
    this.discoverSoon = setTimeout(() => {
      this.discoverSoon = undefined;
      if (!this.abort.signal.aborted) void this.discover();
    }, wait);
    this.discoverSoon.unref();
  }

  /** A grant seen in an event: read its record for the deadline and progress. */
  granted(ref: string): void {
    if (this.enrichQueue.size < ENRICH_QUEUE_MAX) this.enrichQueue.add(ref);
  }

  private discover(): Promise<void> {
    this.discovering ??= (async () => {
      try {
        this.lastDiscovery = Date.now();
        const found = await liveSessions(this.conn, this.opts.count);
        this.lastDiscoveryMs = Date.now() - this.lastDiscovery;
        this.state.sessions.discover(found, Date.now());
        this.healthy();
      } catch (err) {
        this.failed(err);
      } finally {
        this.discovering = undefined;
      }
    })();
    return this.discovering;
  }

  /**
   * The TTL of each known session, read on every node that answered at start (one node
   * outside quorum mode). In quorum mode a session lives while a majority holds it, and
   * its TTL is the one a majority still reaches, as `liveSessions` decides.
   */
  private async readTtls(): Promise<void> {
    const sessions = this.state.sessions.live();
    const nodes = this.conn.upNodes;
    const sent = Date.now();
    try {
      const replies = await Promise.all(
        nodes.map((n, i) => {
          const pipe = n.client.pipeline();
          if (i === 0) pipe.time();
          for (const s of sessions) pipe.pttl(this.conn.keys.session(s));
          if (i === 0) for (const s of sessions) pipe.get(this.conn.keys.session(s));
          // a quorum node may be away: the others decide, as for the workers
          return pipe.exec().then(
            (r) => r ?? [],
            (err: unknown) => (nodes.length > 1 ? null : Promise.reject(err)),
          );
        }),
      );
      if (replies.every((r) => r === null)) throw new Error('no node answered');
      const received = Date.now();
      // the readings were taken between sending and receiving
      const at = Math.round((sent + received) / 2);
      const first = replies[0] ?? [];
      if (first[0]?.[0]) throw first[0][0];
      const time = first[0]?.[1] as [string, string] | undefined;
      if (time) {
        const serverMs = Number(time[0]) * 1_000 + Math.floor(Number(time[1]) / 1_000);
        this.serverOffsetMs = serverMs - at;
      }
      const values: [string, number, SessionDesc?][] = [];
      const descAt = 1 + sessions.length;
      sessions.forEach((s, k) => {
        const ttls: number[] = [];
        let answered = 0;
        replies.forEach((r, i) => {
          if (r === null) return;
          const [err, pttl] = r[k + (i === 0 ? 1 : 0)] ?? [new Error('no reply')];
          if (err) return;
          answered += 1;
          if (Number(pttl) >= 0) ttls.push(Number(pttl));
        });
        if (answered < this.conn.majority) return; // too few answers to say
        ttls.sort((a, b) => b - a);
        const desc = replies[0]?.[descAt + k];
        values.push([
          s,
          ttls.length >= this.conn.majority ? (ttls[this.conn.majority - 1] ?? -2) : -2,
          desc && !desc[0] ? descOf(desc[1]) : undefined,
        ]);
      });
      this.state.sessions.readings(values, at);
      this.healthy();
    } catch (err) {
      this.failed(err);
    }
  }

  private async enrich(): Promise<void> {
    const refs = [...this.enrichQueue].slice(0, ENRICH_BATCH);
    for (const r of refs) this.enrichQueue.delete(r);
    await Promise.all(
      refs.map(async (ref) => {
        const e = this.state.entry(ref);
        if (!e) return;
        try {
          const info = await this.conn.inspector.inspect(
            e.task,
            e.hash === undefined ? {} : { hash: { key: e.hash } },
          );
          if (info?.state === 'running')
            this.state.enrich(entryOf(info, ref, e.hash, Date.now(), this.serverOffsetMs));
        } catch {
          // the census reads it again
        }
      }),
    );
  }

  private async censusLoop(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      let took = 0;
      try {
        took = await this.runCensus();
        this.healthy();
      } catch (err) {
        if (signal.aborted) return;
        this.state.failCensus(err as Error);
        this.failed(err);
      }
      try {
        await sleep(Math.max(this.opts.censusEveryMs, 4 * took), undefined, { signal });
      } catch {
        return; // stopped
      }
    }
  }

  /** One census; resolves to how long it took. */
  private async runCensus(): Promise<number> {
    const signal = this.abort.signal;
    const { hash } = this.opts;
    const startedAt = Date.now();
    this.state.beginCensus();
    const r: CensusResult = {
      startedAt,
      durationMs: 0,
      counts: { total: 0, running: 0, done: 0, failed: 0, released: 0 },
      holders: new Map(),
      entries: [],
      capped: false,
    };
    let pageStart = Date.now();
    const pace = async () => {
      // as long as the page took: the census keeps Redis busy at most half the time
      await sleep(Math.min(1_000, Date.now() - pageStart), undefined, { signal });
      pageStart = Date.now();
    };
    const warn = (line: string) => this.state.warn(line);
    for await (const info of records(this.conn, { hash, count: this.opts.count, pace }, warn)) {
      r.counts.total += 1;
      r.counts[info.state] += 1;
      if (info.state !== 'running') continue;
      r.holders.set(info.session, (r.holders.get(info.session) ?? 0) + 1);
      if (r.entries.length >= this.state.maxTasks) {
        r.capped = true;
        continue;
      }
      const ref = this.conn.keys.task(info.taskId, hash).ref;
      r.entries.push(entryOf(info, ref, hash, Date.now(), this.serverOffsetMs));
    }
    r.durationMs = Date.now() - startedAt;
    this.state.finishCensus(r);
    return r.durationMs;
  }
}
