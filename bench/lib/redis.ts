/** Redis helpers: servers the bench starts itself, and INFO parsing. */
import { Redis } from 'ioredis';
import { RedisServer } from '../../src/testing/index.js';

export interface BenchRedis {
  readonly server: RedisServer;
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** A connection of the bench's own (INFO, FLUSHALL); never given to a measured client. */
  readonly admin: Redis;
  version: string;
  flush(): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<BenchRedis> {
  const server = await RedisServer.start();
  const admin = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  admin.on('error', () => {});
  await admin.connect();
  const info = parseInfo(await admin.info('server'));
  return {
    server,
    url: server.url,
    host: server.host,
    port: server.port,
    admin,
    version: info.redis_version ?? 'unknown',
    async flush() {
      await admin.flushall();
      await admin.config('RESETSTAT');
    },
    async stop() {
      admin.disconnect();
      await server.stop();
    },
  };
}

export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i <= 0 || line.startsWith('#')) continue;
    out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

export interface CommandStat {
  calls: number;
  usec: number;
}

/** INFO commandstats as { command: { calls, usec } } (commands run inside scripts included). */
export async function commandStats(admin: Redis): Promise<Map<string, CommandStat>> {
  const out = new Map<string, CommandStat>();
  const info = parseInfo(await admin.info('commandstats'));
  for (const [k, v] of Object.entries(info)) {
    if (!k.startsWith('cmdstat_')) continue;
    const calls = /calls=(\d+)/.exec(v);
    const usec = /usec=(\d+)/.exec(v);
    out.set(k.slice('cmdstat_'.length), {
      calls: Number(calls?.[1] ?? 0),
      usec: Number(usec?.[1] ?? 0),
    });
  }
  return out;
}

export function statsDelta(
  before: Map<string, CommandStat>,
  after: Map<string, CommandStat>,
): Map<string, CommandStat> {
  const out = new Map<string, CommandStat>();
  for (const [k, a] of after) {
    const b = before.get(k) ?? { calls: 0, usec: 0 };
    const calls = a.calls - b.calls;
    if (calls > 0) out.set(k, { calls, usec: a.usec - b.usec });
  }
  return out;
}

export async function usedMemory(admin: Redis): Promise<number> {
  return Number(parseInfo(await admin.info('memory')).used_memory ?? Number.NaN);
}
