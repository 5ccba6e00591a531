/**
 * The CLI on every topology the library runs on: a Sentinel-managed master, a Redis
 * Cluster (the namespace's shard is read, events heard however the workers publish them),
 * and quorum mode (each node's copy and the majority's verdict, one node down, two down).
 * One setup per topology, real redis-server processes started by the harness; the CLI runs
 * in child processes as users run it.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PairedWorker, type PairedWorkerOptions } from '../../src/index.js';
import { keySlot } from '../../src/redis/topology-cluster.js';
import {
  type ClusterTopology,
  type IndependentTopology,
  type ReplicatedTopology,
  startCluster,
  startIndependent,
  startReplicated,
} from '../../src/testing/index.js';
import { baseEnv, cli, Running, root } from '../support/cli-process.js';

const quick = {
  sessionTtlMs: 2_000,
  firstAttemptIntervalMs: 500,
  otherAttemptIntervalMs: 1_000,
} satisfies Partial<PairedWorkerOptions>;

const workers: PairedWorker[] = [];
function worker(opts: PairedWorkerOptions): PairedWorker {
  const w = new PairedWorker({ ...quick, ...opts });
  workers.push(w);
  return w;
}
/** Close the workers while their Redis still runs (each topology's afterAll, first). */
async function closeWorkers(): Promise<void> {
  await Promise.allSettled(workers.splice(0).map((w) => w.close()));
}

/** A task held by `w` until the returned function is called. */
async function hold(w: PairedWorker, taskId: string): Promise<() => Promise<unknown>> {
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  let started!: () => void;
  const running = new Promise<void>((r) => {
    started = r;
  });
  const done = w.run(taskId, async () => {
    started();
    await gate;
    return 'released';
  });
  await running;
  return () => {
    release();
    return done;
  };
}

const json = <T>(text: string): T => JSON.parse(text) as T;
type Rec = { taskId: string; state: string; token: number; worker: string; result?: unknown };

// -------------------------------------------------------------------------------------
// Sentinel
// -------------------------------------------------------------------------------------

