/**
 * Counts every command this process sends to Redis, over all ioredis connections
 * (pub/sub and blocking connections included), by name; pairlock's scripts by their
 * name (`evalsha:claim`). Commands run inside a script on the server are not counted:
 * these are round trips.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { loadScripts } from '../../src/redis/scripts.js';

export type Counts = Record<string, number>;

const counts: Counts = {};
let installed = false;
let shaNames: Map<string, string> | undefined;

function scriptName(sha: string): string {
  shaNames ??= new Map(Object.values(loadScripts()).map((d) => [d.sha1, d.name]));
  return shaNames.get(sha) ?? 'other';
}

function keyOf(command: { name: string; args: unknown[] }): string {
  const c = command.name.toLowerCase();
  if (c === 'evalsha') return `evalsha:${scriptName(String(command.args[0]))}`;
  if (c === 'eval') {
    const sha = createHash('sha1')
      .update(String(command.args[0] ?? ''))
      .digest('hex');
    return `eval:${scriptName(sha)}`;
  }
  return c;
}

export function installCommandCounter(): () => Counts {
  if (!installed) {
    installed = true;
    const proto = Redis.prototype as unknown as {
      sendCommand: (
        this: Redis,
        command: { name: string; args: unknown[] },
        stream?: unknown,
      ) => unknown;
    };
    const original = proto.sendCommand;
    proto.sendCommand = function (this: Redis, command, stream) {
      const k = keyOf(command);
      counts[k] = (counts[k] ?? 0) + 1;
      return original.call(this, command, stream);
    };
  }
  return () => ({ ...counts });
}

export function diffCounts(a: Counts, b: Counts): Counts {
  const out: Counts = {};
  for (const [k, v] of Object.entries(b)) {
    const d = v - (a[k] ?? 0);
    if (d > 0) out[k] = d;
  }
  return out;
}

export function total(c: Counts): number {
  return Object.values(c).reduce((s, v) => s + v, 0);
}

/** `evalsha:claim 12, evalsha:settle 3` — the largest first. */
export function describeCounts(c: Counts, per = 1, digits = 2): string {
  return Object.entries(c)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${(v / per).toFixed(digits)}`)
    .join(', ');
}
