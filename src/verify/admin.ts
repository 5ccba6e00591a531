import { Redis, type RedisOptions } from 'ioredis';

/*
 * What a run that owns its Redis servers may do to them besides restarting them: make a
 * server close one worker's connections (the sub-reset and cmd-reset faults). The worker
 * is found by the local ports of its proxy's upstream connections, which the server sees
 * as the clients' addresses.
 */

/**
 * Make the server at `node` close the connections that come from `ports`: its subscriber
 * connections when `pubsub`, else the others (CLIENT KILL). Answers how many it closed.
 */
export async function dropConnections(
  node: RedisOptions & { host: string; port: number },
  ports: ReadonlySet<number>,
  pubsub: boolean,
): Promise<number> {
  if (ports.size === 0) return 0;
  const admin = new Redis({ ...node, lazyConnect: true, maxRetriesPerRequest: 1 });
  admin.on('error', () => {});
  try {
    await admin.connect();
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
  } finally {
    admin.disconnect();
  }
}
