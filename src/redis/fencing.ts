import type { Cluster, Redis } from 'ioredis';
import { InvalidOptionError } from '../shared/errors.js';
import { callScript } from './scripts.js';

export type FencedWriteResult =
  | { readonly ok: true; readonly previousToken: number }
  | { readonly ok: false; readonly currentToken: number };

/**
 * Write `value` to a resource kept in Redis only if `token` is higher than every token
 * the resource has accepted (one atomic script). Pass the `token` of your grant
 * (HandlerContext.token). A holder that was paused past its lease and resumes still
 * believes it owns the task; this is where it is stopped.
 *
 * The resource is a hash with the fields `token` and `value`.
 *
 * For SQL, the same rule is one statement:
 *   UPDATE accounts SET balance = $2, fence = $1 WHERE id = $3 AND fence < $1
 * and a write that updates no row was stale.
 */
export async function fencedWrite(
  redis: Redis | Cluster,
  key: string,
  token: number,
  value: string,
  opts: { ttlMs?: number } = {},
): Promise<FencedWriteResult> {
  if (!Number.isSafeInteger(token) || token < 1) {
    throw new InvalidOptionError(
      `Expected \`token\` to be a positive integer, got \`${String(token)}\``,
    );
  }
  const ttl = opts.ttlMs ?? 0;
  if (!Number.isInteger(ttl) || ttl < 0) {
    throw new InvalidOptionError(
      `Expected \`ttlMs\` to be an integer >= 0, got \`${String(ttl)}\``,
    );
  }
  const reply = (await callScript(redis, 'fencedWrite', [key, token, value, ttl])) as number[];
  if (reply[0] === 1) return { ok: true, previousToken: Number(reply[1]) };
  if (reply[0] === -12) return { ok: false, currentToken: Number(reply[1]) };
  throw new InvalidOptionError(
    `the key ${key} holds a ${String(reply[1])}, not a fenced resource (a hash)`,
  );
}

/** Read a fenced resource: its value and the highest token it accepted. */
export async function fencedRead(
  redis: Redis | Cluster,
  key: string,
): Promise<{ token: number; value: string } | null> {
  const [token, value] = await redis.hmget(key, 'token', 'value');
  if (token === null || token === undefined) return null;
  return { token: Number(token), value: value ?? '' };
}
