/**
 * Resharding under a running pair: the namespace's slot migrates to another master while
 * tasks are held, key by key (CLUSTER SETSLOT … IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE).
 * Every key a script touches is declared, so Redis answers a migrating slot with ASK or
 * TRYAGAIN before the script runs, never with a half-read: a claim never sees a live
 * holder's session as gone because the session has not moved yet, and a batch never stops
 * part-way after writing.
 */
import { type Cluster, Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { type Outcome, PairedWorker, type PairedWorkerOptions } from '../../src/index.js';
import { Keys } from '../../src/redis/keys.js';
import { keySlot } from '../../src/redis/topology-cluster.js';
import { type ClusterTopology, startCluster } from '../../src/testing/index.js';
import { clusterClient, ownerOf } from '../support/cluster.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {});
});

function client(topo: ClusterTopology): Cluster {
  return clusterClient(topo, (fn) => cleanup.push(fn));
}

function worker(
  topo: ClusterTopology,
  ns: string,
  name: string,
  extra: Partial<PairedWorkerOptions> = {},
) {
  const w = new PairedWorker({
    redis: client(topo),
    namespace: ns,
    name,
    sessionTtlMs: 10_000,
    firstAttemptIntervalMs: 5_000,
    otherAttemptIntervalMs: 5_000,
    ...extra,
  });
  cleanup.push(() => w.close());
  return w;
}

function direct(port: number): Redis {
  const r = new Redis({ host: '127.0.0.1', port });
  cleanup.push(async () => r.disconnect());
  return r;
}

/** A slot migration opened by hand, so that a test moves exactly the keys it chooses. */
async function openMigration(topo: ClusterTopology, ns: string) {
  const slot = keySlot(`{${ns}}`);
  const srcPort = await ownerOf(topo, slot);
  const dstPort = topo.nodes.find((n) => n.port !== srcPort)!.port;
  const src = direct(srcPort);
  const dst = direct(dstPort);
  const [srcId, dstId] = [
    String(await src.call('CLUSTER', 'MYID')),
    String(await dst.call('CLUSTER', 'MYID')),
  ];
  await dst.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', srcId);
  await src.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dstId);
  return {
    /** Move these keys (those that exist) now. */
    async move(keys: string[]) {
      for (const k of keys) {
        if ((await src.exists(k)) === 1)
          await src.call('MIGRATE', '127.0.0.1', dstPort, '', 0, 5_000, 'REPLACE', 'KEYS', k);
      }
    },
    /** Move every remaining key and hand the slot over. */
    async finish() {
      for (let round = 0; round < 100; round++) {
        const batch = (await src.call('CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[];
        if (batch.length === 0) break;
        await src.call('MIGRATE', '127.0.0.1', dstPort, '', 0, 5_000, 'REPLACE', 'KEYS', ...batch);
      }
      for (const n of topo.nodes)
        await direct(n.port).call('CLUSTER', 'SETSLOT', slot, 'NODE', dstId);
    },
  };
}

/** A handler held open until `release()`; `aborted` says whether its signal fired. */
function heldHandler() {
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  let started!: () => void;
  const running = new Promise<void>((r) => {
    started = r;
  });
  const state = { aborted: false };
  const handler = async ({ signal }: { signal: AbortSignal }) => {
    signal.addEventListener('abort', () => {
      state.aborted = true;
    });
    started();
    await gate;
    return 'holder';
  };
  return { handler, release, running, state };
}

describe('resharding under a running pair', () => {
  it('a claim redirected to the importing node does not take over a live holder whose session has not moved yet', async () => {
    const topo = await startCluster({ masters: 3 });
    cleanup.push(() => topo.close());
    const ns = 'reshard-live';
    const keys = new Keys('pairlock', ns);
    const a = worker(topo, ns, 'a');
    const c = worker(topo, ns, 'c');
    await Promise.all([a.start(), c.start()]);

    const held = heldHandler();
    const aRun = a.run('t1', held.handler);
    await held.running;

    // the task's record and the claimer's session (and binding) move; the holder's session, sequence and
    // binding stay behind
    const m = await openMigration(topo, ns);
    await m.move([keys.task('t1').container, keys.session(c.session), keys.bind(c.session)]);
    let cRan = false;
    const cRun = c.run('t1', async () => {
      cRan = true;
      return 'standby';
    });
    await sleep(800);
    await m.finish();
    await sleep(300);
    held.release();
    const [x, y] = (await Promise.all([aRun, cRun])) as [Outcome, Outcome];

    expect(cRan, 'the standby ran the task while its holder was alive').toBe(false);
    expect(held.state.aborted, "the holder's signal fired").toBe(false);
    expect(x).toMatchObject({ state: 'done', role: 'ran', token: 1, result: 'holder' });
    expect(y).toMatchObject({ state: 'done', role: 'watched', token: 1, result: 'holder' });
  });

  it('a claim batch during a migration stops nowhere part-way: nothing is written until every key is here, and no run() fails', async () => {
    const topo = await startCluster({ masters: 3 });
    cleanup.push(() => topo.close());
    const ns = 'reshard-batch';
    const keys = new Keys('pairlock', ns);
    const a = worker(topo, ns, 'a', { failure: { maxAttempts: 1, backoffMs: 0 } });
    const c = worker(topo, ns, 'c', { failure: { maxAttempts: 3, backoffMs: 0 } });
    await Promise.all([a.start(), c.start()]);

    // t1: failed once (a's last attempt, c may try twice more), retryable at once; its record stays on the source node
    const failed = await a.run('t1', async () => {
      throw new Error('first attempt fails');
    });
    expect(failed).toMatchObject({ state: 'failed', attempts: 1 });
    // t2: held by a, whose session (and sequence, and binding) move to the destination first
    const held = heldHandler();
    const aRun = a.run('t2', held.handler);
    await held.running;
    const session = a.session;
    const m = await openMigration(topo, ns);
    await m.move([keys.session(session), keys.seq(session), keys.bind(session)]);

    // one claim batch for both tasks (same event-loop turn, same arguments)
    let t2Ran = false;
    const c1 = c.run('t1', async () => 'retried');
    const c2 = c.run('t2', async () => {
      t2Ran = true;
      return 'standby';
    });
    const settled = Promise.allSettled([c1, c2]);
    await sleep(800);
    await m.finish();
    await sleep(300);
    held.release();
    const [r1, r2] = await settled;
    await aRun;

    expect(r1.status, String((r1 as PromiseRejectedResult).reason)).toBe('fulfilled');
    expect(r2.status, String((r2 as PromiseRejectedResult).reason)).toBe('fulfilled');
    expect((r1 as PromiseFulfilledResult<Outcome>).value).toMatchObject({
      state: 'done',
      role: 'took-over', // a retry of a failed attempt
      token: 2,
      result: 'retried',
    });
    expect((r2 as PromiseFulfilledResult<Outcome>).value).toMatchObject({
      state: 'done',
      role: 'watched',
      result: 'holder',
    });
    expect(t2Ran).toBe(false);
    expect(held.state.aborted).toBe(false);
  });
});
