/** Finding the redis-server binary: an explicit path, `REDIS_SERVER_BIN`, or a search of PATH. */
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';
import { HarnessUnavailableError } from './errors.js';

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Absolute path of the binary to run, or undefined when there is none. */
export function resolveBinary(binary?: string): string | undefined {
  const name = binary ?? process.env.REDIS_SERVER_BIN ?? 'redis-server';
  if (name.includes('/') || name.includes(path.sep)) {
    return isExecutableFile(name) ? path.resolve(name) : undefined;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/** True when the redis-server binary (REDIS_SERVER_BIN or PATH, or `binary`) is usable. */
export function redisServerAvailable(binary?: string): boolean {
  return resolveBinary(binary) !== undefined;
}

/** Throws HarnessUnavailableError unless the binary exists (topologies need real processes). */
export function requireRedisServerBinary(binary?: string): string {
  const found = resolveBinary(binary);
  if (!found) throw new HarnessUnavailableError(missingBinaryMessage(binary));
  return found;
}

/** What to install when no Redis can be started; `extra` says why the container path failed. */
export function missingBinaryMessage(binary?: string, extra?: string): string {
  const name = binary ?? process.env.REDIS_SERVER_BIN ?? 'redis-server';
  return (
    `cannot start Redis: '${name}' was not found on PATH` +
    (extra ? ` and ${extra}` : '') +
    `. Install redis-server (e.g. 'apt-get install redis-server' or 'brew install redis'), ` +
    `point REDIS_SERVER_BIN at a redis-server binary, or run a container runtime (Docker/Podman) ` +
    `so testcontainers can start redis:7.`
  );
}
