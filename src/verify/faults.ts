/**
 * The faults of a run (see common.ts planFaults for their parameters): what each kind does
 * to the worker processes, to their proxies, or (only where the run owns them) to the
 * Redis servers. Every fault is logged to parent.log with its start and end, which is what
 * the checker attributes overlapping executions to.
 */
import { ClusterFaults } from './cluster-faults.js';
import {
  derive,
  type FaultKind,
  type FaultPlan,
  noticeBoundMs,
  stamp,
  type TaskSpec,
  type ToWorker,
  workerTiming,
} from './common.js';
import type { FaultContext, Slot } from './fault-context.js';
import { StallFaults } from './stall-faults.js';

export type { FaultContext, ServerControl, Slot } from './fault-context.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function setReplyDelay(slot: Slot, node: number, source: string, ms: number): void {
  const asked = slot.replyDelays[node];
  const proxy = slot.proxies[node];
  if (!asked || !proxy) return;
  if (ms > 0) asked.set(source, ms);
  else asked.delete(source);
  proxy.setReplyDelay(Math.max(0, ...asked.values()));
}

/** The same reply delay on every link of a slot. */
export function setLinkReplyDelay(slot: Slot, source: string, ms: number): void {
  for (let n = 0; n < slot.proxies.length; n++) setReplyDelay(slot, n, source, ms);
}

export class FaultInjector {
  readonly done: Record<string, number> = {};
  readonly skipped: Record<string, number> = {};
  private readonly rng: () => number;
  private readonly inFlight = new Set<Promise<void>>();
  /** One node at a time is restarted, lost or slow (a minority: the others keep a quorum). */
  private nodeFaultBusy = false;
  /**
   * A `timeout` fault waits for the next release of tasks to its slot's pair: the replies to
   * that slot's claims are held back past connectTimeoutMs while Redis has applied them.
   */
  private armedTimeout: { f: FaultPlan; slot: Slot; armedAt: number } | undefined;
  /** An armed node-loss: goes off on the next settle a worker reports. */
  private onSettle: (() => void) | undefined;
  /** stall, stall-close, redis-stall, client-pause (stall-faults.ts); workers report to it. */
  readonly stallFaults: StallFaults;
  /** migrate, failover (cluster-faults.ts): a Cluster run's slot moves. */
  private readonly clusterFaults: ClusterFaults;

  constructor(
    private readonly ctx: FaultContext,
    seed: number,
  ) {
    this.rng = derive(seed, 3);
    this.stallFaults = new StallFaults({
      ctx,
      logSlot: (kind, slot, phase, detail) => this.logSlot(kind, slot, phase, detail),
      track: (p) => this.track(p),
      pickHolder: (preferred) => this.pickHolder(preferred),
      nodeBusy: () => this.nodeFaultBusy,
      setNodeBusy: (busy) => {
        this.nodeFaultBusy = busy;
      },
    });
    this.clusterFaults = new ClusterFaults({
      cluster: ctx.cluster,
      seed,
      log: (line) => ctx.log(line),
      track: (p) => this.track(p),
      nodeBusy: () => this.nodeFaultBusy,
      setNodeBusy: (busy) => {
        this.nodeFaultBusy = busy;
      },
    });
  }

  /** A worker reported an accepted settle. */
  settled(): void {
    this.onSettle?.();
  }

  /** No more releases: an armed `timeout` will not go off. */
  disarm(): void {
    if (!this.armedTimeout) return;
    this.armedTimeout.slot.linkFault = false;
    this.skipped.timeout = (this.skipped.timeout ?? 0) + 1;
    this.armedTimeout = undefined;
  }

  /** Wait until every fault started has ended (healed, restarted). */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** Heal every link at once (end of the run, or an interrupted one). */
  healAll(): void {
    for (const slot of this.ctx.slots) {
      slot.proxies.forEach((proxy, n) => {
        proxy.setDelay(0);
        for (const source of [...(slot.replyDelays[n]?.keys() ?? [])])
          setReplyDelay(slot, n, source, 0);
        proxy.heal();
      });
    }
  }

