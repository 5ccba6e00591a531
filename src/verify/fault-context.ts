/**
 * What the faults act on (faults.ts, stall-faults.ts, cluster-faults.ts): the worker slots,
 * and what the run controls of the Redis servers.
 */
import type { ChildProcess } from 'node:child_process';
import type { TcpProxy } from '../testing/proxy.js';
import type { ClusterAdmin } from './cluster-admin.js';
import type { ParentEntry, TaskSpec } from './common.js';

/** One worker of a pair, across its restarts. */
export interface Slot {
  readonly index: number;
  readonly pair: number;
  /** One proxy per coordination node: this worker's own links. */
  readonly proxies: TcpProxy[];
  /** Reply delays asked for each proxy, by the fault that asked (the largest applies). */
  readonly replyDelays: Map<string, number>[];
  child: ChildProcess | undefined;
  instance: string;
  instances: number;
  ready: boolean;
  /** Tasks released to this slot that its current process has not reported an outcome for. */
  readonly pending: Map<string, TaskSpec>;
  /** Tasks whose handler runs now in this slot's process (holder detection). */
  readonly running: Set<string>;
  /**
   * The process is down on purpose (kill), frozen (pause), closing on SIGTERM (handover),
   * or being stopped at the end of the run.
   */
  state: 'up' | 'killed' | 'paused' | 'handover' | 'stopping';
  /** The proxy is faulted (cut, delay, partition, timeout, cut-node). */
  linkFault: boolean;
  /**
   * After an `abort`, the process is not killed or handed over for a while: its second
   * run() call must be seen to answer (or not) before the process goes away.
   */
  keepUntil: number;
}

/** Stops and starts the coordination servers: only a run that owns them has this. */
export interface ServerControl {
  /** SIGKILL of node `i`. */
  kill(i: number): Promise<void>;
  /** Start node `i` again on its port with its data (after a clean stop when it runs). */
  restart(i: number): Promise<void>;
}

export interface FaultContext {
  readonly slots: Slot[];
  /** Coordination nodes: 1, or 3+ in quorum mode. */
  readonly nodes: number;
  readonly servers: ServerControl | undefined;
  log(line: ParentEntry): void;
  /** Start a new process in the slot (after a kill or a handover). */
  respawn(slot: Slot): void;
  /**
   * Make node `node` close the connections that come from `ports` (its subscriber
   * connections when `pubsub`, else the others); answers how many it closed. Only where
   * the run owns its servers.
   */
  dropConnections?(node: number, ports: ReadonlySet<number>, pubsub: boolean): Promise<number>;
  /**
   * Stall node `node` for `ms`: DEBUG SLEEP (redis-stall, resolves when it answers again) or
   * CLIENT PAUSE ALL (client-pause, resolves once the pause is in place), over an admin
   * connection of the orchestrator. Only where the run owns its servers.
   */
  stallServer?(node: number, kind: 'redis-stall' | 'client-pause', ms: number): Promise<void>;
  /**
   * A Redis Cluster run: the admin of its nodes, for the migrate and failover faults (only
   * where the run owns its servers).
   */
  readonly cluster?: ClusterAdmin;
}
