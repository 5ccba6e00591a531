/**
 * One side of a benchmark pair, in its own process (started by bench/lib/child.ts with
 * `node --import tsx`). The parent sends `init` with a role; the side answers `ready`,
 * then works on `go` and reports with `result`. `exit` ends the process.
 */
import { Worker as BullWorker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import Redlock from 'redlock';
import { PairedWorker } from '../src/index.js';
import { OriginalPairedWorker, runOriginal } from './baseline.js';
import { type Counts, diffCounts, installCommandCounter } from './lib/counting.js';
import { absNow, pool, sleep } from './lib/stats.js';
import { BareProbe } from './probe.js';

type Msg = { type: string } & Record<string, unknown>;

const commandCounts = installCommandCounter();

const send = (m: Msg) => {
  if (process.connected) process.send?.(m);
};
const inbox: Msg[] = [];
const waiters: { type: string; resolve: (m: Msg) => void }[] = [];
process.on('message', (m: Msg) => {
  if (m.type === 'exit') {
    void shutdown().finally(() => process.exit(0));
    return;
  }
  const i = waiters.findIndex((w) => w.type === m.type);
  if (i >= 0) waiters.splice(i, 1)[0]?.resolve(m);
  else inbox.push(m);
});
// the parent is gone: nothing left to measure for
process.on('disconnect', () => process.exit(0));

function next(type: string): Promise<Msg> {
  const i = inbox.findIndex((m) => m.type === type);
  if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0] as Msg);
  return new Promise((resolve) => waiters.push({ type, resolve }));
}

const cleanups: (() => Promise<unknown> | unknown)[] = [];
async function shutdown(): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch {
      // best effort: the process ends anyway
    }
  }
}

interface ThroughputInit {
  url: string;
  n: number;
  concurrency: number;
  prefix: string;
  name: string;
  capMs: number;
  /** 0: a trivial handler; otherwise the handler waits this long (a timer, no CPU). */
  handlerMs?: number;
}

/** Counts one execution; the handler's own work, when it has any. */
type Exec = () => Promise<void> | undefined;

/** Shared shape of the pair-throughput sides: run every task, record when each finished. */
async function throughputSide(
  init: ThroughputInit,
  setup: () => Promise<(i: number, exec: Exec) => Promise<void>>,
): Promise<void> {
  const runTask = await setup();
  send({ type: 'ready' });
  // warm-up on tasks of their own (JIT, connections), both sides at once, bounded
  const handlerMs = init.handlerMs ?? 0;
  const warm = await next('warm');
  await sleep(Math.max(0, Number(warm.startAt) - absNow()));
  await Promise.race([
    pool(Number(warm.n), init.concurrency, absNow() + Number(warm.capMs), (i) =>
      runTask(-1 - i, () => (handlerMs > 0 ? sleep(handlerMs) : undefined)).catch(() => {}),
    ),
    sleep(Number(warm.capMs) + 50),
  ]);
  send({ type: 'warmed' });
  const go = await next('go');
  const startAt = Number(go.startAt);
  await sleep(Math.max(0, startAt - absNow()));
  const completions = new Float64Array(init.n).fill(Number.NaN);
  let executions = 0;
  let errors = 0;
  let firstError = '';
  const start = absNow();
  const before: Counts = commandCounts();
  const stopAt = start + init.capMs;
  const work = pool(init.n, init.concurrency, stopAt, async (i) => {
    try {
      await runTask(i, () => {
        executions += 1;
        return handlerMs > 0 ? sleep(handlerMs) : undefined;
      });
      completions[i] = absNow();
    } catch (err) {
      errors += 1;
      firstError ||= String((err as Error)?.message ?? err);
    }
  });
  // a capped run reports what finished in time; tasks still waiting are abandoned
  await Promise.race([work, sleep(init.capMs + 50)]);
  const commands = diffCounts(before, commandCounts());
  send({ type: 'result', start, completions, executions, errors, firstError, commands });
}

