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
  | 'stall-close';
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
};
/** Fault kinds that only mean something with several coordination nodes (quorum mode). */
export const quorumOnlyFaults: readonly FaultKind[] = ['cut-node', 'slow-minority'];
/**
 * Fault kinds that act on a Redis server itself: stop or restart it, make it close one
 * worker's connections (CLIENT KILL: sub-reset its subscriber connections, the command
 * connections staying; cmd-reset the reverse; stall-close the subscriber connections of a
 * worker whose event loop is stalled), or stall it (redis-stall: DEBUG SLEEP; client-pause:
 * CLIENT PAUSE ALL). Only where the run owns its servers (`npm run chaos`). Every other
 * kind acts on the workers or on their proxies.
 */
export const serverFaults: readonly FaultKind[] = [
  'redis-restart',
  'node-loss',
  'sub-reset',
  'cmd-reset',
  'redis-stall',
  'client-pause',
  'stall-close',
];
/** The fault kinds a run injects unless told otherwise. */
export function defaultFaults(nodes: number, ownsServers = true): FaultKind[] {
  return faultKinds.filter(
    (k) =>
      (nodes > 1 || !quorumOnlyFaults.includes(k)) && (ownsServers || !serverFaults.includes(k)),
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
 * re-execution.
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
