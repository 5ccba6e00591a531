/**
 * What every example shares: a Redis to run on (REDIS_URL, or a redis-server of its own
 * started through the test harness), a fresh namespace, and a check that ends the run.
 */
import { RedisServer } from '../src/testing/index.js';

export interface ExampleRedis {
  readonly url: string;
  /** The port, for a TcpProxy in front of it. */
  readonly port: number;
  /** A namespace no other run uses. */
  readonly namespace: string;
  stop(): Promise<void>;
}

export async function exampleRedis(name: string): Promise<ExampleRedis> {
  const namespace = `${name}-${process.pid}-${Date.now().toString(36)}`;
  const fromEnv = process.env.REDIS_URL;
  if (fromEnv) {
    const port = Number(new URL(fromEnv).port || 6379);
    return { url: fromEnv, port, namespace, stop: async () => {} };
  }
  const server = await RedisServer.start();
  return { url: server.url, port: server.port, namespace, stop: () => server.stop() };
}

/** Fail the example with a message (exit code 1). */
export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${message}`);
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    function onAbort() {
      clearTimeout(t);
      reject(signal?.reason);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/** Run an example's body; exit 0 when it checked out, 1 otherwise. */
export function runExample(body: () => Promise<void>): void {
  body().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
