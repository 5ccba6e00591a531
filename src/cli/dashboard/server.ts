/**
 * The dashboard's HTTP server: Node's `http`, the static page from web/dashboard/, JSON
 * endpoints and one server-sent-events stream. Read-only: only GET and HEAD.
 *
 *   GET /                 the page (index.html, style.css, app.js and the modules it imports)
 *   GET /api/summary      workers, counts, census, rates and latencies
 *   GET /api/events       timeline entries after ?after=<seq>
 *   GET /api/running      running records by holder: ?limit=n&at=<session>:<offset>…
 *   GET /api/task         one record: ?id=<taskId>[&hash=<key>], as `pairlock inspect`, and
 *                         its attempts from the task history (`history`, as `pairlock
 *                         history <taskId>`); an unknown task is an answer too: 200 with
 *                         `found: false` (and the attempts the history still has)
 *   GET /api/tasks        drill-down: ?state=failed|done|released|running|takeovers
 *                         [&worker=<id>][&prefix=<task id prefix>][&limit=n], newest first
 *   GET /api/stream       server-sent events: `events` as they come (every 200 ms), `summary`
 *                         (without the series) every 500 ms and as soon as records moved,
 *                         `series` every second
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type CliConnection, describeTask, taskJson } from '../common.js';
import { packageRoot } from '../root.js';
import type { Collector, Health } from './collect.js';
import { redisProblem } from './health.js';
import { taskHistory } from './history.js';
import { type DashboardState, TIMELINE_SIZE } from './state.js';
import { type ListState, listStates, listTasks } from './tasks.js';

/** Open event streams at once; more are answered 503 (each costs a summary per second). */
const MAX_STREAMS = 32;
/** A stream whose client reads slower than this much buffered output is dropped. */
const MAX_BUFFERED = 1 << 20;
const TICK_MS = 200;
const SUMMARY_EVERY_MS = 500;
const SERIES_EVERY_MS = 1_000;
/** Events per stream message; a storm beyond it shows its latest ones (the counts stay exact). */
const EVENTS_PER_MESSAGE = 500;

export interface Credentials {
  user: string;
  password: string;
}

export interface ServerOptions {
  host: string;
  port: number;
  auth?: Credentials;
  conn: CliConnection;
  state: DashboardState;
  collector: Collector;
  feed: Health;
  hash?: string;
  /** SCAN COUNT hint of the drill-down lists. @default 500 */
  count?: number;
}

export interface DashboardServer {
  /** The page's address, e.g. http://127.0.0.1:7380/ */
  url: string;
  close(): Promise<void>;
}

const assetTypes: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'charts.js': 'text/javascript; charset=utf-8',
  'timeline.js': 'text/javascript; charset=utf-8',
  'util.js': 'text/javascript; charset=utf-8',
  'drill.js': 'text/javascript; charset=utf-8',
  'attempts.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

/** The page's folder: web/dashboard/ in the package root (from src/ through tsx, or from dist/). */
export function assetsDir(): string {
  const root = packageRoot();
  if (root === undefined) throw new Error('pairlock: cannot find the package root of pairlock');
  return join(root, 'web', 'dashboard');
}

function loadAssets(): Map<string, { type: string; body: Buffer }> {
  const dir = assetsDir();
  const out = new Map<string, { type: string; body: Buffer }>();
  for (const [name, type] of Object.entries(assetTypes)) {
    try {
      out.set(`/${name}`, { type, body: readFileSync(join(dir, name)) });
    } catch (err) {
      throw new Error(
        `pairlock: the dashboard page is missing (${join(dir, name)}: ${(err as Error).message})`,
      );
    }
  }
  const index = out.get('/index.html');
  if (index) out.set('/', index);
  return out;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The host name of a Host header, without the port (and without brackets for IPv6). */
function hostOf(header: string | undefined): string {
  if (!header) return '';
  if (header.startsWith('[')) return header.slice(1, header.indexOf(']'));
  const colon = header.lastIndexOf(':');
  return colon < 0 ? header : header.slice(0, colon);
}

const digest = (s: string) => createHash('sha256').update(s).digest();

function authorized(req: IncomingMessage, auth: Credentials | undefined): boolean {
  if (!auth) return true;
  const header = req.headers.authorization ?? '';
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return false;
  const given = Buffer.from(m[1] as string, 'base64').toString('utf8');
  // compare digests: equal length, constant time
  return timingSafeEqual(digest(given), digest(`${auth.user}:${auth.password}`));
}

const securityHeaders = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
};