describe('Sentinel (--sentinel, --master)', () => {
  let topo: ReplicatedTopology;
  let sentinels: string;
  beforeAll(async () => {
    topo = await startReplicated({ replicas: 1, sentinels: 1 });
    sentinels = topo.sentinelAddrs.map((a) => `${a.host}:${a.port}`).join(',');
  });
  afterAll(async () => {
    await closeWorkers();
    await topo?.close();
  });

  it('inspect, list and stats read the master the sentinels name', async () => {
    const redis = { sentinels: topo.sentinelAddrs, name: topo.masterName };
    const a = worker({ redis, namespace: 'sent', name: 'a' });
    await a.run('shipped', () => ({ ok: 1 }));
    const release = await hold(a, 'busy');
    try {
      const where = ['--sentinel', sentinels, '--master', topo.masterName, '--namespace', 'sent'];
      const one = await cli([...where, 'inspect', 'shipped', '--json']);
      expect(one.stderr).toBe('');
      expect(json<Rec>(one.stdout)).toMatchObject({ state: 'done', result: { ok: 1 } });

      const list = await cli([...where, 'list', '--json']);
      expect(list.code).toBe(0);
      expect(
        json<Rec[]>(list.stdout)
          .map((r) => `${r.taskId}:${r.state}`)
          .sort(),
      ).toEqual(['busy:running', 'shipped:done']);

      // the same through the environment
      const stats = await cli(['--namespace', 'sent', 'stats', '--json'], 60_000, {
        ...baseEnv(),
        PAIRLOCK_SENTINEL: sentinels,
        PAIRLOCK_MASTER: topo.masterName,
      });
      expect(stats.code).toBe(0);
      const s = json<{ tasks: { total: number }; workers: { worker: string; holds: string[] }[] }>(
        stats.stdout,
      );
      expect(s.tasks.total).toBe(2);
      expect(s.workers.find((w) => w.worker === a.id)?.holds).toEqual(['busy']);
      const human = await cli([...where, 'stats']);
      expect(human.stdout).toContain(
        `master "${topo.masterName}" through the sentinels ${sentinels}`,
      );
    } finally {
      await release();
    }
  });

  it('a master the sentinels do not know, or sentinels that do not answer: exit 2 naming them', async () => {
    const unknown = await cli([
      '--sentinel',
      sentinels,
      '--master',
      'nosuch',
      '--timeout',
      '2000',
      'list',
    ]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain(`master "nosuch" through the sentinels ${sentinels}`);
    expect(unknown.stderr).toContain('--master');
    // the sentinel's own answer
    expect(unknown.stderr).toContain('No such master with that name');

    const deaf = await cli([
      '--sentinel',
      '127.0.0.1:1',
      '--master',
      'x',
      '--timeout',
      '2000',
      'stats',
    ]);
    expect(deaf.code).toBe(2);
    expect(deaf.stderr).toContain('the sentinels 127.0.0.1:1');
    expect(deaf.stderr).toContain('All sentinels are unreachable');
  });
});

// -------------------------------------------------------------------------------------
// Cluster
// -------------------------------------------------------------------------------------

describe('Redis Cluster (--cluster)', () => {
  let topo: ClusterTopology;
  let ns: string;
  let owner: number;
  const clients: Cluster[] = [];
  const clusterClient = () => {
    const c = new Cluster([topo.startupNodes[0]!], {
      enableOfflineQueue: false,
      redisOptions: { maxRetriesPerRequest: 0 },
    });
    c.on('error', () => {});
    clients.push(c);
    return c;
  };
  beforeAll(async () => {
    topo = await startCluster({ masters: 3 });
    // a namespace served by a node other than the startup node the CLI is given
    const n = topo.nodes.length;
    for (let i = 0; ; i++) {
      const slot = keySlot(`{cl${i}}`);
      const idx = topo.nodes.findIndex(
        (_, j) => slot >= Math.floor((j * 16_384) / n) && slot < Math.floor(((j + 1) * 16_384) / n),
      );
      if (idx > 0) {
        ns = `cl${i}`;
        owner = topo.nodes[idx]!.port;
        break;
      }
    }
  });
  afterAll(async () => {
    await closeWorkers();
    for (const c of clients) c.disconnect();
    await topo?.close();
  });
  const where = () => ['--cluster', `127.0.0.1:${topo.startupNodes[0]!.port}`, '--namespace', ns];

  it("list, stats and inspect read the namespace's shard", async () => {
    const a = worker({ redis: clusterClient(), namespace: ns, name: 'a' });
    for (let i = 0; i < 4; i++) await a.run(`c-${i}`, () => i);
    const release = await hold(a, 'busy');
    try {
      const list = await cli([...where(), 'list', '--json', '--count', '2']);
      expect(list.stderr).toBe('');
      expect(
        json<Rec[]>(list.stdout)
          .map((r) => r.taskId)
          .sort(),
      ).toEqual(['busy', 'c-0', 'c-1', 'c-2', 'c-3']);

      const stats = await cli([...where(), 'stats']);
      expect(stats.code).toBe(0);
      expect(stats.stdout).toContain(`shard 127.0.0.1:${owner} (slot ${keySlot(`{${ns}}`)})`);
      expect(stats.stdout).toContain('tasks: 5 total, 1 running (0 orphaned), 4 done');
      expect(stats.stdout).toMatch(new RegExp(`${a.id}.*\\b1\\s+busy`));

      const one = await cli([...where(), 'inspect', 'c-2', '--json']);
      expect(json<Rec>(one.stdout)).toMatchObject({ state: 'done', result: 2 });
    } finally {
      await release();
    }
  });

  it('watch hears workers that publish sharded (the default) and classic alike', async () => {
    const watch = Running.start([...where(), 'watch', '--json']);
    try {
      await watch.waitFor(() => watch.err.some((l) => l.startsWith('watching ')), 'the watch');
      expect(watch.err.join('\n')).toContain('sharded and classic pub/sub');
      const sharded = worker({ redis: clusterClient(), namespace: ns, name: 'sh' });
      const classic = worker({
        redis: clusterClient(),
        namespace: ns,
        name: 'cl',
        clusterPubSub: 'classic',
      });
      await sharded.run('by-sharded', () => 1);
      await classic.run('by-classic', () => 2);
      const want = [
        'claimed:by-sharded',
        'done:by-sharded',
        'claimed:by-classic',
        'done:by-classic',
      ];
      const seen = () =>
        watch.out.map((l) => {
          const e = json<{ event: string; task: string }>(l);
          return `${e.event}:${e.task}`;
        });
      await watch.waitFor(() => want.every((w) => seen().includes(w)), 'all four events');
      expect(seen()).toEqual(want);
    } finally {
      watch.child.kill('SIGINT');
    }
    expect(await watch.exited).toBe(0);
  });

  it('run hands --cluster to both worker processes', async () => {
    mkdirSync(join(root, '.tmp'), { recursive: true });
    const dir = mkdtempSync(join(root, '.tmp', 'run-cluster-'));
    try {
      const mod = join(dir, 'finite.mjs');
      writeFileSync(
        mod,
        `export default {
          worker: { sessionTtlMs: 2000 },
          async *tasks() { for (let i = 0; i < 4; i++) yield 'job-' + i; },
          handler: (task) => task.id,
        };\n`,
      );
      const runNs = `${ns}run`;
      const res = await cli([
        '--cluster',
        `127.0.0.1:${topo.startupNodes[1]!.port}`,
        '--namespace',
        runNs,
        'run',
        mod,
        '--name',
        'pair',
      ]);
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toContain('[pair-1] all tasks have an outcome; exiting');
      expect(res.stdout).toContain('[pair-2] all tasks have an outcome; exiting');
      const list = await cli([
        '--cluster',
        `127.0.0.1:${topo.startupNodes[2]!.port}`,
        '--namespace',
        runNs,
        'list',
        '--json',
      ]);
      const recs = json<Rec[]>(list.stdout);
      expect(recs.map((r) => `${r.taskId}:${r.state}`).sort()).toEqual([
        'job-0:done',
        'job-1:done',
        'job-2:done',
        'job-3:done',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// -------------------------------------------------------------------------------------
// Quorum
// -------------------------------------------------------------------------------------

describe('quorum mode (--nodes)', () => {
  let topo: IndependentTopology;
  let nodes: string;
  const labels = () => topo.nodes.map((n) => `127.0.0.1:${n.port}`);
  beforeAll(async () => {
    topo = await startIndependent(3);
    nodes = topo.nodes.map((n) => n.url).join(',');
  });
  afterAll(async () => {
    await closeWorkers();
    await topo?.close();
  });
  const where = (ns: string) => ['--nodes', nodes, '--namespace', ns, '--timeout', '2000'];

  type Copy = { node: string; status: string; record?: Rec };
  type QuorumJson = Rec & {
    quorum: { agree: number; of: number; majority: number; split: boolean };
    nodes: Copy[];
  };

  it("inspect shows each node's copy and the majority's verdict, also when the nodes disagree", async () => {
    const ns = 'q1';
    const a = worker({ nodes: topo.nodes.map((n) => n.url), namespace: ns, name: 'a' });
    await a.run('order-1', () => 'sent');
    const all = await cli([...where(ns), 'inspect', 'order-1', '--json']);
    expect(all.code).toBe(0);
    const r = json<QuorumJson>(all.stdout);
    expect(r).toMatchObject({
      state: 'done',
      result: 'sent',
      quorum: { agree: 3, of: 3, majority: 2, split: false },
    });
    expect(r.nodes.map((n) => `${n.node}:${n.status}:${n.record?.state}`)).toEqual(
      labels().map((l) => `${l}:record:done`),
    );

    // node 3 loses the record; node 1 alone holds one of a task nobody ran
    const key = `pairlock:{${ns}}:t:order-1`;
    const n1 = new Redis(topo.nodes[0]!.url);
    const n3 = new Redis(topo.nodes[2]!.url);
    try {
      await n3.del(key);
      await n1.set(`pairlock:{${ns}}:t:ghost`, (await n1.get(key))!);
    } finally {
      n1.disconnect();
      n3.disconnect();
    }
    const split = await cli([...where(ns), 'inspect', 'order-1']);
    expect(split.code).toBe(0);
    expect(split.stdout).toMatch(/^state:\s+done$/m);
    expect(split.stdout).toContain(
      "verdict:     the majority's record (2 of 3 nodes agree, 2 needed)",
    );
    expect(split.stdout).toMatch(new RegExp(`^\\s+${labels()[2]}\\s+absent`, 'm'));
    expect(split.stdout).toMatch(
      new RegExp(`^\\s+${labels()[0]}\\s+done\\s+1\\s+1\\s+${a.id}`, 'm'),
    );

    const ghost = await cli([...where(ns), 'inspect', 'ghost']);
    expect(ghost.code).toBe(3);
    expect(ghost.stdout).toMatch(new RegExp(`^${labels()[0]}\\s+done`, 'm'));
    expect(ghost.stderr).toContain(
      'on a majority of the 3 nodes (1 of them hold one, shown above)',
    );
  });

  it('list counts the nodes that agree; stats shows each node and the tasks they disagree on', async () => {
    const ns = 'q1';
    const a = worker({ nodes: topo.nodes.map((n) => n.url), namespace: ns, name: 'live' });
    const release = await hold(a, 'busy');
    try {
      const list = await cli([...where(ns), 'list', '--json']);
      const recs = json<(Rec & { quorum: { agree: number; of: number } })[]>(list.stdout);
      expect(recs.map((x) => `${x.taskId}:${x.state}:${x.quorum.agree}/${x.quorum.of}`)).toEqual([
        'busy:running:3/3',
        'order-1:done:2/3',
      ]);
      const human = await cli([...where(ns), 'list']);
      expect(human.stdout).toMatch(
        /^TASK\s+STATE\s+TOKEN\s+ATTEMPT\s+WORKER\s+UPDATED\s+NODES\s+DETAIL$/m,
      );
      expect(human.stdout).toMatch(/^order-1\s+done\s+.*\s2\/3\s/m);

      const stats = await cli([...where(ns), 'stats', '--json']);
      const s = json<{
        tasks: { total: number; running: number; done: number };
        workers: { worker: string; nodes: number; holds: string[] }[];
        quorum: {
          majority: number;
          nodes: { node: string; up: boolean; records: number; sessions: number }[];
          disagree: { taskId: string; agree: number; majority: string }[];
        };
      }>(stats.stdout);
      expect(s.tasks).toMatchObject({ total: 2, running: 1, done: 1 });
      expect(s.workers.find((w) => w.worker === a.id)).toMatchObject({ nodes: 3, holds: ['busy'] });
      expect(s.quorum.nodes.map((n) => `${n.node}:${n.records}`)).toEqual([
        `${labels()[0]}:3`,
        `${labels()[1]}:2`,
        `${labels()[2]}:1`,
      ]);
      expect(s.quorum.disagree.sort((x, y) => x.taskId.localeCompare(y.taskId))).toEqual([
        { taskId: 'ghost', agree: 2, majority: 'absent' },
        { taskId: 'order-1', agree: 2, majority: 'done' },
      ]);
      const text = await cli([...where(ns), 'stats']);
      expect(text.stdout).toContain('tasks: 2 total, 1 running (0 orphaned), 1 done');
      expect(text.stdout).toContain('the nodes disagree on 2 task(s)');
      expect(text.stdout).toMatch(new RegExp(`^\\s+${labels()[2]}\\s+up\\s+1\\s+\\d`, 'm'));
    } finally {
      await release();
    }
  });

  it('watch prints each event once, though every node publishes it', async () => {
    const ns = 'q2';
    const watch = Running.start(where(ns).concat(['watch', '--json']));
    try {
      await watch.waitFor(() => watch.err.some((l) => l.startsWith('watching ')), 'the watch');
      const a = worker({ nodes: topo.nodes.map((n) => n.url), namespace: ns, name: 'a' });
      await a.run('t-1', () => 1);
      await a.run('t-2', () => 2);
      const seen = () =>
        watch.out.map(
          (l) => `${json<{ event: string }>(l).event}:${json<{ task: string }>(l).task}`,
        );
      await watch.waitFor(() => seen().includes('done:t-2'), 'the last event');
      // copies from the slower nodes would arrive within a few ms
      await new Promise((r) => setTimeout(r, 300));
      expect(seen()).toEqual(['claimed:t-1', 'done:t-1', 'claimed:t-2', 'done:t-2']);
    } finally {
      watch.child.kill('SIGINT');
    }
    expect(await watch.exited).toBe(0);
  });

  it('demo runs its pair on the quorum nodes', async () => {
    const res = await cli(['--nodes', nodes, 'demo', '--tasks', '3'], 120_000);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`redis     using 3 quorum nodes (${labels().join(', ')})`);
    expect(res.stdout).toMatch(/took over push-\d/);
    expect(res.stdout).not.toContain('both sides agree: NO');
  });

  it('one node down: the commands go on and say so; two down: exit 2 naming them', async () => {
    await closeWorkers();
    await topo.nodes[2]!.stop();
    const one = await cli([...where('q1'), 'inspect', 'order-1', '--json']);
    expect(one.code).toBe(0);
    expect(one.stderr).toContain(`quorum node ${labels()[2]} is unreachable`);
    const r = json<QuorumJson>(one.stdout);
    expect(r.state).toBe('done');
    expect(r.nodes[2]).toMatchObject({ node: labels()[2], status: 'unreachable' });

    await topo.nodes[1]!.stop();
    const two = await cli([...where('q1'), 'list']);
    expect(two.code).toBe(2);
    expect(two.stderr).toContain('cannot reach a majority of the 3 quorum nodes (2 needed)');
    expect(two.stderr).toContain(labels()[1]);
    expect(two.stderr).toContain(labels()[2]);
    expect(two.stderr).toContain('--nodes');
  });
});
