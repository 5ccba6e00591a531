import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { benchCommand } from '../src/cli/bench.js';
import { CliError } from '../src/cli/common.js';
import { decodeEvent, formatEvent, parseRef } from '../src/cli/watch.js';
import { freePort } from '../src/testing/index.js';
import type { PairedWorker } from '../src/worker/worker.js';
import { baseEnv, cli, Running, root } from './support/cli-process.js';
import { useRedisPair } from './support/redis-pair.js';

const pair = useRedisPair();
const worker = pair.worker;
const freshNamespace = () => pair.namespace('cli');

describe('pairlock inspect', () => {
  it('prints a done record, human-readable and as JSON (exit 0)', async () => {
    const ns = freshNamespace();
    const a = worker(ns, 'alpha');
    const b = worker(ns, 'beta');
    const outcomes = await Promise.all([
      a.run('order-1', () => ({ shipped: true })),
      b.run('order-1', () => ({ shipped: true })),
    ]);
    const winner = outcomes.find((o) => o.role === 'ran');
    expect(winner).toBeDefined();

    const human = await cli(['--redis', pair.url, '--namespace', ns, 'inspect', 'order-1']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^task:\s+order-1$/m);
    expect(human.stdout).toMatch(/^state:\s+done$/m);
    expect(human.stdout).toMatch(/^token:\s+1$/m);
    expect(human.stdout).toContain(`worker:      ${winner?.worker}`);
    expect(human.stdout).toMatch(/^result:\s+\{"shipped":true\}$/m);

    const json = await cli([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'inspect',
      'order-1',
      '--json',
    ]);
    expect(json.code).toBe(0);
    const rec = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(rec).toMatchObject({
      taskId: 'order-1',
      state: 'done',
      token: 1,
      attempt: 1,
      worker: winner?.worker,
      result: { shipped: true },
    });
  });

  it('reads a record kept in a hash field (--hash)', async () => {
    const ns = freshNamespace();
    const a = worker(ns, 'alpha');
    await a.run('field-7', () => 42, { hash: { key: 'jobs' } });
    const res = await cli([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'inspect',
      'field-7',
      '--hash',
      'jobs',
      '--json',
    ]);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({
      taskId: 'field-7',
      hash: 'jobs',
      state: 'done',
      result: 42,
    });
    const plain = await cli(['--redis', pair.url, '--namespace', ns, 'inspect', 'field-7']);
    expect(plain.code).toBe(3);
    const list = await cli([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'list',
      '--hash',
      'jobs',
      '--json',
    ]);
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout)).toMatchObject([
      { taskId: 'field-7', hash: 'jobs', state: 'done' },
    ]);
  });

  it('takes the Redis address from REDIS_URL when --redis is not given', async () => {
    const ns = freshNamespace();
    await worker(ns, 'alpha').run('from-env', () => 'yes');
    const res = await cli(['--namespace', ns, 'inspect', 'from-env', '--json'], 60_000, {
      ...baseEnv(),
      REDIS_URL: pair.url,
    });
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ taskId: 'from-env', result: 'yes' });
  });

  it('exits 3 with a message on stderr for an unknown task', async () => {
    const res = await cli([
      '--redis',
      pair.url,
      '--namespace',
      freshNamespace(),
      'inspect',
      'no-such-task',
    ]);
    expect(res.code).toBe(3);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain('no record of task "no-such-task"');
  });

  it('exits 2 naming the address and --redis when Redis is unreachable', async () => {
    const port = await freePort();
    const res = await cli([
      '--redis',
      `redis://127.0.0.1:${port}`,
      '--timeout',
      '2000',
      'inspect',
      'x',
    ]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`127.0.0.1:${port}`);
    expect(res.stderr).toContain('--redis');
    const list = await cli(['--redis', `redis://127.0.0.1:${port}`, '--timeout', '2000', 'list']);
    expect(list.code).toBe(2);
  });

  it('exits 2 naming the addresses on a Cluster or quorum nodes that do not answer', async () => {
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    const cluster = await cli(['--cluster', `127.0.0.1:${p1}`, '--timeout', '2000', 'stats']);
    expect(cluster.code).toBe(2);
    expect(cluster.stderr).toContain(`the Redis Cluster at 127.0.0.1:${p1}`);
    expect(cluster.stderr).toContain('--cluster');
    const nodes = [p1, p2, p3].map((p) => `redis://127.0.0.1:${p}`).join(',');
    const quorum = await cli(['--nodes', nodes, '--timeout', '2000', 'inspect', 'x']);
    expect(quorum.code).toBe(2);
    for (const p of [p1, p2, p3]) expect(quorum.stderr).toContain(`127.0.0.1:${p} (`);
    expect(quorum.stderr).toContain('--nodes');
  });

  it('exits 1 naming the option on an invalid connection option; the command line wins over the environment', async () => {
    const res = await cli(['--sentinel', '127.0.0.1:26379', 'list']);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('--sentinel needs --master <name> (or PAIRLOCK_MASTER)');
    const fromEnv = await cli(['list'], 60_000, { ...baseEnv(), PAIRLOCK_NODES: 'redis://a:1' });
    expect(fromEnv.code).toBe(1);
    expect(fromEnv.stderr).toContain('PAIRLOCK_NODES (--nodes): quorum mode needs an odd number');

    const ns = freshNamespace();
    await worker(ns, 'alpha').run('cli-wins', () => 1);
    const wins = await cli(
      ['--redis', pair.url, '--namespace', ns, 'inspect', 'cli-wins'],
      60_000,
      {
        ...baseEnv(),
        PAIRLOCK_CLUSTER: '127.0.0.1:1',
      },
    );
    expect(wins.code).toBe(0);
  });

  it('pairlock --help names every connection option and its environment variable', async () => {
    // listed once, in the top-level help; a command's help points there (test/cli-output.test.ts)
    const res = await cli(['--help']);
    expect(res.code).toBe(0);
    for (const [flag, env] of [
      ['--redis <url>', 'REDIS_URL'],
      ['--sentinel <host:port,…>', 'PAIRLOCK_SENTINEL'],
      ['--master <name>', 'PAIRLOCK_MASTER'],
      ['--cluster <host:port,…>', 'PAIRLOCK_CLUSTER'],
      ['--nodes <url,url,url>', 'PAIRLOCK_NODES'],
      ['--tls', 'PAIRLOCK_TLS'],
      ['--tls-ca <file>', 'PAIRLOCK_TLS_CA'],
      ['--user <name>', 'PAIRLOCK_USER'],
      ['--password <secret>', 'PAIRLOCK_PASSWORD'],
    ]) {
      expect(res.stdout).toContain(flag);
      expect(res.stdout).toMatch(new RegExp(`env:\\s+${env}\\)`));
    }
  });

  it('exits 1 on a usage error', async () => {
    const res = await cli(['--redis', pair.url, 'inspect']);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("missing required argument 'taskId'");
  });
});