function send(res: ServerResponse, status: number, body: unknown, extra = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    ...securityHeaders,
    ...extra,
  });
  res.end(res.req.method === 'HEAD' ? undefined : text);
}

/** What the page shows but the charts; `series()` is sent apart, less often. */
export function summary(o: ServerOptions) {
  const { state, collector, conn } = o;
  return {
    namespace: conn.opts.namespace,
    startedAt: state.startedAt,
    // the charts hold what the history had from here on (null: nothing before startedAt)
    historyFrom: state.historyFrom ?? null,
    hash: o.hash ?? null,
    where: conn.where,
    now: Date.now(),
    redis: collector.redis,
    feed: o.feed,
    counts: state.countsNow(),
    capped: state.isCapped,
    maxTasks: state.maxTasks,
    census: state.census,
    workers: state.workers(),
    lastSeq: state.lastSeq,
    timelineSize: TIMELINE_SIZE,
    version: state.version,
    warnings: state.warnings,
  };
}

function intParam(
  url: URL,
  name: string,
  dflt: number,
  min: number,
  max: number,
): number | { error: string } {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    return {
      error: `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`,
    };
  return n;
}

async function lookup(o: ServerOptions, url: URL, res: ServerResponse): Promise<void> {
  const id = url.searchParams.get('id') ?? '';
  const hash = url.searchParams.get('hash') || undefined;
  if (id === '') return send(res, 400, { error: 'id is required: /api/task?id=<taskId>' });
  let info: Awaited<ReturnType<typeof o.conn.inspector.inspect>>;
  try {
    info = await o.conn.inspector.inspect(id, hash === undefined ? {} : { hash: { key: hash } });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_INVALID_TASK_ID' || code === 'ERR_INVALID_OPTIONS')
      return send(res, 400, { error: (err as Error).message });
    return send(res, 503, { error: `cannot read the record: ${(err as Error).message}` });
  }
  // every attempt still in the history, even of a record whose retention ran out
  const past = await taskHistory(o.conn, id, hash, o.collector.serverOffsetMs);
  if (!info) {
    // an answer, not an error: a 404 would show as an error in the browser's console
    const where = hash === undefined ? '' : ` in hash ${JSON.stringify(hash)}`;
    return send(res, 200, {
      found: false,
      message: `no record of task ${JSON.stringify(id)}${where} in namespace ${JSON.stringify(o.conn.opts.namespace)} (never claimed, or its retention ran out)`,
      ...past,
    });
  }
  send(res, 200, {
    found: true,
    record: taskJson(info, hash),
    lines: describeTask(info, hash),
    ...past,
  });
}

/** The drill-down lists: records by state (read.ts, bounded by tasks.ts), or the kept takeovers. */
async function tasks(o: ServerOptions, url: URL, res: ServerResponse): Promise<void> {
  const limit = intParam(url, 'limit', 100, 1, 500);
  if (typeof limit !== 'number') return send(res, 400, limit);
  const state = url.searchParams.get('state') || undefined;
  const worker = url.searchParams.get('worker') || undefined;
  const prefix = url.searchParams.get('prefix') || undefined;
  if (state === 'takeovers')
    return send(res, 200, { state, ...o.state.takeovers({ limit, worker, prefix }) });
  if (state !== undefined && !(listStates as readonly string[]).includes(state))
    return send(res, 400, {
      error: `state must be one of ${[...listStates, 'takeovers'].join(', ')}, got ${JSON.stringify(state)}`,
    });
  try {
    const query = {
      state: state as ListState | undefined,
      worker,
      prefix,
      limit,
      hash: o.hash,
      count: o.count ?? 500,
    };
    const list = await listTasks(o.conn, query, (line) => o.state.warn(line));
    send(res, 200, { state: state ?? null, ...list });
  } catch (err) {
    send(res, 503, { error: `cannot read the records: ${redisProblem(err)}` });
  }
}

function running(o: ServerOptions, url: URL, res: ServerResponse): void {
  const limit = intParam(url, 'limit', 25, 1, 500);
  if (typeof limit !== 'number') {
    send(res, 400, limit);
    return;
  }
  const offsets = new Map<string, number>();
  for (const at of url.searchParams.getAll('at')) {
    const colon = at.lastIndexOf(':');
    const n = Number(at.slice(colon + 1));
    if (colon < 1 || !Number.isInteger(n) || n < 0) {
      send(res, 400, { error: `at must be <session>:<offset>, got ${JSON.stringify(at)}` });
      return;
    }
    offsets.set(at.slice(0, colon), n);
  }
  send(res, 200, o.state.running(limit, offsets));
}

