/**
 * Multi-server Redis setups for tests: master + replicas + sentinels, a cluster, or N
 * independent masters (quorum mode). All run the redis-server binary on 127.0.0.1; containers
 * are not an option here because the nodes address each other by loopback ports.
 */
import { writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { requireRedisServerBinary } from './binary.js';
import { RedisServerStartError } from './errors.js';
import { freeClusterPort } from './ports.js';
import { RedisServer } from './redis-server.js';
import {
  command,
  guarded,
  HOST,
  type HostPort,
  infoField,
  makeTmpDir,
  pairs,
  range,
  startAll,
  stopAll,
  waitUntil,
} from './topology-support.js';

export type { HostPort } from './topology-support.js';

// ---------------------------------------------------------------------------------------------
// master + replicas + sentinels

export interface ReplicatedOptions {
  replicas?: number;
  sentinels?: number;
  masterName?: string;
  binary?: string;
  /** `sentinel down-after-milliseconds`. Default 1000: short so failover tests stay fast. */
  downAfterMs?: number;
  /** `sentinel failover-timeout`. Default 3000. */
  failoverTimeoutMs?: number;
  /** How long to wait for replication and sentinel discovery. Default 20 000 ms. */
  readyTimeoutMs?: number;
}

export interface ReplicatedTopology {
  master: RedisServer;
  replicas: RedisServer[];
  sentinels: RedisServer[];
  masterName: string;
  sentinelAddrs: HostPort[];
  /** Votes needed for ODOWN (a majority of the sentinels). */
  quorum: number;
  /**
   * Resolves with the new master once a majority of the sentinels report an address other than
   * the current master's (the original one, or the result of the previous call) and that node
   * answers INFO with role:master.
   */
  waitForFailover(timeoutMs?: number): Promise<HostPort>;
  /** The server (master, replica or sentinel) listening on `addr`, if it is one of ours. */
  serverAt(addr: HostPort): RedisServer | undefined;
  /** Stops sentinels first (so they do not react to the data nodes going away), then the rest. */
  close(): Promise<void>;
}

export async function startReplicated(opts: ReplicatedOptions = {}): Promise<ReplicatedTopology> {
  const nReplicas = opts.replicas ?? 1;
  const nSentinels = opts.sentinels ?? 3;
  const masterName = opts.masterName ?? 'pairlock';
  const downAfterMs = opts.downAfterMs ?? 1_000;
  const failoverTimeoutMs = opts.failoverTimeoutMs ?? 3_000;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  // A majority, so ODOWN needs most sentinels: 2 of 3 (the usual setup), 1 of 1, 3 of 5.
  const quorum = Math.floor(nSentinels / 2) + 1;
  const binary = requireRedisServerBinary(opts.binary);
  const dir = makeTmpDir('replicated');
  const started: RedisServer[] = [];

  return guarded(dir, started, async () => {
    const [master] = await startAll([() => RedisServer.start({ binary })], started);
    if (!master) throw new Error('master did not start');
    const replicas = await startAll(
      range(nReplicas).map(
        () => () => RedisServer.start({ binary, args: ['--replicaof', HOST, String(master.port)] }),
      ),
      started,
    );

    await waitUntil(
      `${nReplicas} replica(s) in sync with ${master.url}`,
      readyTimeoutMs,
      async () => {
        const info = String(await command(master.address, 'INFO', 'replication'));
        if (Number(infoField(info, 'connected_slaves')) < nReplicas) return false;
        if ((info.match(/state=online/g) ?? []).length < nReplicas) return false;
        for (const r of replicas) {
          const rinfo = String(await command(r.address, 'INFO', 'replication'));
          if (infoField(rinfo, 'master_link_status') !== 'up') return false;
        }
        return true;
      },
    );

    const sentinels = await startAll(
      range(nSentinels).map((i) => () => {
        const conf = path.join(dir, `sentinel-${i}.conf`);
        writeFileSync(
          conf,
          [
            'sentinel resolve-hostnames no',
            `sentinel monitor ${masterName} ${HOST} ${master.port} ${quorum}`,
            `sentinel down-after-milliseconds ${masterName} ${downAfterMs}`,
            `sentinel failover-timeout ${masterName} ${failoverTimeoutMs}`,
            '',
          ].join('\n'),
        );
        return RedisServer.start({ binary, configFile: conf, args: ['--sentinel'] });
      }),
      started,
    );

    // Sentinels find each other through hello messages on the master (every 2 s), and replicas
    // through the master's INFO. Until they have, a failover cannot get its majority, so a test
    // that kills the master right away would wait for nothing.
    await waitUntil(
      `${nSentinels} sentinel(s) to discover the topology`,
      readyTimeoutMs,
      async () => {
        for (const s of sentinels) {
          const m = pairs(await command(s.address, 'SENTINEL', 'MASTER', masterName));
          if (m.get('flags') !== 'master') return false;
          if (Number(m.get('num-slaves')) < nReplicas) return false;
          if (Number(m.get('num-other-sentinels')) < nSentinels - 1) return false;
        }
        return true;
      },
    );

    let current: HostPort = master.address;
    const all = (): RedisServer[] => [master, ...replicas, ...sentinels];
    let closing: Promise<void> | undefined;

    return {
      master,
      replicas,
      sentinels,
      masterName,
      sentinelAddrs: sentinels.map((s) => s.address),
      quorum,
      serverAt: (addr) => all().find((s) => s.port === addr.port && s.host === addr.host),
      async waitForFailover(timeoutMs = 30_000) {
        if (sentinels.length === 0) throw new Error('waitForFailover needs at least one sentinel');
        let found: HostPort | undefined;
        await waitUntil(
          `sentinels to fail over '${masterName}' away from ${current.host}:${current.port}`,
          timeoutMs,
          async () => {
            const answers = await Promise.all(
              sentinels
                .filter((s) => s.running)
                .map((s) =>
                  command(s.address, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName).catch(
                    () => null,
                  ),
                ),
            );
            const votes = new Map<string, number>();
            for (const a of answers) {
              if (!Array.isArray(a) || a.length < 2) continue;
              const key = `${a[0]}:${a[1]}`;
              votes.set(key, (votes.get(key) ?? 0) + 1);
            }
            for (const [key, n] of votes) {
              const sep = key.lastIndexOf(':');
              const addr = { host: key.slice(0, sep), port: Number(key.slice(sep + 1)) };
              if (n < quorum || (addr.host === current.host && addr.port === current.port))
                continue;
              const info = String(await command(addr, 'INFO', 'replication'));
              if (infoField(info, 'role') !== 'master') continue;
              found = addr;
              return true;
            }
            return false;
          },
        );
        current = found!;
        return found!;
      },
      close() {
        closing ??= (async () => {
          await stopAll(sentinels);
          await stopAll([master, ...replicas]);
          await rm(dir, { recursive: true, force: true }).catch(() => {});
        })();
        return closing;
      },
    };
  });
}

// ---------------------------------------------------------------------------------------------
// cluster

export interface ClusterOptions {
  masters?: number;
  /**
   * Replicas per master (default 0). Each replica is a cluster node of its own that
   * replicates its master (CLUSTER REPLICATE), ready for CLUSTER FAILOVER.
   */
  replicas?: number;
  binary?: string;
  /** `cluster-node-timeout`. Default 2000 ms. */
  nodeTimeoutMs?: number;
  /** How long to wait for cluster_state:ok everywhere. Default 20 000 ms. */
  readyTimeoutMs?: number;
}

export interface ClusterTopology {
  /** Every node: the masters (in slot order), then the replicas (`replicas`). */
  nodes: RedisServer[];
  /** The masters as started: master i owned the i-th even share of the slots. */
  masters: RedisServer[];
  /** The replicas as started: those of master i at [i * replicas, (i + 1) * replicas). */
  replicas: RedisServer[];
  startupNodes: HostPort[];
  close(): Promise<void>;
}

const CLUSTER_SLOTS = 16_384;
/** Port races retried per node; the nodes.conf name depends on the port, so we pick it here. */
const CLUSTER_START_ATTEMPTS = 5;

async function startClusterNode(
  dir: string,
  binary: string,
  nodeTimeoutMs: number,
): Promise<RedisServer> {
  for (let attempt = 1; ; attempt++) {
    const port = await freeClusterPort();
    try {
      return await RedisServer.start({
        binary,
        port,
        args: [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          path.join(dir, `nodes-${port}.conf`),
          '--cluster-node-timeout',
          String(nodeTimeoutMs),
        ],
      });
    } catch (err) {
      if (
        !(err instanceof RedisServerStartError) ||
        !err.portInUse ||
        attempt >= CLUSTER_START_ATTEMPTS
      ) {
        throw err;
      }
    }
  }
}

async function addSlots(addr: HostPort, first: number, last: number): Promise<void> {
  try {
    await command(addr, 'CLUSTER', 'ADDSLOTSRANGE', String(first), String(last));
  } catch (err) {
    // Redis < 7 has no ADDSLOTSRANGE
    if (!/unknown subcommand|syntax/i.test(String(err))) throw err;
    const slots = range(last - first + 1).map((i) => String(first + i));
    await command(addr, 'CLUSTER', 'ADDSLOTS', ...slots);
  }
}

export async function startCluster(opts: ClusterOptions = {}): Promise<ClusterTopology> {
  const n = opts.masters ?? 3;
  if (n < 1) throw new Error('startCluster needs at least one master');
  const perMaster = opts.replicas ?? 0;
  if (!Number.isInteger(perMaster) || perMaster < 0)
    throw new Error('startCluster: replicas must be an integer >= 0');
  const total = n * (1 + perMaster);
  const nodeTimeoutMs = opts.nodeTimeoutMs ?? 2_000;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  const binary = requireRedisServerBinary(opts.binary);
  const dir = makeTmpDir('cluster');
  const started: RedisServer[] = [];

  return guarded(dir, started, async () => {
    const masters = await startAll(
      range(n).map(() => () => startClusterNode(dir, binary, nodeTimeoutMs)),
      started,
    );
    const replicas = await startAll(
      range(n * perMaster).map(() => () => startClusterNode(dir, binary, nodeTimeoutMs)),
      started,
    );
    const nodes = [...masters, ...replicas];
    // Master i owns [i*16384/n, (i+1)*16384/n - 1]: contiguous, even, covering every slot.
    await Promise.all(
      masters.map((node, i) =>
        addSlots(
          node.address,
          Math.floor((i * CLUSTER_SLOTS) / n),
          Math.floor(((i + 1) * CLUSTER_SLOTS) / n) - 1,
        ),
      ),
    );
    const [first] = nodes;
    for (const node of nodes.slice(1)) {
      await command(first!.address, 'CLUSTER', 'MEET', HOST, String(node.port));
    }
    if (replicas.length > 0) {
      // a replica may replicate a master only once it knows that node (by gossip)
      const ids = await Promise.all(
        masters.map(async (m) => String(await command(m.address, 'CLUSTER', 'MYID'))),
      );
      await Promise.all(
        replicas.map((r, j) =>
          waitUntil(`${r.url} to replicate its master`, readyTimeoutMs, async () => {
            await command(r.address, 'CLUSTER', 'REPLICATE', ids[Math.floor(j / perMaster)]!);
            return true;
          }),
        ),
      );
    }
    // cluster_state:ok alone can show up before every node knows every other; clients that
    // start then may be redirected around, so wait for the full view on each node.
    await waitUntil(`cluster_state:ok on ${total} node(s)`, readyTimeoutMs, async () => {
      for (const node of nodes) {
        const info = String(await command(node.address, 'CLUSTER', 'INFO'));
        if (infoField(info, 'cluster_state') !== 'ok') return false;
        if (Number(infoField(info, 'cluster_known_nodes')) !== total) return false;
        if (Number(infoField(info, 'cluster_slots_ok')) !== CLUSTER_SLOTS) return false;
        if (replicas.length > 0) {
          // every node's view (gossip) knows every replica as one
          const view = String(await command(node.address, 'CLUSTER', 'NODES'));
          const seen = view.split('\n').filter((l) => l.split(' ')[2]?.includes('slave'));
          if (seen.length !== replicas.length) return false;
        }
      }
      for (const r of replicas) {
        const info = String(await command(r.address, 'INFO', 'replication'));
        if (infoField(info, 'role') !== 'slave') return false;
        if (infoField(info, 'master_link_status') !== 'up') return false;
      }
      // every master's replicas are known to it (and so to a CLUSTER FAILOVER's vote)
      for (const m of masters) {
        const info = String(await command(m.address, 'INFO', 'replication'));
        if (Number(infoField(info, 'connected_slaves')) < perMaster) return false;
      }
      return true;
    });

    let closing: Promise<void> | undefined;
    return {
      nodes,
      masters,
      replicas,
      startupNodes: nodes.map((s) => s.address),
      close() {
        closing ??= (async () => {
          await stopAll(nodes);
          await rm(dir, { recursive: true, force: true }).catch(() => {});
        })();
        return closing;
      },
    };
  });
}

// ---------------------------------------------------------------------------------------------
// independent masters

export interface IndependentTopology {
  nodes: RedisServer[];
  addrs: HostPort[];
  close(): Promise<void>;
}

/** `n` unrelated masters, e.g. for quorum (Redlock-style) locking. */
export async function startIndependent(
  n: number,
  opts: { binary?: string } = {},
): Promise<IndependentTopology> {
  const binary = requireRedisServerBinary(opts.binary);
  const started: RedisServer[] = [];
  let nodes: RedisServer[];
  try {
    nodes = await startAll(
      range(n).map(() => () => RedisServer.start({ binary })),
      started,
    );
  } catch (err) {
    await stopAll(started);
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    nodes,
    addrs: nodes.map((s) => s.address),
    close() {
      closing ??= stopAll(nodes);
      return closing;
    },
  };
}