describe('pairlock list and stats', () => {
  let ns: string;
  let holder: PairedWorker;
  let release: () => void;
  let running: Promise<unknown>;

  beforeAll(async () => {
    ns = freshNamespace();
    const a = worker(ns, 'alpha', { failure: { policy: 'give-up' } });
    holder = worker(ns, 'holder');
    for (let i = 0; i < 5; i++) await a.run(`done-${i}`, () => i);
    await a.run('broken', () => {
      throw new Error('card declined');
    });
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started!: () => void;
    const startedP = new Promise<void>((r) => {
      started = r;
    });
    running = holder.run('slow', async () => {
      started();
      await gate;
      return 'finished';
    });
    await startedP;
  });

  afterAll(async () => {
    release();
    await running;
  });

  it('lists every record, with a state filter and a limit', async () => {
    const all = await cli([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'list',
      '--json',
      '--count',
      '2',
    ]);
    expect(all.code).toBe(0);
    const recs = JSON.parse(all.stdout) as { taskId: string; state: string }[];
    expect(recs.map((r) => r.taskId).sort()).toEqual([
      'broken',
      'done-0',
      'done-1',
      'done-2',
      'done-3',
      'done-4',
      'slow',
    ]);
    expect(recs.find((r) => r.taskId === 'broken')?.state).toBe('failed');
    expect(recs.find((r) => r.taskId === 'slow')?.state).toBe('running');

    const failed = await cli([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'list',
      '--state',
      'failed',
      '--json',
    ]);
    expect((JSON.parse(failed.stdout) as { taskId: string }[]).map((r) => r.taskId)).toEqual([
      'broken',
    ]);

    const human = await cli([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'list',
      '--state',
      'done',
      '--limit',
      '3',
    ]);
    expect(human.code).toBe(0);
    const lines = human.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^TASK\s+STATE\s+TOKEN\s+ATTEMPT\s+WORKER\s+UPDATED\s+DETAIL$/);
    expect(lines.filter((l) => /^done-\d\s+done\s/.test(l))).toHaveLength(3);
    expect(human.stdout).toContain('--limit 3 reached');

    const bad = await cli(['--redis', pair.url, '--namespace', ns, 'list', '--state', 'bogus']);
    expect(bad.code).toBe(1);
  });

  it('counts by state and shows live workers with what they hold', async () => {
    const res = await cli(['--redis', pair.url, '--namespace', ns, 'stats', '--json']);
    expect(res.code).toBe(0);
    const s = JSON.parse(res.stdout) as {
      tasks: Record<string, number>;
      workers: { worker: string; pid: number; host: string; ttlMs: number; holds: string[] }[];
    };
    expect(s.tasks).toMatchObject({
      total: 7,
      running: 1,
      done: 5,
      failed: 1,
      released: 0,
      orphaned: 0,
    });
    const h = s.workers.find((w) => w.worker === holder.id);
    expect(h).toBeDefined();
    expect(h?.holds).toEqual(['slow']);
    expect(h?.pid).toBe(process.pid);
    expect(h?.ttlMs).toBeGreaterThan(0);
    expect(s.workers.map((w) => w.worker)).toContain(
      pair.workers.find((w) => w.options.name === 'alpha' && w.options.namespace === ns)?.id,
    );

    const human = await cli(['--redis', pair.url, '--namespace', ns, 'stats']);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain(
      'tasks: 7 total, 1 running (0 orphaned), 5 done, 1 failed, 0 released',
    );
    expect(human.stdout).toContain('workers: 2 live');
    expect(human.stdout).toMatch(new RegExp(`${holder.id}.*\\b1\\s+slow`));
  });
});

