/**
 * The Redis Cluster faults of the chaos run (`--topology cluster`; faults.ts starts them):
 *
 * - `migrate`: the namespaces' hash slot moves to another master while the workers use it,
 *   by the resharding protocol (IMPORTING on the destination, MIGRATING on the source, the
 *   keys one by one with MIGRATE and a short seeded pause after each, then SETSLOT NODE on
 *   every master). Meanwhile the workers meet ASK and TRYAGAIN; afterwards, MOVED. The next
 *   one moves it on (back, or to the third master).
 * - `failover`: CLUSTER FAILOVER on the replica of the master that serves the slot; the
 *   fault lasts until the replica reports itself master (bounded).
 *
 * Each is logged with its window (node: the master that served the slot when it began) and
 * has no worker slot: it concerns every worker. The checker counts both among the faults that
 * may lose a connection and so make a task run again (fault-kinds.ts connectionFaults). One
 * node fault runs at a time (with redis-stall and client-pause, which act on the slot's master).
 */
import type { ClusterAdmin, NodeState } from './cluster-admin.js';
import { derive, type FaultKind, type FaultPlan, type ParentEntry } from './common.js';

/** The pause after each key's move, in ms (drawn per key from the fault's own seed). */
export const MIGRATE_PAUSE_MS = { min: 5, max: 20 } as const;

/** What the cluster faults need of the injector. */
export interface ClusterHost {
  /** The cluster's admin; undefined: not a Cluster run. */
  readonly cluster: ClusterAdmin | undefined;
  /** The run's seed (each fault draws its pauses and its destination from it). */
  readonly seed: number;
  log(line: ParentEntry): void;
  track(p: Promise<void>): void;
  /** One node fault at a time (a migration, a failover, a stall of Redis). */
  nodeBusy(): boolean;
  setNodeBusy(busy: boolean): void;
}

export class ClusterFaults {
  constructor(private readonly host: ClusterHost) {}

  /**
   * Start `f` (migrate or failover). `done` counts it as injected once it begins; `skip`
   * tells why it could not (possibly a moment later: the cluster's state is read first).
   * Answers why it was skipped at once, or undefined.
   */
  start(f: FaultPlan, done: () => void, skip: (why: string) => void): string | undefined {
    const cluster = this.host.cluster;
    if (!cluster) return 'not a Redis Cluster run';
    if (f.kind !== 'migrate' && f.kind !== 'failover') return `not a cluster fault: ${f.kind}`;
    if (this.host.nodeBusy()) return 'another node fault is in progress';
    this.host.setNodeBusy(true);
    const kind = f.kind;
    this.host.track(
      (async () => {
        try {
          const states = await cluster.states();
          const owner = await cluster.owner(states).catch(() => undefined);
          if (!owner) {
            skip(`no node answers for slot ${cluster.slot}`);
            return;
          }
          if (kind === 'migrate') await this.migrate(cluster, f, owner, states, done, skip);
          else await this.failover(cluster, f, owner, states, done, skip);
        } finally {
          this.host.setNodeBusy(false);
        }
      })(),
    );
    return undefined;
  }

  private logFault(kind: FaultKind, node: number, phase: 'start' | 'end', detail: string): void {
    this.host.log({ ev: 'fault', kind, node, phase, detail });
  }

  private async migrate(
    cluster: ClusterAdmin,
    f: FaultPlan,
    src: NodeState,
    states: readonly NodeState[],
    done: () => void,
    skip: (why: string) => void,
  ): Promise<void> {
    const r = derive(this.host.seed ^ f.atMs, 4);
    const masters = states.filter((s) => s.master);
    const others = masters.filter((m) => m.id !== src.id).sort((a, b) => a.index - b.index);
    const dst = others[Math.floor(r() * others.length)];
    if (!dst) {
      skip('no other master to move the slot to');
      return;
    }
    const { min, max } = MIGRATE_PAUSE_MS;
    const pause = () => min + Math.floor(r() * (max - min + 1));
    done();
    this.logFault(
      'migrate',
      src.index,
      'start',
      `slot ${cluster.slot} from ${cluster.label(src.index)} to ${cluster.label(dst.index)}, key by key (pauses ${min}-${max} ms, up to ${f.durationMs} ms in all)`,
    );
    const t0 = Date.now();
    let detail: string;
    try {
      const moved = await cluster.migrate(src, dst, pause, f.durationMs, masters);
      detail = `moved ${moved.keys} keys in ${Date.now() - t0} ms (paused ${moved.pausedMs} ms)`;
    } catch (err) {
      detail = `failed: ${(err as Error).message}`;
      // a slot left half-moved would stop the run: finish the move without pauses
      try {
        const moved = await cluster.migrate(src, dst, () => 0, 0, masters);
        detail += `; finished after it (${moved.keys} more keys)`;
      } catch (again) {
        detail += `; finishing failed too: ${(again as Error).message}`;
      }
    }
    this.logFault('migrate', src.index, 'end', detail);
  }

  private async failover(
    cluster: ClusterAdmin,
    f: FaultPlan,
    master: NodeState,
    states: readonly NodeState[],
    done: () => void,
    skip: (why: string) => void,
  ): Promise<void> {
    const replica = states.find((s) => !s.master && s.masterId === master.id);
    if (!replica) {
      skip(`${cluster.label(master.index)} has no replica that answers`);
      return;
    }
    done();
    this.logFault(
      'failover',
      master.index,
      'start',
      `CLUSTER FAILOVER on ${cluster.label(replica.index)}, replica of ${cluster.label(master.index)} (slot ${cluster.slot})`,
    );
    const t0 = Date.now();
    let detail: string;
    try {
      await cluster.failover(replica, master, f.durationMs);
      detail = `${cluster.label(replica.index)} is master after ${Date.now() - t0} ms`;
    } catch (err) {
      detail = `failed: ${(err as Error).message}`;
    }
    this.logFault('failover', master.index, 'end', detail);
  }
}
