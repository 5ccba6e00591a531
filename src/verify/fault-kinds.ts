/**
 * The chaos run's fault kinds, and how the checks group them (common.ts re-exports them):
 * which ones run where, which may explain an overlap, a re-execution or a lost connection.
 * docs/reliability.md describes each kind.
 */
export type FaultKind =
  | 'kill'
  | 'pause'
  | 'redis-restart'
  | 'cut'
  | 'delay'
  | 'partition'
  | 'abort'
  | 'timeout'
  | 'handover'
  | 'cut-node'
  | 'node-loss'
  | 'slow-minority'
  | 'sub-reset'
  | 'cmd-reset'
  | 'stall'
  | 'redis-stall'
  | 'client-pause'
  | 'stall-close'
  | 'migrate'
  | 'failover';
export const faultKinds: readonly FaultKind[] = [
  'kill',
  'pause',
  'redis-restart',
  'cut',
  'delay',
  'partition',
  'abort',
  'timeout',
  'handover',
  'cut-node',
  'node-loss',
  'slow-minority',
  'sub-reset',
  'cmd-reset',
  'stall',
  'redis-stall',
  'client-pause',
  'stall-close',
  'migrate',
  'failover',
];
/**
 * How often the schedule draws each kind, relative to the others (1 unless named here): the
 * stall kinds came last, and together take about a fifth of the schedule, so that the
 * older kinds keep most of it (and a schedule of older kinds alone is drawn as before).
 */
export const faultWeights: Partial<Record<FaultKind, number>> = {
  stall: 1,
  'redis-stall': 0.6,
  'client-pause': 0.6,
  'stall-close': 0.8,
  // a Cluster run: drawn often enough that a minute of faults (3,000 tasks at 50/s, a fault
  // every ~700 ms) moves the slot at least 5 times and fails it over at least twice, for
  // almost every seed (one node fault at a time: a draw while one is under way is skipped)
  migrate: 2.5,
  failover: 1.8,
};
/** Fault kinds that only mean something with several coordination nodes (quorum mode). */
export const quorumOnlyFaults: readonly FaultKind[] = ['cut-node', 'slow-minority'];
/**
 * Fault kinds that only mean something on a Redis Cluster (`--topology cluster`): the
 * namespaces' hash slot moves to another master (migrate: IMPORTING/MIGRATING, MIGRATE key
 * by key, SETSLOT NODE), or the replica of its master takes over (failover: CLUSTER
 * FAILOVER). See cluster-faults.ts.
 */
export const clusterOnlyFaults: readonly FaultKind[] = ['migrate', 'failover'];
/**
 * Fault kinds a Cluster run does not inject: those of quorum mode, and the restarts of a
 * server (a master's loss is what a failover stands for; the nodes keep no data on disk).
 */
export const clusterExcludedFaults: readonly FaultKind[] = [
  ...quorumOnlyFaults,
  'redis-restart',
  'node-loss',
];
/**
 * Fault kinds that act on a Redis server itself: stop or restart it, make it close one
 * worker's connections (CLIENT KILL: sub-reset its subscriber connections, the command
 * connections staying; cmd-reset the reverse; stall-close the subscriber connections of a
 * worker whose event loop is stalled), or stall it (redis-stall: DEBUG SLEEP; client-pause:
 * CLIENT PAUSE ALL), or move a Cluster's slot (migrate, failover). Only where the run owns
 * its servers (`npm run chaos`). Every other kind acts on the workers or on their proxies.
 */
export const serverFaults: readonly FaultKind[] = [
  'redis-restart',
  'node-loss',
  'sub-reset',
  'cmd-reset',
  'redis-stall',
  'client-pause',
  'stall-close',
  'migrate',
  'failover',
];
/**
 * The fault kinds a run injects unless told otherwise: on `nodes` coordination nodes (3+:
 * quorum mode), or on a Redis Cluster (`cluster`, `nodes` then 1: the namespaces' shard).
 */
export function defaultFaults(nodes: number, ownsServers = true, cluster = false): FaultKind[] {
  return faultKinds.filter(
    (k) =>
      (cluster
        ? !clusterExcludedFaults.includes(k)
        : (nodes > 1 || !quorumOnlyFaults.includes(k)) && !clusterOnlyFaults.includes(k)) &&
      (ownsServers || !serverFaults.includes(k)),
  );
}

/**
 * Faults under which two executions of one task may overlap in time: the older holder could
 * not know it had lost its lease (it was frozen, or cut off from a majority of the nodes, or
 * Redis closed its subscriber while it was frozen: stall-close, the documented double fault).
 * Overlaps under any other fault (a handover, a client-side timeout, a caller's abort, a
 * delay, a minority of nodes away) are defects.
 */
export const overlapFaults: readonly FaultKind[] = ['pause', 'cut', 'partition', 'stall-close'];
/**
 * Faults that make a node unreachable for a worker. When they add up to a majority of the
 * nodes at once (one Redis: any of them), the worker is cut off, as by `cut`.
 */
export const nodeFaults: readonly FaultKind[] = [
  'redis-restart',
  'node-loss',
  'cut-node',
  'slow-minority',
];

/**
 * Faults that close or cut a worker's connections (or take its Redis away): a lease lost for
 * reason `connection` must follow one of them on the holder's slot, and so may a
 * re-execution. On a Cluster, a slot that moves (migrate, failover) moves every worker's
 * commands and subscription to another node: the old node's answers (MOVED, ASK, TRYAGAIN,
 * a subscription it drops) count as a lost connection of every slot.
 */
export const connectionFaults: readonly FaultKind[] = [
  'kill',
  'cut',
  'partition',
  'sub-reset',
  'cmd-reset',
  'stall-close',
  'redis-restart',
  'node-loss',
  'cut-node',
  'migrate',
  'failover',
];
/**
 * Faults that may make a handler run again whatever their length: the connection faults
 * (those that take a node away count only where they took a majority of the nodes away, as
 * for overlaps), a handover, and the client-side faults the harness treats as causes (a
 * caller's abort, a reply lost to a client-side timeout). Not a stall of the holder or of Redis (stall,
 * redis-stall, client-pause), a pause or a delay: those are causes only when the holder was
 * frozen long enough for its session to lapse (stallCanLapseMs).
 */
export const reexecutionFaults: readonly FaultKind[] = [
  ...connectionFaults,
  'handover',
  'abort',
  'timeout',
];
/** Faults that freeze the holder (its event loop, its process) or Redis, without closing anything. */
export const freezeFaults: readonly FaultKind[] = ['pause', 'stall', 'redis-stall', 'client-pause'];