describe('pairlock watch', () => {
  it('prints claims, settles, releases and takeovers until SIGINT', async () => {
    const ns = freshNamespace();
    const watch = Running.start(['--redis', pair.url, '--namespace', ns, 'watch', '--json']);
    const human = Running.start(['--redis', pair.url, '--namespace', ns, 'watch']);
    try {
      await watch.waitFor(
        () => watch.err.some((l) => l.startsWith('watching ')),
        'the json watch to subscribe',
      );
      await human.waitFor(
        () => human.err.some((l) => l.startsWith('watching ')),
        'the human watch to subscribe',
      );
      const a = worker(ns, 'site-a');
      const b = worker(ns, 'site-b');
      await a.run('mail-1', () => 'sent');
      // a holds mail-2 and leaves with handover: b takes it over at once
      let started!: () => void;
      const startedP = new Promise<void>((r) => {
        started = r;
      });
      const aRun = a
        .run('mail-2', ({ signal }) => {
          started();
          return new Promise((_, reject) =>
            signal.addEventListener('abort', () => reject(signal.reason)),
          );
        })
        .catch(() => undefined);
      await startedP;
      const bRun = b.run('mail-2', () => 'sent by b');
      await a.close({ handover: true });
      await aRun;
      const outcome = await bRun;
      expect(outcome.role).toBe('took-over');

      const want = [
        'claimed:mail-1',
        'done:mail-1',
        'claimed:mail-2',
        'released:mail-2',
        'took-over:mail-2',
        'done:mail-2',
      ];
      const seen = () =>
        watch.out.map((l) => {
          const e = JSON.parse(l) as { event: string; task: string };
          return `${e.event}:${e.task}`;
        });
      await watch.waitFor(() => want.every((w) => seen().includes(w)), 'all events');
      expect(seen()).toEqual(want);
      const events = watch.out.map((l) => JSON.parse(l) as Record<string, unknown>);
      const takeover = events.find((e) => e.event === 'took-over');
      expect(takeover).toMatchObject({
        task: 'mail-2',
        kind: 'handover',
        from: a.id,
        worker: b.id,
        token: 2,
        attempt: 2,
      });
      expect(String(takeover?.session)).toMatch(new RegExp(`^${b.id}#\\d+$`));
      expect(Number.isNaN(Date.parse(String(events[0]?.time)))).toBe(false);

      await human.waitFor(() => human.out.length >= want.length, 'human lines');
      expect(human.out[0]).toMatch(
        new RegExp(`^\\S+Z\\s+claimed\\s+mail-1\\s+token 1\\s+attempt 1\\s+by ${a.id}$`),
      );
      expect(human.out.find((l) => l.includes('took-over'))).toMatch(
        new RegExp(
          `took-over\\s+mail-2\\s+token 2\\s+attempt 2\\s+by ${b.id}\\s+from ${a.id} \\(handover\\)`,
        ),
      );
      expect(human.out.some((l) => /released\s+mail-2/.test(l))).toBe(true);
    } finally {
      watch.child.kill('SIGINT');
      human.child.kill('SIGINT');
    }
    expect(await watch.exited).toBe(0);
    expect(await human.exited).toBe(0);
  });

  it('decodes hash-field refs and grant kinds', () => {
    expect(parseRef('t:a:b')).toEqual({ task: 'a:b' });
    expect(parseRef('h:4:jobsfield-1')).toEqual({ hash: 'jobs', task: 'field-1' });
    const w = decodeEvent(
      { e: 'claimed', r: 'h:4:jobsx', s: 'R', k: 3, a: 3, o: 'b:1#2', kind: 1, from: 'a:9#1' },
      0,
    );
    expect(w).toMatchObject({
      event: 'took-over',
      kind: 'session-expired',
      from: 'a:9',
      worker: 'b:1',
      hash: 'jobs',
      task: 'x',
    });
    expect(formatEvent(w)).toContain('from a:9 (session-expired)');
  });
});

