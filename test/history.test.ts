/**
 * The task history (lua/includes/history.lua, src/redis/history.ts): written by a pair's own
 * batches, with a failure and a takeover among them, and read back by `pairlock history`.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/program.js';
import { PairedWorker, type PairedWorkerOptions } from '../src/index.js';
import { readHistory } from '../src/redis/history.js';
import { Keys } from '../src/redis/keys.js';
import { RedisServer, TcpProxy } from '../src/testing/index.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
let server: RedisServer;
let admin: Redis;
let n = 0;

beforeAll(async () => {
  server = await RedisServer.start();
  admin = new Redis(server.url);
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

function worker(
  url: string,
  namespace: string,
  name: string,
  extra: Partial<PairedWorkerOptions> = {},
) {
  const w = new PairedWorker({ redis: url, namespace, name, ...extra });
  w.on('error', () => {});
  return w;
}

async function cli(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(['node', 'pairlock', '--redis', server.url, ...args], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
  });
  return { code, out, err };
}

describe('task history', () => {
  it('a pair records claims, a failure, a takeover and outcomes; `pairlock history` reads them back', async () => {
    const ns = `history-${++n}`;
    const proxy = await TcpProxy.start({ targetPort: server.port });
    const a = worker(proxy.url, ns, 'site-a', { failure: { maxAttempts: 1 } });
    const b = worker(server.url, ns, 'site-b');
    try {
      await Promise.all([a.start(), b.start()]);
      // t1: fails (a's only attempt)
      const failed = await a.run('t1', () => {
        throw Object.assign(new Error('card declined'), { code: 'E_CARD' });
      });
      expect(failed).toMatchObject({ state: 'failed' });
      // t2: a holds it, its connection is cut, b takes over and finishes it
      let started!: () => void;
      const running = new Promise<void>((r) => {
        started = r;
      });
      void a
        .run('t2', async ({ signal }) => {
          started();
          await new Promise((r) => signal.addEventListener('abort', r));
          return 'never';
        })
        .catch((e: unknown) => e);
      await running;
      const byB = b.run('t2', () => 'finished by b');
      await sleep(50);
      proxy.cut();
      expect(await byB).toMatchObject({
        state: 'done',
        role: 'took-over',
        result: 'finished by b',
      });

      // the library's reader
      const keys = new Keys('pairlock', ns);
      const t2 = await readHistory(admin, keys, { taskId: 't2' });
      expect(t2.map((t) => [t.kind, t.token, t.worker.split(':')[0]])).toEqual([
        ['fresh', 1, 'site-a'],
        ['connection-lost', 2, 'site-b'],
        ['done', 2, 'site-b'],
      ]);
      expect(t2[1]!.detail).toBe(t2[0]!.session); // taken over from a's session

      // the CLI: one task, as JSON and as a table
      const json = await cli(['--namespace', ns, 'history', 't1', '--json']);
      expect(json.code, json.err.join('\n')).toBe(0);
      const t1 = JSON.parse(json.out.join('\n')) as Record<string, unknown>[];
      expect(t1).toMatchObject([
        { taskId: 't1', kind: 'fresh', token: 1, attempt: 1, worker: t2[0]!.worker },
        {
          taskId: 't1',
          kind: 'failed',
          token: 1,
          worker: t2[0]!.worker,
          detail: 'E_CARD: card declined',
        },
      ]);
      expect(typeof t1[1]!.durationMs).toBe('number');
      const text = await cli(['--namespace', ns, 'history', 't2']);
      expect(text.code, text.err.join('\n')).toBe(0);
      expect(text.out[0]).toMatch(/^TIME\s+EVENT\s+TOKEN\s+ATTEMPT\s+WORKER\s+DURATION\s+DETAIL$/);
      expect(text.out[2]).toMatch(/connection-lost\s+2\s+2\s+site-b:\S+\s+from site-a:\S+#/);
      expect(text.out[3]).toMatch(/done\s+2\s+2\s+site-b:\S+\s+\d+ ms/);
      // the namespace: every transition, each with its task
      const all = await cli(['--namespace', ns, 'history', '--json']);
      const kinds = (JSON.parse(all.out.join('\n')) as { taskId: string; kind: string }[]).map(
        (t) => `${t.taskId}:${t.kind}`,
      );
      expect(kinds).toEqual(['t1:fresh', 't1:failed', 't2:fresh', 't2:connection-lost', 't2:done']);
      // an unknown task: exit 3 (unknown task), saying why there may be none
      const none = await cli(['--namespace', ns, 'history', 'nope']);
      expect(none.code).not.toBe(0);
      expect(none.err.join('\n')).toMatch(/no transitions of task "nope"/);
    } finally {
      proxy.heal();
      await Promise.allSettled([a.close(), b.close()]);
      await proxy.close();
    }
  });

  it('historyLength 0 writes none; the stream is capped at historyLength entries (one per batch)', async () => {
    const ns = `history-${++n}`;
    const keys = new Keys('pairlock', ns);
    const off = worker(server.url, ns, 'off', { historyLength: 0 });
    await off.run('quiet', () => 1);
    expect(await admin.exists(keys.history)).toBe(0);
    await off.close();
    const capped = worker(server.url, ns, 'capped', { historyLength: 10 });
    for (let i = 0; i < 300; i++) await capped.run(`t${i}`, () => i);
    await capped.close();
    // MAXLEN ~ trims whole nodes of the stream: a little over the length, never unbounded
    const len = await admin.xlen(keys.history);
    expect(len).toBeGreaterThanOrEqual(10);
    expect(len).toBeLessThan(300);
  });
});
