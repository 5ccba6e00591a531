import { spawnSync } from 'node:child_process';
import { defineConfig } from 'vitest/config';

/**
 * Tests start their own Redis: a redis-server child process, or a container through
 * testcontainers where no binary exists. Some suites need several redis-server processes
 * with flags of their own (replicas and sentinels, a cluster, AOF, TLS, ACL users) and run
 * only where the binary is present; without it they are left out, and said so.
 */
const binary = process.env.REDIS_SERVER_BIN ?? 'redis-server';
const hasBinary = spawnSync(binary, ['--version'], { stdio: 'ignore' }).status === 0;
const needBinary = [
  'test/topology/**',
  'test/chaos.test.ts',
  'test/security.test.ts',
  'test/harness.test.ts',
];
if (!hasBinary) {
  console.warn(
    `pairlock tests: no ${binary} binary found; Redis runs in containers, and these suites, which need the binary, are skipped: ${needBinary.join(', ')}`,
  );
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['**/node_modules/**', ...(hasBinary ? [] : needBinary)],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // each file starts its own redis-server processes; two cores, so keep files few at once
    maxWorkers: 2,
    minWorkers: 1,
  },
});