async function main(): Promise<void> {
  const init = await next('init');
  const role = String(init.role);
  switch (role) {
    case 'tp-pairlock': {
      const i = init as unknown as ThroughputInit & { namespace: string };
      await throughputSide(i, async () => {
        const worker = new PairedWorker({ redis: i.url, namespace: i.namespace, name: i.name });
        cleanups.push(() => worker.close());
        await worker.start();
        return async (k, exec) => {
          await worker.run(`${i.prefix}${k}`, () => {
            const busy = exec();
            return busy ? busy.then(() => k) : k;
          });
        };
      });
      break;
    }
    case 'tp-baseline': {
      const i = init as unknown as ThroughputInit & { first?: number; other?: number };
      await throughputSide(i, async () => {
        const client = new Redis(i.url);
        cleanups.push(() => client.quit());
        const w = new OriginalPairedWorker(client, {
          ...(i.first !== undefined ? { firstAttemptInterval: i.first } : {}),
          ...(i.other !== undefined ? { otherAttemptInterval: i.other } : {}),
        });
        cleanups.push(() => w.stop());
        await client.ping();
        return async (k, exec) => {
          await runOriginal(w, `${i.prefix}${k}`, exec);
        };
      });
      break;
    }
    case 'tp-probe': {
      const i = init as unknown as ThroughputInit;
      await throughputSide(i, async () => {
        const client = new Redis(i.url);
        const subscriber = new Redis(i.url);
        cleanups.push(
          () => client.quit(),
          () => subscriber.quit(),
        );
        const probe = new BareProbe(client, subscriber, `${i.prefix}probe-events`);
        await probe.start();
        return (k, exec) => probe.run(`${i.prefix}${k}`, exec);
      });
      break;
    }
    case 'tp-redlock': {
      const i = init as unknown as ThroughputInit & { ttlMs: number };
      await throughputSide(i, async () => {
        const client = new Redis(i.url);
        cleanups.push(() => client.quit());
        const redlock = new Redlock([client], { retryCount: 0 });
        redlock.on('error', () => {});
        await client.ping();
        return async (k, exec) => {
          let lock: Awaited<ReturnType<typeof redlock.acquire>>;
          try {
            lock = await redlock.acquire([`${i.prefix}${k}`], i.ttlMs);
          } catch {
            // held by the peer: a plain lock tells the loser nothing more
            return;
          }
          await exec();
          await lock.release();
        };
      });
      break;
    }
    case 'bull-worker': {
      // throughput (trivial processor) or crash victim (processor that never returns)
      const url = new URL(String(init.url));
      const hang = init.hang === true;
      const completions: number[] = [];
      let active = 0;
      const holdCount = Number(init.holdCount ?? 0);
      const worker = new BullWorker(
        String(init.queue),
        async (job: Job) => {
          if (!hang) return job.id;
          active += 1;
          if (active === holdCount) send({ type: 'holding' });
          await new Promise(() => {});
          return undefined;
        },
        {
          connection: { host: url.hostname, port: Number(url.port), maxRetriesPerRequest: null },
          concurrency: Number(init.concurrency),
          ...(init.workerOpts as object),
        },
      );
      worker.on('error', () => {});
      worker.on('completed', () => {
        completions.push(absNow());
      });
      cleanups.push(() => worker.close(true));
      await worker.waitUntilReady();
      send({ type: 'ready' });
      const timer = setInterval(() => send({ type: 'progress', count: completions.length }), 20);
      cleanups.push(() => clearInterval(timer));
      await next('report');
      send({ type: 'result', completions: Float64Array.from(completions) });
      break;
    }
    case 'crash-holder': {
      // a pairlock worker that claims every task and holds it until it is killed
      const tasks = init.tasks as string[];
      const worker = new PairedWorker({
        redis: String(init.url),
        namespace: String(init.namespace),
        name: 'holder',
        // 0: the library default
        sessionTtlMs: Number(init.sessionTtlMs) || undefined,
        connectionBound: init.connectionBound !== false,
      });
      await worker.start();
      let started = 0;
      for (const t of tasks) {
        worker
          .run(t, ({ signal }) => {
            started += 1;
            if (started === tasks.length) send({ type: 'holding' });
            return new Promise((resolve) => signal.addEventListener('abort', resolve));
          })
          .catch(() => {});
      }
      send({ type: 'ready' });
      await new Promise(() => {});
      break;
    }
    case 'scale-holder':
    case 'scale-standby': {
      // scale: the holder claims n tasks whose handlers wait; the standby covers them all
      const holder = role === 'scale-holder';
      const n = Number(init.n);
      const prefix = String(init.prefix);
      const batch = Number(init.batch);
      const worker = new PairedWorker({
        redis: String(init.url),
        namespace: String(init.namespace),
        name: holder ? 'holder' : 'standby',
        crashGraceMs: Number(init.crashGraceMs),
      });
      let reached = 0;
      if (holder) {
        worker.on('claimed', () => {
          reached += 1;
        });
      } else {
        worker.on('standby', () => {
          reached += 1;
        });
      }
      await worker.start();
      send({ type: 'ready' });
      await next('go');
      const t0 = absNow();
      const giveUpAt = t0 + Number(init.capMs);
      for (let k = 0; k < n && absNow() < giveUpAt; k += batch) {
        const target = Math.min(n, k + batch);
        for (let j = k; j < target; j++) {
          worker
            .run(`${prefix}${j}`, ({ signal }) =>
              holder
                ? new Promise((resolve) => signal.addEventListener('abort', resolve))
                : undefined,
            )
            .catch(() => {});
        }
        while (reached < target && absNow() < giveUpAt) await sleep(2);
      }
      send({ type: 'reached', count: reached, ms: absNow() - t0, counts: commandCounts() });
      for (;;) {
        await next('counts');
        send({ type: 'counts', counts: commandCounts(), at: absNow() });
      }
    }
    default:
      throw new Error(`unknown role ${role}`);
  }
  // keep the process (and its connections) until the parent says exit
  await new Promise(() => {});
}

main().catch((err: unknown) => {
  send({ type: 'error', message: String((err as Error)?.stack ?? err) });
  setTimeout(() => process.exit(1), 100);
});
