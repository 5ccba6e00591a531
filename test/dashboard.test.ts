/**
 * `pairlock dashboard`: its JSON and server-sent-events endpoints against a real pair,
 * its bounds (counts of every running record, detail up to --max-tasks, paged lists),
 * its authentication, and its command line. The page in a browser: dashboard-browser.test.ts.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import type { SeriesSnapshot } from '../src/cli/dashboard/series.js';
import type { summary } from '../src/cli/dashboard/server.js';
import type { DashboardState, TimelineItem } from '../src/cli/dashboard/state.js';
import { main } from '../src/cli/program.js';
import { RedisServer, redisServerAvailable, startIndependent } from '../src/testing/index.js';
import { PairedWorker } from '../src/worker/worker.js';
import { type Dashboard, SseReader, startDashboard, until } from './support/dashboard.js';
import { useRedisPair } from './support/redis-pair.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const pair = useRedisPair();

type Summary = ReturnType<typeof summary> & { series: SeriesSnapshot };
type Running = ReturnType<DashboardState['running']>;
/** Error answers carry `error`; the rest are typed by the caller. */
type Answer<T> = T & { error?: string };

/** A GET with a Host header of our choosing (fetch sends its own). */
function statusWithHost(url: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

async function getJson<T = Record<string, unknown>>(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Answer<T> }> {
  const res = await fetch(url, { headers });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Answer<T> };
}

/** A handler that runs until `release()` is called. */
function gate() {
  let release!: () => void;
  let started!: () => void;
  const open = new Promise<void>((r) => {
    release = r;
  });
  const running = new Promise<void>((r) => {
    started = r;
  });
  return {
    release,
    running,
    handler: async () => {
      started();
      await open;
      return 'ok';
    },
  };
}

async function withDashboard<T>(
  ns: string,
  extra: Parameters<typeof startDashboard>[2],
  fn: (d: Dashboard) => Promise<T>,
): Promise<T> {
  const d = await startDashboard(pair.url, ns, extra);
  try {
    return await fn(d);
  } finally {
    await d.stop();
  }
}

