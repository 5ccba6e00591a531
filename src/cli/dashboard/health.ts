/**
 * What the page says when Redis cannot be read: plain words instead of the Redis client's
 * internals ("Stream isn't writeable and enableOfflineQueue options is false" means no
 * more than that the connection is down and the client is reconnecting).
 */

/** Messages of the client library that mean "not connected", whatever their wording. */
const NOT_CONNECTED: [RegExp, string][] = [
  [/ECONNREFUSED\s*([^\s)]*)/, 'connection refused'],
  [/ECONNRESET|EPIPE|socket hang up/i, 'connection reset'],
  [/ETIMEDOUT|timed? ?out/i, 'no answer in time'],
  [/ENOTFOUND|EAI_AGAIN\s*([^\s)]*)/, 'address not found'],
  [/EHOSTUNREACH|ENETUNREACH/, 'host unreachable'],
  [/Stream isn't writeable|enableOfflineQueue|Connection is closed|max retries per request/i, ''],
  [/no node answered/i, ''],
];

/** One line for the page: `no connection to Redis (connection refused: host:port)`, or the message as it is. */
export function redisProblem(err: unknown): string {
  const message = (err as Error)?.message ?? String(err);
  for (const [re, words] of NOT_CONNECTED) {
    const m = re.exec(message);
    if (!m) continue;
    const where = m[1] ? `: ${m[1]}` : '';
    return words ? `no connection to Redis (${words}${where})` : 'no connection to Redis';
  }
  return message;
}

/** A status line of the event feed (`… lost (<error>); reconnecting…`) with its error in plain words. */
export function plainLine(line: string): string {
  return line.replace(/\(([^()]*)\)/, (all, inner: string) => {
    const said = redisProblem(new Error(inner));
    if (said === inner) return all;
    const words = /^no connection to Redis \((.*)\)$/.exec(said)?.[1];
    return `(${words ?? 'disconnected'})`;
  });
}