describe('pairlock bench', () => {
  it('explains that the benchmarks ship with the source repository when bench/run.ts is absent', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pairlock-bench-'));
    try {
      const lines: string[] = [];
      const io = { out: (l: string) => lines.push(l), err: (l: string) => lines.push(l) };
      const err = await benchCommand({}, io, undefined, dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(1);
      expect((err as CliError).message).toContain('ship with the source repository');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('pairlock run', () => {
  let dir: string;
  beforeAll(() => {
    // inside the package, so that the module resolves the package's dependencies
    mkdirSync(join(root, '.tmp'), { recursive: true });
    dir = mkdtempSync(join(root, '.tmp', 'run-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs a module as a pair: every task once, both processes exit, exit 0', async () => {
    const ns = freshNamespace();
    const mod = join(dir, 'finite.mjs');
    writeFileSync(
      mod,
      `export default {
        worker: { sessionTtlMs: 2000 },
        async *tasks() { for (let i = 0; i < 8; i++) yield { id: 'job-' + i, data: i }; },
        async handler(task) { await new Promise((r) => setTimeout(r, 20)); return { n: task.data * 2, pid: process.pid }; },
      };\n`,
    );
    const res = await cli([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'run',
      mod,
      '--name',
      'pair',
      '--verbose',
    ]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/\[pair-1\] worker pair-1:\w+ started/);
    expect(res.stdout).toMatch(/\[pair-2\] worker pair-2:\w+ started/);
    expect(res.stdout).toContain('[pair-1] all tasks have an outcome; exiting');
    expect(res.stdout).toContain('[pair-2] all tasks have an outcome; exiting');
    // each side reports every outcome; exactly one of them ran each task
    for (let i = 0; i < 8; i++) {
      const lines = res.stdout.split('\n').filter((l) => l.includes(` job-${i} `));
      expect(lines).toHaveLength(2);
      expect(lines.filter((l) => /role=(ran|took-over)/.test(l))).toHaveLength(1);
    }
    const list = await cli(['--redis', pair.url, '--namespace', ns, 'list', '--json']);
    const recs = JSON.parse(list.stdout) as {
      taskId: string;
      state: string;
      attempt: number;
      result: { n: number };
    }[];
    expect(recs).toHaveLength(8);
    for (const r of recs) {
      expect(r.state).toBe('done');
      expect(r.attempt).toBe(1);
      expect(r.result.n).toBe(Number(r.taskId.slice(4)) * 2);
    }
  });

  it('restarts a crashed worker with backoff; its peer takes the task over', async () => {
    const ns = freshNamespace();
    const marker = join(dir, 'crashed-once');
    const mod = join(dir, 'crashing.mjs');
    writeFileSync(
      mod,
      `import { existsSync, writeFileSync } from 'node:fs';
      export default {
        worker: { sessionTtlMs: 1000, firstAttemptIntervalMs: 300, otherAttemptIntervalMs: 500 },
        async *tasks() { yield 'fragile'; yield 'plain'; },
        async handler(task) {
          if (task.id === 'fragile' && !existsSync(${JSON.stringify(marker)})) {
            writeFileSync(${JSON.stringify(marker)}, String(process.pid));
            process.exit(7);
          }
          return 'ok:' + task.id;
        },
      };\n`,
    );
    const res = await cli([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'run',
      mod,
      '--name',
      'crashy',
      '--restart-delay',
      '200',
    ]);
    expect(res.code).toBe(0);
    expect(res.stderr).toMatch(/supervisor: crashy-[12] exited with code 7; restarting in 200 ms/);
    expect(res.stdout).toMatch(
      // a crashed process: its connection closed (or, unbound, its session expired)
      /took over fragile from crashy-[12]:\w+ \((connection-lost|session-expired), token 2\)/,
    );
    const rec = await cli(['--redis', pair.url, '--namespace', ns, 'inspect', 'fragile', '--json']);
    expect(JSON.parse(rec.stdout)).toMatchObject({
      state: 'done',
      result: 'ok:fragile',
      token: 2,
      attempt: 2,
    });
  });

  it('feeds both workers from a Redis stream, each through its own group', async () => {
    const ns = freshNamespace();
    const stream = `${ns}:inbox`;
    const mod = join(dir, 'stream.mjs');
    writeFileSync(
      mod,
      `export default {
        stream: { stream: ${JSON.stringify(stream)}, startId: '0' },
        handler: (task) => ({ got: task.data.fields.n, id: task.data.id }),
      };\n`,
    );
    const { Redis } = await import('ioredis');
    const redis = new Redis(pair.url);
    const run = Running.start([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'run',
      mod,
      '--name',
      'inbox',
      '--verbose',
    ]);
    try {
      for (let i = 0; i < 5; i++) await redis.xadd(stream, '*', 'n', String(i));
      // every entry's outcome, on both workers
      await run.waitFor(
        () => run.out.filter((l) => / done \S+ role=/.test(l)).length >= 10,
        'ten outcomes',
      );
      const outcomes = run.out.filter((l) => / done \S+ role=/.test(l));
      const tasks = new Set(outcomes.map((l) => /done (\S+) role/.exec(l)?.[1]));
      expect(tasks.size).toBe(5);
      for (const t of tasks) {
        const lines = outcomes.filter((l) => l.includes(` ${t} `));
        expect(lines.filter((l) => l.includes('role=ran'))).toHaveLength(1);
        expect(lines.filter((l) => l.includes('role=watched'))).toHaveLength(1);
      }
      run.child.kill('SIGTERM');
      expect(await run.exited).toBe(0);
      for (const group of ['pairlock:inbox-1', 'pairlock:inbox-2']) {
        const pending = (await redis.xpending(stream, group)) as [number];
        expect(Number(pending[0])).toBe(0);
      }
    } finally {
      run.child.kill('SIGKILL');
      redis.disconnect();
    }
  });

  it('forwards SIGTERM: both workers close with handover and the supervisor exits 0', async () => {
    const ns = freshNamespace();
    const mod = join(dir, 'cron.mjs');
    writeFileSync(
      mod,
      `export default {
        schedule: { name: 'tick', every: 200 },
        handler: (task) => task.id,
      };\n`,
    );
    const run = Running.start([
      '--redis',
      pair.url,
      '--namespace',
      ns,
      'run',
      mod,
      '--name',
      'cron',
    ]);
    try {
      await run.waitFor(
        () => run.out.filter((l) => / started \(namespace /.test(l)).length === 2,
        'both workers to start',
      );
      run.child.kill('SIGTERM');
      expect(await run.exited).toBe(0);
      expect(
        run.out.filter((l) => l.endsWith('closing with handover')),
        `stdout:\n${run.out.join('\n')}\nstderr:\n${run.err.join('\n')}`,
      ).toHaveLength(2);
      expect(run.err.some((l) => l.includes('SIGTERM; closing both workers with handover'))).toBe(
        true,
      );
    } finally {
      run.child.kill('SIGKILL');
    }
  });
});

describe.skipIf(!existsSync(join(root, 'src/demo/index.ts')))('pairlock demo', () => {
  it('runs on the Redis given with --redis and exits 0', async () => {
    const res = await cli(['--redis', pair.url, 'demo', '--tasks', '3'], 120_000);
    expect(res.code).toBe(0);
    expect(res.stdout).not.toContain('started redis-server');
    expect(res.stdout).toMatch(/took over push-\d/);
    expect(res.stdout).toContain('summary');
  });

  it('starts its own redis-server without --redis or REDIS_URL', async () => {
    const res = await cli(['demo', '--tasks', '3'], 120_000);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('started redis-server');
    expect(res.stdout).toContain('summary');
  });
});