describe('pairlock dashboard: the server', () => {
  it('serves the page and its assets, only to GET, only under a loopback name', async () => {
    await withDashboard(pair.namespace('dash'), {}, async (d) => {
      const page = await fetch(d.url);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toMatch(/^text\/html/);
      expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
      expect(await page.text()).toContain('<title>pairlock dashboard</title>');
      const js = await fetch(`${d.url}app.js`);
      expect(js.headers.get('content-type')).toMatch(/^text\/javascript/);
      expect(await js.text()).toContain("new EventSource('/api/stream')");
      expect((await fetch(`${d.url}style.css`)).headers.get('content-type')).toMatch(/^text\/css/);
      expect((await fetch(`${d.url}../package.json`)).status).toBe(404);
      expect((await fetch(`${d.url}nothing-here`)).status).toBe(404);
      const post = await fetch(`${d.url}api/summary`, { method: 'POST', body: '{}' });
      expect(post.status).toBe(405);
      expect(post.headers.get('allow')).toBe('GET, HEAD');
      // a DNS name that resolves to 127.0.0.1 is not this page's name
      expect(await statusWithHost(`${d.url}api/summary`, 'attacker.example:80')).toBe(403);
      expect(await statusWithHost(`${d.url}api/summary`, `localhost:${new URL(d.url).port}`)).toBe(
        200,
      );
      expect(await statusWithHost(`${d.url}api/summary`, '[::1]')).toBe(200);
    });
  });

  it('shows workers, the running task by holder, the record, and streams the handover as it happens', async () => {
    const ns = pair.namespace('dash');
    await withDashboard(ns, {}, async (d) => {
      const stream = new SseReader(`${d.url}api/stream`);
      expect(await stream.status).toBe(200);
      const a = pair.worker(ns, 'alpha');
      const b = pair.worker(ns, 'beta');
      await Promise.all([a.start(), b.start()]);
      const g = gate();
      const ranA = a.run('job-1', g.handler).catch((err: unknown) => err);
      await g.running;
      const ranB = b.run('job-1', async () => 'taken over');
      await until(
        () => stream.events().find((e) => e.event === 'standby' && e.task === 'job-1'),
        'the standby event',
      );

      const s = await until(async () => {
        const { body } = await getJson<Summary>(`${d.url}api/summary`);
        return body.workers.length === 2 && body.counts.running === 1 ? body : undefined;
      }, 'both workers and one running task in the summary');
      expect(s.namespace).toBe(ns);
      expect(s.redis.ok).toBe(true);
      const rowA = s.workers.find((w) => w.worker === a.id)!;
      expect(rowA).toMatchObject({ session: a.session, holds: 1 });
      expect(rowA.ttlMs).toBeGreaterThan(0);
      expect(rowA.ttlMs).toBeLessThanOrEqual(2_000);
      expect(s.workers.find((w) => w.worker === b.id)).toMatchObject({ holds: 0 });

      const running = await getJson<Running>(`${d.url}api/running`);
      expect(running.status).toBe(200);
      expect(running.body.groups).toHaveLength(1);
      expect(running.body.groups[0]).toMatchObject({
        session: a.session,
        worker: a.id,
        alive: true,
        count: 1,
        held: 1,
      });
      expect(running.body.groups[0]?.items[0]).toMatchObject({
        task: 'job-1',
        token: 1,
        attempt: 1,
      });

      const rec = await getJson<{ record: Record<string, unknown>; lines: string[] }>(
        `${d.url}api/task?id=job-1`,
      );
      expect(rec.status).toBe(200);
      expect(rec.body.record).toMatchObject({ taskId: 'job-1', state: 'running', worker: a.id });
      expect(rec.body.lines).toContain('state:       running');
      // an unknown task is an answer, not an error (a 404 shows as an error in the console)
      const missing = await getJson<{ found: boolean; message: string }>(
        `${d.url}api/task?id=no-such-task`,
      );
      expect(missing.status).toBe(200);
      expect(missing.body.found).toBe(false);
      expect(missing.body.message).toContain('no record of task "no-such-task"');
      expect(rec.body).toMatchObject({ found: true });
      expect((await getJson(`${d.url}api/task`)).status).toBe(400);
      const tooLong = await getJson(`${d.url}api/task?id=${'x'.repeat(2_000)}`);
      expect(tooLong.status).toBe(400);
      expect((await getJson(`${d.url}api/running?limit=0`)).body.error).toContain('limit');
      expect((await getJson(`${d.url}api/running?at=nonsense`)).status).toBe(400);
      expect((await getJson(`${d.url}api/events?after=-1`)).status).toBe(400);

      // alpha leaves with a handover: beta takes the task over at once and settles it
      await a.close({ handover: true });
      expect(await ranA).toMatchObject({ code: 'ERR_CLOSED' });
      expect(await ranB).toMatchObject({ state: 'done', role: 'took-over' });
      const took = await until(
        () => stream.events().find((e) => e.event === 'took-over' && e.task === 'job-1'),
        'the takeover on the stream',
      );
      expect(took).toMatchObject({ kind: 'handover', worker: b.id, from: a.id, token: 2 });
      // the settle's event may come a moment after the grant's (the stream is not a reply)
      await until(
        () => stream.events().find((e) => e.event === 'done' && e.task === 'job-1'),
        'the outcome on the stream',
      );
      const kinds = stream.events().map((e) => e.event);
      expect(kinds).toEqual(expect.arrayContaining(['claimed', 'standby', 'took-over', 'done']));
      expect(kinds.indexOf('claimed')).toBeLessThan(kinds.indexOf('took-over'));
      expect(stream.messages[0]?.event).toBe('summary');

      const after = await until(async () => {
        const { body } = await getJson<Summary>(`${d.url}api/summary`);
        const gone = body.workers.find((w) => w.worker === a.id)?.gone;
        return gone && body.counts.running === 0 ? body : undefined;
      }, 'alpha marked gone and nothing running');
      expect(after.workers.find((w) => w.worker === a.id)?.gone?.reason).toBe('closed');
      expect(after.counts).toMatchObject({ running: 0, done: 1 });
      expect(after.series.takeoverKinds).toEqual({ handover: 1 });
      expect(after.series.latency.samples).toBe(1);
      expect((await getJson<Running>(`${d.url}api/running`)).body.groups).toEqual([]);
      const timeline = (await getJson<TimelineItem[]>(`${d.url}api/events`)).body;
      expect(timeline.map((e) => e.event)).toEqual(expect.arrayContaining(['session-gone']));
      const tail = (
        await getJson<TimelineItem[]>(`${d.url}api/events?after=${timeline.at(-2)?.seq}`)
      ).body;
      expect(tail).toEqual([timeline.at(-1)]);
      stream.close();
    });
  });

  it('counts every running record, keeps the detail of --max-tasks of them and pages the lists', async () => {
    const ns = pair.namespace('dash');
    const holder = pair.worker(ns, 'holder');
    const g = gate();
    const ids = Array.from({ length: 30 }, (_, i) => `t-${String(i).padStart(2, '0')}`);
    const runs = ids.map((id) => holder.run(id, g.handler));
    await until(
      async () => ((await holder.inspect('t-29'))?.state === 'running' ? true : undefined),
      'all running',
    );
    try {
      await withDashboard(ns, { maxTasks: 20, count: 7 }, async (d) => {
        const s = await until(async () => {
          const { body } = await getJson<Summary>(`${d.url}api/summary`);
          return body.census.at ? body : undefined;
        }, 'the first census');
        expect(s.counts).toMatchObject({ total: 30, running: 30, orphaned: 0 });
        expect(s.capped).toBe(true);
        expect(s.workers[0]).toMatchObject({ worker: holder.id, holds: 30 });

        const first = (await getJson<Running>(`${d.url}api/running?limit=8`)).body;
        expect(first).toMatchObject({ capped: true, maxTasks: 20, moreGroups: 0 });
        const group = first.groups[0]!;
        expect(group).toMatchObject({ count: 30, held: 20, offset: 0 });
        expect(group.items).toHaveLength(8);
        const names = group.items.map((i) => i.task);
        expect(names).toEqual([...names].sort());
        const page = (
          await getJson<Running>(
            `${d.url}api/running?limit=8&at=${encodeURIComponent(`${holder.session}:16`)}`,
          )
        ).body.groups[0]!;
        expect(page.offset).toBe(16);
        expect(page.items).toHaveLength(4); // 20 held in detail: 16..19
        const seen = new Set([...names, ...page.items.map((i) => i.task)]);
        expect(seen.size).toBe(12);
      });
    } finally {
      g.release();
      await Promise.all(runs);
    }
  });

  it('comes back after Redis restarts: reads again, and sets the watch flag again at once', async () => {
    const own = await RedisServer.start();
    const probe = new Redis(own.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    const ns = 'restart';
    const flag = `pairlock:{${ns}}:events:watching`;
    try {
      await withDashboard(ns, { redis: own.url }, async (d) => {
        await probe.connect();
        expect(await probe.pttl(flag)).toBeGreaterThan(0);
        probe.disconnect();
        await own.kill();
        const down = await until(async () => {
          const { body } = await getJson<Summary>(`${d.url}api/summary`);
          return body.redis.ok || body.feed.ok || !body.census.error ? undefined : body;
        }, 'the page to say Redis is unreachable');
        // in plain words, not the client library's internals ("Stream isn't writeable…")
        const internals =
          /Stream isn't writeable|enableOfflineQueue|maxRetriesPerRequest|Connection is closed/;
        expect(down.redis.error).toMatch(/^no connection to Redis/);
        for (const said of [down.redis.error, down.feed.error, down.census.error])
          expect(said ?? '').not.toMatch(internals);
        await own.restart();
        const back = Date.now();
        await probe.connect();
        // the flag is set again when the connection is back, not at its next renewal
        await until(
          async () => ((await probe.pttl(flag)) > 0 ? true : undefined),
          'the watch flag',
          3_000,
        );
        await until(async () => {
          const { body } = await getJson<Summary>(`${d.url}api/summary`);
          return body.redis.ok && body.feed.ok ? true : undefined;
        }, 'the page to say Redis is back');
        console.log(`watch flag back ${Date.now() - back} ms after the restart`);
        // so a fresh claim is published again, and seen
        const stream = new SseReader(`${d.url}api/stream`);
        const w = pair.worker(ns, 'after', { redis: own.url });
        await w.run('after-restart', () => 1);
        await until(
          () => stream.events().find((e) => e.event === 'claimed' && e.task === 'after-restart'),
          'the fresh claim on the stream',
        );
        stream.close();
        await w.close();
      });
    } finally {
      probe.disconnect();
      await own.stop();
    }
  });

  it('drills down: failed, done and released tasks with their errors and results, by worker and task id prefix; takeovers; a paused worker', async () => {
    const ns = pair.namespace('dash');
    const opts = { failure: { policy: 'give-up' as const } };
    const a = pair.worker(ns, 'alpha', opts);
    const b = pair.worker(ns, 'beta', opts);
    await a.run('mail-1', () => ({ sent: 1 }));
    await a.run('mail-2', () => {
      throw new Error('mailbox full');
    });
    await b.run('job-1', () => 'ok');
    // gamma leaves with a handover and no peer covers: released, claimable
    const c = pair.worker(ns, 'gamma', opts);
    const h = gate();
    const dropped = c.run('rel-1', h.handler).catch(() => undefined);
    await h.running;
    await c.close({ handover: true });
    await dropped;
    // held by alpha, which leaves with a handover: beta covers and takes it over
    const g = gate();
    const held = a.run('move-1', g.handler).catch(() => undefined);
    await g.running;
    const covering = new Promise((r) => b.once('standby', r));
    const moved = b.run('move-1', () => 'moved').catch((err: unknown) => err);
    await covering;
    await withDashboard(ns, {}, async (d) => {
      type Tasks = {
        state: string;
        items: Record<string, unknown>[];
        more: boolean;
        scanned: number;
      };
      const list = async (q: string) => (await getJson<Tasks>(`${d.url}api/tasks?${q}`)).body;
      const failed = await list('state=failed');
      expect(failed.items.map((t) => t.taskId)).toEqual(['mail-2']);
      expect(failed.items[0]).toMatchObject({
        worker: a.id,
        error: { message: 'mailbox full' },
        detail: expect.stringContaining('mailbox full'),
      });
      const done = await list('state=done');
      expect(done.items.map((t) => t.taskId)).toEqual(['job-1', 'mail-1']);
      expect(done.items[1]).toMatchObject({ result: { sent: 1 } });
      expect(
        (await list(`state=done&worker=${encodeURIComponent(b.id)}`)).items.map((t) => t.taskId),
      ).toEqual(['job-1']);
      expect((await list('state=done&prefix=mail-')).items.map((t) => t.taskId)).toEqual([
        'mail-1',
      ]);
      // every state, by prefix
      expect((await list('prefix=mail')).items.map((t) => [t.taskId, t.state]).sort()).toEqual([
        ['mail-1', 'done'],
        ['mail-2', 'failed'],
      ]);
      expect((await list('state=done&limit=1')).more).toBe(true);
      const released = await list('state=released');
      expect(released.items.map((t) => [t.taskId, t.worker])).toEqual([['rel-1', c.id]]);
      expect((await getJson(`${d.url}api/tasks?state=bogus`)).status).toBe(400);

      // alpha leaves with a handover: beta takes move-1 over; the takeover is listed
      await until(
        async () =>
          (await getJson<Summary>(`${d.url}api/summary`)).body.counts.running === 1
            ? true
            : undefined,
        'move-1 running',
      );
      await a.close({ handover: true });
      await held;
      expect(await moved).toMatchObject({ state: 'done', role: 'took-over' });
      const takeovers = await until(async () => {
        const t = await list('state=takeovers');
        return t.items.length ? t : undefined;
      }, 'the takeover listed');
      expect(takeovers.items[0]).toMatchObject({
        task: 'move-1',
        worker: b.id,
        from: a.id,
        kind: 'handover',
      });
      expect((await list('state=takeovers&worker=nobody')).items).toEqual([]);

      // a worker that publishes `paused` in its session description shows paused
      const raw = new Redis(pair.url);
      try {
        const key = `pairlock:{${ns}}:s:${b.session}`;
        const desc = JSON.parse((await raw.get(key)) ?? '{}') as Record<string, unknown>;
        await raw.set(key, JSON.stringify({ ...desc, paused: true }), 'KEEPTTL');
        await until(async () => {
          const { body } = await getJson<Summary>(`${d.url}api/summary`);
          return body.workers.find((w) => w.session === b.session)?.paused ? true : undefined;
        }, 'beta shown paused');
      } finally {
        raw.disconnect();
      }
    });
  });

  it('asks for basic authentication when --auth is given (401 without, or with wrong, credentials)', async () => {
    await withDashboard(
      pair.namespace('dash'),
      { auth: { user: 'ops', password: 'pa:ss' } },
      async (d) => {
        const basic = (s: string) => ({
          authorization: `Basic ${Buffer.from(s).toString('base64')}`,
        });
        const none = await fetch(`${d.url}api/summary`);
        expect(none.status).toBe(401);
        expect(none.headers.get('www-authenticate')).toMatch(/^Basic realm="pairlock dashboard"/);
        expect((await fetch(d.url)).status).toBe(401);
        expect((await fetch(`${d.url}api/summary`, { headers: basic('ops:wrong') })).status).toBe(
          401,
        );
        expect((await fetch(`${d.url}api/summary`, { headers: basic('ops') })).status).toBe(401);
        expect(await new SseReader(`${d.url}api/stream`).status).toBe(401);
        const ok = await getJson<Summary>(`${d.url}api/summary`, basic('ops:pa:ss'));
        expect(ok.status).toBe(200);
        expect(ok.body.namespace).toMatch(/^dash/);
        const stream = new SseReader(`${d.url}api/stream`, basic('ops:pa:ss'));
        expect(await stream.status).toBe(200);
        stream.close();
      },
    );
  });
});

describe.skipIf(!redisServerAvailable())('pairlock dashboard on quorum nodes (--nodes)', () => {
  it('shows the sessions and records a majority holds, each event once, and goes on without a minority', async () => {
    const topo = await startIndependent(3);
    const urls = topo.nodes.map((n) => n.url);
    const ns = 'quorum';
    const make = (name: string) =>
      new PairedWorker({
        nodes: urls,
        namespace: ns,
        name,
        sessionTtlMs: 2_000,
        firstAttemptIntervalMs: 500,
        otherAttemptIntervalMs: 1_000,
      });
    const a = make('alpha');
    const b = make('beta');
    const d = await startDashboard('', ns, { nodes: urls.join(',') });
    try {
      const stream = new SseReader(`${d.url}api/stream`);
      const g = gate();
      const ranA = a.run('job', g.handler);
      await g.running;
      const ranB = b.run('job', async () => 'covered');
      await until(async () => {
        const { body } = await getJson<Summary>(`${d.url}api/summary`);
        const live = body.workers.filter((w) => !w.gone && w.ttlMs > 0);
        return live.length === 2 && body.counts.running === 1 ? body : undefined;
      }, 'both sessions and the running record');
      const running = (await getJson<Running>(`${d.url}api/running`)).body;
      expect(running.groups.map((x) => [x.worker, x.items.map((i) => i.task)])).toEqual([
        [a.id, ['job']],
      ]);
      // one node goes away: the majority still answers, the sessions stay alive
      await topo.nodes[2]?.kill();
      await new Promise((r) => setTimeout(r, 1_500));
      const s = (await getJson<Summary>(`${d.url}api/summary`)).body;
      expect(s.redis.ok).toBe(true);
      expect(
        s.workers
          .filter((w) => !w.gone)
          .map((w) => w.worker)
          .sort(),
      ).toEqual([a.id, b.id].sort());
      g.release();
      expect(await ranA).toMatchObject({ state: 'done', role: 'ran' });
      expect(await ranB).toMatchObject({ state: 'done', role: 'watched' });
      await until(
        () => stream.events().find((e) => e.event === 'done' && e.task === 'job'),
        'the settle on the stream',
      );
      // every node publishes each event: the page shows it once
      const claims = stream.events().filter((e) => e.event === 'claimed' && e.task === 'job');
      expect(claims).toHaveLength(1);
      stream.close();
    } finally {
      await Promise.allSettled([a.close(), b.close()]);
      await d.stop();
      await topo.close();
    }
  });
});

describe('pairlock dashboard: the command line', () => {
  async function run(args: string[]) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(['node', 'pairlock', '--redis', pair.url, ...args], {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
    });
    return { code, out: out.join('\n'), err: err.join('\n') };
  }

  it('refuses a bad --port, --auth or --max-tasks with a message that names the option (exit 1)', async () => {
    for (const port of ['abc', '-1', '70000', '80.5', '']) {
      const r = await run(['dashboard', '--port', port]);
      expect(r.code, port).toBe(1);
      expect(r.err).toContain('--port must be a TCP port from 0 to 65535');
    }
    for (const auth of ['nocolon', ':password', 'user:']) {
      const r = await run(['dashboard', '--auth', auth]);
      expect(r.code, auth).toBe(1);
      expect(r.err).toContain('--auth must be <user>:<password>');
    }
    const r = await run(['dashboard', '--max-tasks', '0']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('--max-tasks must be a positive integer');
  });

  it('names --port when the port is taken, --host when the address is not here, and the Redis address when it is unreachable', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    try {
      const r = await run([
        '--namespace',
        pair.namespace('dash'),
        'dashboard',
        '--port',
        String(port),
      ]);
      expect(r.code).toBe(1);
      expect(r.err).toContain(`cannot listen on 127.0.0.1:${port} (EADDRINUSE)`);
      expect(r.err).toContain('pass another --port');
    } finally {
      taken.close();
    }
    // an address of no interface here (TEST-NET-3): nothing is sent, the bind fails
    const elsewhere = await run(['dashboard', '--host', '203.0.113.7', '--port', '0']);
    expect(elsewhere.code).toBe(1);
    expect(elsewhere.err).toContain('cannot listen on 203.0.113.7:0 (EADDRNOTAVAIL)');
    expect(elsewhere.err).toContain('--host');
    const down = await main(
      ['node', 'pairlock', '--redis', `redis://127.0.0.1:${port}`, '--timeout', '500', 'dashboard'],
      {
        out: () => {},
        err: () => {},
      },
    );
    expect(down).toBe(2);
  });

  it('warns that --host 0.0.0.0 has no authentication, serves, and exits 0 on SIGINT', async () => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(root, 'src/cli/main.ts'),
        '--redis',
        pair.url,
        '--namespace',
        pair.namespace('dash'),
        'dashboard',
        '--host',
        '0.0.0.0',
        '--port',
        '0',
      ],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const err: string[] = [];
    createInterface({ input: child.stderr }).on('line', (l) => err.push(l));
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${err.join('\n')}`)));
    });
    expect(url).toMatch(/^http:\/\/0\.0\.0\.0:\d+\/$/);
    expect(err.join('\n')).toContain('listens on 0.0.0.0 WITHOUT authentication');
    expect(err.join('\n')).toContain('--auth <user:password>');
    // bound to every address, it answers to any Host name
    expect(
      await statusWithHost(`${url.replace('0.0.0.0', '127.0.0.1')}api/summary`, 'dash.internal'),
    ).toBe(200);
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    child.kill('SIGINT');
    expect(await exited).toBe(0);
  });

  it('ships the page in the package', () => {
    const res = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(res.status, res.stderr).toBe(0);
    const files = (JSON.parse(res.stdout) as { files: { path: string }[] }[])[0]?.files.map(
      (f) => f.path,
    );
    expect(files).toEqual(
      expect.arrayContaining([
        'web/dashboard/index.html',
        'web/dashboard/app.js',
        'web/dashboard/charts.js',
        'web/dashboard/timeline.js',
        'web/dashboard/util.js',
        'web/dashboard/drill.js',
        'web/dashboard/attempts.js',
        'web/dashboard/style.css',
      ]),
    );
  });

  it.skipIf(!existsSync(join(root, 'dist/cli.js')))(
    'the built CLI (dist/cli.js, after npm run build) finds the page too',
    async () => {
      const child = spawn(
        process.execPath,
        [
          join(root, 'dist/cli.js'),
          '--redis',
          pair.url,
          '--namespace',
          pair.namespace('dash'),
          'dashboard',
          '--port',
          '0',
        ],
        { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const err: string[] = [];
      createInterface({ input: child.stderr }).on('line', (l) => err.push(l));
      try {
        const url = await new Promise<string>((resolve, reject) => {
          createInterface({ input: child.stdout }).once('line', resolve);
          child.once('exit', (code) => reject(new Error(`exited ${code}: ${err.join('\n')}`)));
        });
        const js = await fetch(`${url}app.js`);
        expect(js.status).toBe(200);
        expect(await js.text()).toContain("new EventSource('/api/stream')");
      } finally {
        child.kill('SIGINT');
      }
    },
  );
});
