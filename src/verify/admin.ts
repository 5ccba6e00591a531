import { Redis, type RedisOptions } from 'ioredis';

/*
 * What a run that owns its Redis servers may do to them besides restarting them, over an
 * admin connection of the orchestrator (never through a worker's proxy): make a server
 * close one worker's connections (the sub-reset, cmd-reset and stall-close faults), or
 * stall it (redis-stall: DEBUG SLEEP, which needs `--enable-debug-command local` or `yes`;
 * client-pause: CLIENT PAUSE ALL). A worker is found by the local ports of its proxy's
 * upstream connections, which the server sees as the clients' addresses.
 */

type Node = RedisOptions & { host: string; port: number };

/** One short-lived admin connection to `node`, for `body`. */
async function withAdmin<T>(node: Node, body: (admin: Redis) => Promise<T>): Promise<T> {
  const admin = new Redis({
    ...node,
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    // no INFO before the first command: the server may be paused by another admin
    enableReadyCheck: false,
  });
  admin.on('error', () => {});
  try {
    await admin.connect();
    return await body(admin);
  } finally {
    admin.disconnect();
  }
}

/**
 * Make the server at `node` close the connections that come from `ports`: its subscriber
 * connections when `pubsub`, else the others (CLIENT KILL). Answers how many it closed.
 */
export async function dropConnections(
  node: Node,
  ports: ReadonlySet<number>,
  pubsub: boolean,
): Promise<number> {
  if (ports.size === 0) return 0;
  return withAdmin(node, async (admin) => {
    const list = String(await admin.call('CLIENT', 'LIST', 'TYPE', pubsub ? 'pubsub' : 'normal'));
    let closed = 0;
    for (const line of list.split('\n')) {
      const id = /\bid=(\d+)/.exec(line)?.[1];
      const port = /\baddr=\S*:(\d+)/.exec(line)?.[1];
      if (id && port && ports.has(Number(port))) {
        closed += Number(await admin.call('CLIENT', 'KILL', 'ID', id));
      }
    }
    return closed;
  });
}

/**
 * Stall the server at `node` for `ms` (the redis-stall fault: DEBUG SLEEP, a server that
 * runs nothing meanwhile, as during a slow script or a fork). Resolves when it answers
 * again.
 */
export async function debugSleep(node: Node, ms: number): Promise<void> {
  await withAdmin(node, (admin) => admin.call('DEBUG', 'SLEEP', (ms / 1_000).toFixed(3)));
}

/**
 * Make the server at `node` hold every client's commands for `ms` (the client-pause fault:
 * CLIENT PAUSE <ms> ALL). Resolves once the pause is in place (not when it ends).
 */
export async function clientPause(node: Node, ms: number): Promise<void> {
  await withAdmin(node, (admin) => admin.call('CLIENT', 'PAUSE', String(Math.round(ms)), 'ALL'));
}
