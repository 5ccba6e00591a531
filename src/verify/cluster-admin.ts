/**
 * The Redis Cluster operations behind the chaos run's cluster faults (cluster-faults.ts),
 * over admin connections of the orchestrator to the real nodes (never through a worker's
 * proxy): which node serves the namespaces' hash slot and which one replicates it, a slot
 * migration key by key (the resharding protocol), and a manual failover.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { keySlot } from '../redis/topology-cluster.js';

/** A node of the cluster, where the admin reaches it. */
export interface ClusterNodeRef {
  readonly host: string;
  readonly port: number;
  /** ioredis options of a connection to it (user, password, TLS); host and port are set here. */
  readonly options?: RedisOptions;
}

/** A node as it describes itself (the `myself` line of its CLUSTER NODES). */
export interface NodeState {
  /** Its index in the admin's node list. */
  readonly index: number;
  readonly id: string;
  readonly master: boolean;
  /** The master it replicates (a replica), else undefined. */
  readonly masterId: string | undefined;
  /** Its config epoch: where two nodes claim the slot for a moment, the higher one serves it. */
  readonly epoch: number;
  /** A master that serves the admin's slot. */
  readonly owns: boolean;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Keys asked of CLUSTER GETKEYSINSLOT at a time. */
const KEYS_PER_ROUND = 100;
/** Rounds of GETKEYSINSLOT at most (a slot whose keys keep coming back is not drained). */
const MAX_ROUNDS = 1_000;

function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim();
}

/** Whether a CLUSTER NODES slot field (`5461`, `0-5460`; not `[5461->-id]`) covers `slot`. */
function covers(field: string, slot: number): boolean {
  if (field.startsWith('[')) return false;
  const [lo, hi] = field.split('-').map(Number);
  if (lo === undefined || Number.isNaN(lo)) return false;
  return slot >= lo && slot <= (hi ?? lo);
}

/**
 * A namespace named `<stem>-<n>` whose hash slot is `slot` (the first such n): two pairs in
 * namespaces of one slot are moved together by one migration or failover.
 */
export function namespaceInSlot(stem: string, slot: number): string {
  for (let n = 0; ; n++) {
    const ns = `${stem}-${n}`;
    if (keySlot(`{${ns}}`) === slot) return ns;
  }
}

export class ClusterAdmin {
  private readonly conns = new Map<number, Redis>();

  /** `slot`: the hash slot the faults move (the namespaces'). */
  constructor(
    readonly nodes: readonly ClusterNodeRef[],
    readonly slot: number,
  ) {}

  /** A persistent admin connection to node `i` (commands fail rather than wait long). */
  private conn(i: number): Redis {
    let c = this.conns.get(i);
    if (c) return c;
    const n = this.nodes[i];
    if (!n) throw new Error(`no cluster node ${i}`);
    c = new Redis({
      ...n.options,
      host: n.host,
      port: n.port,
      maxRetriesPerRequest: 1,
      enableReadyCheck: false,
      connectTimeout: 2_000,
      // MIGRATE waits up to its own timeout (5 s) for the destination
      commandTimeout: 10_000,
      retryStrategy: (times) => Math.min(50 * times, 500),
    });
    c.on('error', () => {});
    this.conns.set(i, c);
    return c;
  }

  /** `node 2 (127.0.0.1:7002)`, for messages. */
  label(i: number): string {
    const n = this.nodes[i];
    return `node ${i} (${n?.host}:${n?.port})`;
  }

  /** Every node that answers, as it describes itself. */
  async states(): Promise<NodeState[]> {
    const answers = await Promise.all(
      this.nodes.map(async (_, index): Promise<NodeState | undefined> => {
        try {
          const view = String(await this.conn(index).call('CLUSTER', 'NODES'));
          const mine = view.split('\n').find((l) => l.split(' ')[2]?.includes('myself'));
          if (!mine) return undefined;
          const [id = '', , flags = '', masterId = '-', , , epoch = '0', , ...slots] =
            mine.split(' ');
          const master = flags.split(',').includes('master');
          return {
            index,
            id,
            master,
            masterId: master || masterId === '-' ? undefined : masterId,
            epoch: Number(epoch),
            owns: master && slots.some((f) => covers(f, this.slot)),
          };
        } catch {
          return undefined;
        }
      }),
    );
    return answers.filter((s): s is NodeState => s !== undefined);
  }