  /** A fault's start or end on a worker's slot, in the orchestrator's log. */
  private logSlot(kind: FaultKind, slot: Slot, phase: 'start' | 'end', detail?: string): void {
    this.ctx.log({
      ev: 'fault',
      kind,
      w: slot.index,
      p: slot.instance,
      phase,
      ...(detail === undefined ? {} : { detail }),
    });
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private pickHolder(preferred: Slot, ending = false): Slot | undefined {
    const up = this.ctx.slots.filter(
      (s) => s.state === 'up' && s.child && s.ready && (!ending || s.keepUntil <= stamp()),
    );
    const holders = up.filter((s) => s.running.size > 0);
    if (holders.includes(preferred)) return preferred;
    if (holders.length > 0) return holders[Math.floor(this.rng() * holders.length)];
    return up.includes(preferred) ? preferred : up[0];
  }

  /** Start fault `f` now (or arm it: `timeout`, `node-loss`). */
  inject(f: FaultPlan): void {
    const target = this.ctx.slots[f.slot];
    if (!target) return;
    const skip = (why: string) => {
      this.skipped[f.kind] = (this.skipped[f.kind] ?? 0) + 1;
      this.ctx.log({
        ev: 'fault',
        kind: f.kind,
        w: target.index,
        phase: 'end',
        detail: `skipped: ${why}`,
      });
    };
    const done = () => {
      this.done[f.kind] = (this.done[f.kind] ?? 0) + 1;
    };
    switch (f.kind) {
      case 'kill':
      case 'handover': {
        const slot = this.pickHolder(target, true);
        if (!slot?.child) {
          skip('no live worker');
          return;
        }
        const child = slot.child;
        const handover = f.kind === 'handover';
        slot.state = handover ? 'handover' : 'killed';
        const slow = handover && (f.replyDelayMs ?? 0) > 0;
        this.logSlot(
          f.kind,
          slot,
          'start',
          `holding ${slot.running.size}${slow ? `, replies ${f.replyDelayMs} ms late` : ''}`,
        );
        // a slow link: the release's reply (and what the worker does after it) comes late
        if (slow) setLinkReplyDelay(slot, 'handover', f.replyDelayMs ?? 0);
        child.kill(handover ? 'SIGTERM' : 'SIGKILL');
        done();
        this.track(
          (async () => {
            // a handover: the process closes and exits by itself (bounded by its handleSignals)
            for (let i = 0; i < 150 && slot.child === child; i++) await sleep(100);
            if (slot.child === child) child.kill('SIGKILL');
            setLinkReplyDelay(slot, 'handover', 0);
            await sleep(f.durationMs);
            if (slot.state !== 'killed' && slot.state !== 'handover') return;
            slot.state = 'up';
            this.ctx.respawn(slot);
            this.logSlot(f.kind, slot, 'end', 'restarted');
          })(),
        );
        return;
      }
      case 'pause': {
        const slot = target.state === 'up' && target.child ? target : this.pickHolder(target);
        if (!slot?.child || slot.state !== 'up') {
          skip('no live worker');
          return;
        }
        const child = slot.child;
        slot.state = 'paused';
        this.logSlot('pause', slot, 'start', `${f.durationMs} ms, holding ${slot.running.size}`);
        child.kill('SIGSTOP');
        done();
        this.track(
          (async () => {
            await sleep(f.durationMs);
            if (slot.state === 'paused') slot.state = 'up';
            child.kill('SIGCONT');
            this.logSlot('pause', slot, 'end');
          })(),
        );
        return;
      }
      case 'abort': {
        // the feed of a worker whose handler runs gives up on that run() and calls it again
        const slot = this.pickHolder(target);
        if (!slot?.child?.connected || slot.running.size === 0) {
          skip('no running handler');
          return;
        }
        this.logSlot('abort', slot, 'start', `run() called again within ${f.durationMs} ms`);
        slot.child.send({ type: 'abort', afterMs: f.durationMs } satisfies ToWorker);
        slot.keepUntil = stamp() + f.durationMs + noticeBoundMs() + 5_000;
        done();
        const instance = slot.instance;
        this.track(
          (async () => {
            await sleep(f.durationMs);
            this.ctx.log({ ev: 'fault', kind: 'abort', w: slot.index, p: instance, phase: 'end' });
          })(),
        );
        return;
      }
      case 'redis-restart':
      case 'node-loss': {
        if (this.nodeFaultBusy) {
          skip('another node fault is in progress');
          return;
        }
        const servers = this.ctx.servers;
        if (!servers) {
          skip('this run does not own its Redis servers');
          return;
        }
        this.nodeFaultBusy = true;
        const nodeIndex = f.node ?? 0;
        done();
        const go = async () => {
          const crash = f.kind === 'node-loss' || f.crash;
          this.ctx.log({
            ev: 'fault',
            kind: f.kind,
            node: nodeIndex,
            phase: 'start',
            detail: `${crash ? 'SIGKILL' : 'SIGTERM'}${this.ctx.nodes > 1 ? ` node ${nodeIndex}` : ''}`,
          });
          try {
            if (crash) await servers.kill(nodeIndex);
            // node-loss: the node stays away a while (the others must keep a quorum)
            if (f.kind === 'node-loss') await sleep(f.durationMs);
            await servers.restart(nodeIndex);
          } finally {
            this.nodeFaultBusy = false;
            this.ctx.log({ ev: 'fault', kind: f.kind, node: nodeIndex, phase: 'end' });
          }
        };
        if (f.kind === 'redis-restart') {
          this.track(go());
          return;
        }
        // node-loss: right after the next settle a worker reports (or in 2 s at the latest)
        this.track(
          new Promise<void>((resolve) => {
            const fire = () => {
              clearTimeout(timer);
              this.onSettle = undefined;
              void go().finally(resolve);
            };
            const timer = setTimeout(fire, 2_000);
            this.onSettle = fire;
          }),
        );
        return;
      }
      case 'sub-reset':
      case 'cmd-reset': {
        const drop = this.ctx.dropConnections?.bind(this.ctx);
        if (!drop) {
          skip('this run does not own its Redis servers');
          return;
        }
        const slot = this.pickHolder(target);
        if (!slot?.child) {
          skip('no live worker');
          return;
        }
        const pubsub = f.kind === 'sub-reset';
        this.logSlot(
          f.kind,
          slot,
          'start',
          `Redis closes its ${pubsub ? 'subscriber' : 'command'} connections (holding ${slot.running.size})`,
        );
        done();
        this.track(
          (async () => {
            let closed = 0;
            for (const [n, proxy] of slot.proxies.entries()) {
              closed += await drop(n, new Set(proxy.upstreamPorts()), pubsub).catch(() => 0);
            }
            this.logSlot(f.kind, slot, 'end', `${closed} closed`);
          })(),
        );
        return;
      }
      case 'stall':
      case 'stall-close':
      case 'redis-stall':
      case 'client-pause': {
        const why = this.stallFaults.start(f, target, done);
        if (why !== undefined) skip(why);
        return;
      }
      case 'migrate':
      case 'failover': {
        const why = this.clusterFaults.start(f, done, skip);
        if (why !== undefined) skip(why);
        return;
      }
      case 'slow-minority': {
        if (this.nodeFaultBusy) {
          skip('another node fault is in progress');
          return;
        }
        this.nodeFaultBusy = true;
        const nodeIndex = f.node ?? 0;
        this.ctx.log({
          ev: 'fault',
          kind: 'slow-minority',
          node: nodeIndex,
          phase: 'start',
          detail: `node ${nodeIndex} answers ${f.replyDelayMs} ms late for ${f.durationMs} ms`,
        });
        for (const slot of this.ctx.slots)
          setReplyDelay(slot, nodeIndex, 'slow-minority', f.replyDelayMs ?? 0);
        done();
        this.track(
          (async () => {
            await sleep(f.durationMs);
            for (const slot of this.ctx.slots) setReplyDelay(slot, nodeIndex, 'slow-minority', 0);
            // the replies held back are still on their way
            await sleep(f.replyDelayMs ?? 0);
            this.nodeFaultBusy = false;
            this.ctx.log({ ev: 'fault', kind: 'slow-minority', node: nodeIndex, phase: 'end' });
          })(),
        );
        return;
      }
      case 'timeout': {
        if (target.linkFault || this.armedTimeout) {
          skip('the link is already faulted');
          return;
        }
        target.linkFault = true;
        this.armedTimeout = { f, slot: target, armedAt: stamp() };
        return;
      }
      case 'cut':
      case 'partition':
      case 'delay':
      case 'cut-node': {
        if (target.linkFault) {
          skip('the link is already faulted');
          return;
        }
        target.linkFault = true;
        const one = f.kind === 'cut-node' ? (f.node ?? 0) : undefined;
        const links = one === undefined ? target.proxies : target.proxies.slice(one, one + 1);
        const detail =
          f.kind === 'delay'
            ? `${f.delayMs} ms one-way for ${f.durationMs} ms`
            : `${f.durationMs} ms${one === undefined ? '' : ` from node ${one}`}`;
        this.ctx.log({
          ev: 'fault',
          kind: f.kind,
          w: target.index,
          p: target.instance,
          ...(one === undefined ? {} : { node: one }),
          phase: 'start',
          detail,
        });
        for (const proxy of links) {
          if (f.kind === 'cut' || f.kind === 'cut-node') proxy.cut();
          else if (f.kind === 'partition') proxy.blackhole({ hold: true });
          else proxy.setDelay(f.delayMs ?? 100);
        }
        done();
        this.track(
          (async () => {
            await sleep(f.durationMs);
            for (const proxy of links) {
              if (f.kind === 'delay') proxy.setDelay(0);
              else proxy.heal();
            }
            target.linkFault = false;
            this.ctx.log({
              ev: 'fault',
              kind: f.kind,
              w: target.index,
              p: target.instance,
              ...(one === undefined ? {} : { node: one }),
              phase: 'end',
            });
          })(),
        );
        return;
      }
    }
  }

  /**
   * An armed `timeout` fault goes off when tasks are released to its pair, preferably one whose
   * handler will overrun its deadline (or after 3 s): the slot's replies are held back past
   * connectTimeoutMs for a short window, and the slot gets the tasks a moment before its peer,
   * so that its claims win and their replies come too late. (A grant whose reply was lost must
   * still end its handler by the deadline Redis applies.)
   * Returns the slot whose peer must get its share of this release a round later.
   */
  fireTimeout(batch: TaskSpec[][]): Slot | undefined {
    const armed = this.armedTimeout;
    if (!armed) return undefined;
    const { f, slot } = armed;
    const share = batch[slot.index] ?? [];
    const waited = stamp() - armed.armedAt;
    const hasTasks = share.length > 0;
    const wanted = share.some((t) => t.overrunMs !== undefined);
    if (!(wanted || (hasTasks && waited >= 3_000) || waited >= 6_000)) return undefined;
    this.armedTimeout = undefined;
    const late = f.replyDelayMs ?? workerTiming.connectTimeoutMs * 2;
    this.logSlot('timeout', slot, 'start', `replies ${late} ms late for ${f.durationMs} ms`);
    setLinkReplyDelay(slot, 'timeout', late);
    this.done.timeout = (this.done.timeout ?? 0) + 1;
    this.track(
      (async () => {
        await sleep(f.durationMs);
        setLinkReplyDelay(slot, 'timeout', 0);
        // the replies held back are still on their way
        await sleep(late);
        slot.linkFault = false;
        this.logSlot('timeout', slot, 'end');
      })(),
    );
    return hasTasks ? slot : undefined;
  }
}