interface Stream {
  res: ServerResponse;
  lastSeq: number;
}

export async function startServer(o: ServerOptions): Promise<DashboardServer> {
  const assets = loadAssets();
  const streams = new Set<Stream>();
  const loopbackOnly = isLoopback(o.host);

  const write = (s: Stream, chunk: string) => {
    if (s.res.writableLength > MAX_BUFFERED) {
      s.res.destroy();
      streams.delete(s);
      return;
    }
    s.res.write(chunk);
  };
  const pushEvents = (s: Stream) => {
    const items = o.state.events(s.lastSeq, EVENTS_PER_MESSAGE);
    const last = items[items.length - 1];
    if (!last) return;
    s.lastSeq = last.seq;
    write(s, `id: ${last.seq}\nevent: events\ndata: ${JSON.stringify(items)}\n\n`);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // a page bound to loopback answers only to loopback names: a web page elsewhere cannot
    // reach it through a DNS name that resolves to 127.0.0.1 (DNS rebinding)
    if (loopbackOnly && !isLoopback(hostOf(req.headers.host))) {
      return send(res, 403, { error: 'this dashboard answers only to localhost / 127.0.0.1' });
    }
    if (!authorized(req, o.auth)) {
      return send(
        res,
        401,
        { error: 'authentication required' },
        { 'www-authenticate': 'Basic realm="pairlock dashboard", charset="UTF-8"' },
      );
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, { error: 'read-only: GET only' }, { allow: 'GET, HEAD' });
    }
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const asset = assets.get(url.pathname);
    if (asset) {
      res.writeHead(200, {
        'content-type': asset.type,
        'cache-control': 'no-cache',
        ...securityHeaders,
      });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
      return;
    }
    switch (url.pathname) {
      case '/api/summary':
        return send(res, 200, { ...summary(o), series: o.state.seriesNow() });
      case '/api/events': {
        const after = intParam(url, 'after', 0, 0, Number.MAX_SAFE_INTEGER);
        if (typeof after !== 'number') return send(res, 400, after);
        return send(res, 200, o.state.events(after));
      }
      case '/api/running':
        return running(o, url, res);
      case '/api/task':
        return lookup(o, url, res);
      case '/api/tasks':
        return tasks(o, url, res);
      case '/api/stream': {
        if (streams.size >= MAX_STREAMS)
          return send(res, 503, { error: `at most ${MAX_STREAMS} open pages` });
        const after = Number(req.headers['last-event-id'] ?? url.searchParams.get('after') ?? 0);
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-store',
          connection: 'keep-alive',
          ...securityHeaders,
        });
        const s: Stream = { res, lastSeq: Number.isFinite(after) && after > 0 ? after : 0 };
        streams.add(s);
        req.on('close', () => streams.delete(s));
        write(s, `retry: 2000\nevent: summary\ndata: ${JSON.stringify(summary(o))}\n\n`);
        write(s, `event: series\ndata: ${JSON.stringify(o.state.seriesNow())}\n\n`);
        pushEvents(s);
        return;
      }
      default:
        return send(res, 404, { error: `no such page: ${url.pathname}` });
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, { error: (err as Error).message });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });

  // one tick: new events to every stream; the summary when records moved (so that the
  // page's lists and counts move with the events) or every SUMMARY_EVERY_MS; the series
  // every SERIES_EVERY_MS. Each is serialized once for all streams.
  let summaryAt = 0;
  let summaryVersion = -1;
  let seriesAt = 0;
  const tick = setInterval(() => {
    for (const s of streams) pushEvents(s);
    const now = Date.now();
    if (streams.size === 0) return;
    if (o.state.version !== summaryVersion || now - summaryAt >= SUMMARY_EVERY_MS) {
      summaryAt = now;
      summaryVersion = o.state.version;
      const chunk = `event: summary\ndata: ${JSON.stringify(summary(o))}\n\n`;
      for (const s of streams) write(s, chunk);
    }
    if (now - seriesAt >= SERIES_EVERY_MS) {
      seriesAt = now;
      const chunk = `event: series\ndata: ${JSON.stringify(o.state.seriesNow())}\n\n`;
      for (const s of streams) write(s, chunk);
    }
  }, TICK_MS);

  const addr = server.address() as AddressInfo;
  const hostPart = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${hostPart}:${addr.port}/`,
    close: async () => {
      clearInterval(tick);
      for (const s of streams) s.res.end();
      streams.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
