/**
 * Helpers of the multi-server setups (topologies.ts): short-lived admin clients, polling,
 * starting and stopping groups of servers without leaking any.
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { RedisServer } from './redis-server.js';

export interface HostPort {
  host: string;
  port: number;
}

export const HOST = '127.0.0.1';
/** Poll period while waiting for replication, sentinels, cluster state or a failover. */
export const POLL_MS = 50;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Runs `fn` with a short-lived client that never retries: a dead node fails fast. */
export async function withClient<T>(
  addr: HostPort,
  fn: (c: Redis) => Promise<T>,
  timeoutMs = 2_000,
): Promise<T> {
  const client = new Redis({
    host: addr.host,
    port: addr.port,
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableReadyCheck: false,
    enableOfflineQueue: false,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    return await fn(client);
  } finally {
    client.disconnect();
  }
}

export async function command(addr: HostPort, ...args: string[]): Promise<unknown> {
  const [name, ...rest] = args;
  return withClient(addr, (c) => c.call(name!, ...rest));
}

/** Polls `check` until it returns true; errors count as "not yet". */
export async function waitUntil(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      lastError = err;
    }
    await sleep(POLL_MS);
  }
  const detail = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
}

export function infoField(info: string, field: string): string | undefined {
  const m = new RegExp(`^${field}:(.*)$`, 'm').exec(info);
  return m?.[1]?.trim();
}

/** Flat [k1, v1, k2, v2, ...] reply (SENTINEL MASTER) to a map. */
export function pairs(reply: unknown): Map<string, string> {
  const out = new Map<string, string>();
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) out.set(String(reply[i]), String(reply[i + 1]));
  return out;
}

/**
 * Starts all servers concurrently. If any fails, the ones that did start are stopped before the
 * error is rethrown, so a failed setup leaks nothing (Promise.all would leave late starters).
 */
export async function startAll(
  factories: Array<() => Promise<RedisServer>>,
  into: RedisServer[],
): Promise<RedisServer[]> {
  const results = await Promise.allSettled(factories.map((f) => f()));
  const ok: RedisServer[] = [];
  let failure: unknown;
  for (const r of results) {
    if (r.status === 'fulfilled') ok.push(r.value);
    else failure ??= r.reason;
  }
  into.push(...ok);
  if (failure !== undefined) throw failure;
  return ok;
}

export async function stopAll(servers: RedisServer[]): Promise<void> {
  await Promise.allSettled(servers.map((s) => s.stop()));
}

export function makeTmpDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `pairlock-${prefix}-`));
}

/** Runs `setup`; on failure stops everything in `started`, removes `dir`, rethrows. */
export async function guarded<T>(
  dir: string,
  started: RedisServer[],
  setup: () => Promise<T>,
): Promise<T> {
  try {
    return await setup();
  } catch (err) {
    await stopAll(started);
    await rm(dir, { recursive: true, force: true }).catch(() => {});
    throw err;
  }
}

export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
