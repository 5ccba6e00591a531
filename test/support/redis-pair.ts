import { afterAll, beforeAll } from 'vitest';
import { PairedWorker, type PairedWorkerOptions } from '../../src/index.js';
import { RedisServer } from '../../src/testing/index.js';

/**
 * One redis-server for a test file, and workers on it with the short timings tests use.
 * Registers its own beforeAll/afterAll; workers still open at the end are closed.
 */
export interface RedisPair {
  readonly server: RedisServer;
  readonly url: string;
  /** Every worker made so far and not yet closed by closeWorkers(). */
  readonly workers: PairedWorker[];
  worker(namespace: string, name: string, extra?: Partial<PairedWorkerOptions>): PairedWorker;
  /** A namespace no other test of the file uses. */
  namespace(prefix: string): string;
  closeWorkers(): Promise<void>;
}

export function useRedisPair(): RedisPair {
  let server: RedisServer | undefined;
  let counter = 0;
  const workers: PairedWorker[] = [];
  const fixture: RedisPair = {
    get server() {
      if (!server) throw new Error('the Redis of this test file is not started yet');
      return server;
    },
    get url() {
      return fixture.server.url;
    },
    workers,
    worker(namespace, name, extra = {}) {
      const w = new PairedWorker({
        redis: fixture.url,
        namespace,
        name,
        sessionTtlMs: 2_000,
        firstAttemptIntervalMs: 500,
        otherAttemptIntervalMs: 1_000,
        ...extra,
      });
      workers.push(w);
      return w;
    },
    namespace(prefix) {
      counter += 1;
      return `${prefix}${counter}`;
    },
    async closeWorkers() {
      await Promise.allSettled(workers.splice(0).map((w) => w.close()));
    },
  };
  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await fixture.closeWorkers();
    await server?.stop();
  });
  return fixture;
}