  /** The master that serves the slot now. */
  async owner(states?: readonly NodeState[]): Promise<NodeState> {
    const owners = (states ?? (await this.states())).filter((s) => s.owns);
    const best = owners.sort((a, b) => b.epoch - a.epoch)[0];
    if (!best) throw new Error(`no node of the cluster serves slot ${this.slot}`);
    return best;
  }

  /**
   * Move the slot from `src` to `dst` by the resharding protocol: IMPORTING on the
   * destination, MIGRATING on the source, then every key with MIGRATE … REPLACE KEYS, one
   * key at a time with a pause of `pauseMs()` after each (until the pauses add up to
   * `budgetMs`; the remaining keys move back to back), then SETSLOT NODE on every master
   * (the destination first, then the source). Answers how many keys moved.
   */
  async migrate(
    src: NodeState,
    dst: NodeState,
    pauseMs: () => number,
    budgetMs: number,
    masters: readonly NodeState[],
  ): Promise<{ keys: number; pausedMs: number }> {
    const slot = String(this.slot);
    const to = this.nodes[dst.index];
    if (!to) throw new Error(`no cluster node ${dst.index}`);
    const source = this.conn(src.index);
    await this.conn(dst.index).call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', src.id);
    await source.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dst.id);
    let keys = 0;
    let pausedMs = 0;
    let idle = 0;
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const batch = (await source.call(
        'CLUSTER',
        'GETKEYSINSLOT',
        slot,
        String(KEYS_PER_ROUND),
      )) as string[];
      if (batch.length === 0) break;
      let moved = 0;
      for (const key of batch) {
        const reply = await this.migrateKey(source, to, key);
        if (reply === 'OK') moved++;
        if (pausedMs < budgetMs) {
          const ms = Math.min(pauseMs(), budgetMs - pausedMs);
          pausedMs += ms;
          await sleep(ms);
        }
      }
      keys += moved;
      // keys listed that MIGRATE found gone (expired) leave on their own; a batch that stays
      // put round after round would loop for ever
      idle = moved === 0 ? idle + 1 : 0;
      if (idle >= 5) throw new Error(`keys of slot ${slot} do not move: ${batch.slice(0, 3)}`);
    }
    const order = [dst, src, ...masters.filter((m) => m.id !== dst.id && m.id !== src.id)];
    for (const m of order)
      await this.conn(m.index).call('CLUSTER', 'SETSLOT', slot, 'NODE', dst.id);
    return { keys, pausedMs };
  }

  /** One key's MIGRATE, tried again on a passing error (the destination busy a moment). */
  private async migrateKey(source: Redis, to: ClusterNodeRef, key: string): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      try {
        const args = [to.host, String(to.port), '', '0', '5000', 'REPLACE'];
        if (to.options?.password !== undefined) {
          args.push(...(to.options.username ? ['AUTH2', to.options.username] : ['AUTH']));
          args.push(to.options.password);
        }
        return String(await source.call('MIGRATE', ...args, 'KEYS', key));
      } catch (err) {
        if (attempt >= 3) throw err;
        await sleep(50 * attempt);
      }
    }
  }

  /**
   * CLUSTER FAILOVER on `replica` (of `master`): waits until its link to the master is up,
   * sends it, then waits (at most `timeoutMs` in all) until the replica reports role master
   * and the old master reports itself a replica. Throws when the replica does not take over.
   */
  async failover(replica: NodeState, master: NodeState, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const r = this.conn(replica.index);
    const role = async (i: number) =>
      infoField(String(await this.conn(i).call('INFO', 'replication')), 'role');
    const poll = async (until: number, check: () => Promise<boolean>) => {
      for (;;) {
        if (await check().catch(() => false)) return true;
        if (Date.now() >= until) return false;
        await sleep(20);
      }
    };
    const inSync = await poll(Math.min(deadline, Date.now() + 3_000), async () => {
      const info = String(await r.call('INFO', 'replication'));
      return infoField(info, 'master_link_status') === 'up';
    });
    if (!inSync) throw new Error(`${this.label(replica.index)} is not in sync with its master`);
    await r.call('CLUSTER', 'FAILOVER');
    if (!(await poll(deadline, async () => (await role(replica.index)) === 'master')))
      throw new Error(`${this.label(replica.index)} did not become master in ${timeoutMs} ms`);
    // the old master follows once it hears of the new epoch (gossip): a few ms to a second
    await poll(deadline, async () => (await role(master.index)) === 'slave');
  }

  close(): void {
    for (const c of this.conns.values()) c.disconnect();
    this.conns.clear();
  }
}
