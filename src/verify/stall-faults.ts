/**
 * The stall faults of the chaos run (faults.ts starts them): a worker's event loop blocked
 * (`stall`), the same while Redis closes its subscriber (`stall-close`, the double fault the
 * docs name), and Redis itself stalled (`redis-stall`: DEBUG SLEEP) or pausing its clients
 * (`client-pause`). A stall nobody acted on may make nothing run again (check: causes.ts).
 */
import type { FaultKind, FaultPlan, ToWorker } from './common.js';
import type { FaultContext, Slot } from './faults.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** What the stall faults need of the injector. */
export interface StallHost {
  readonly ctx: FaultContext;
  logSlot(kind: FaultKind, slot: Slot, phase: 'start' | 'end', detail?: string): void;
  track(p: Promise<void>): void;
  pickHolder(preferred: Slot): Slot | undefined;
  /** One node fault at a time (a restart, a loss, a stall of Redis). */
  nodeBusy(): boolean;
  setNodeBusy(busy: boolean): void;
}

export class StallFaults {
  /** Stalls asked of a worker process: called when it reports each phase. */
  private readonly asked = new Map<
    Slot,
    { instance: string; started: () => void; ended: () => void }
  >();

  constructor(private readonly host: StallHost) {}

  /** The process of `slot` reported that the stall asked of it began, or ended. */
  reported(slot: Slot, phase: 'start' | 'end'): void {
    const s = this.asked.get(slot);
    if (!s || s.instance !== slot.instance) return;
    if (phase === 'start') s.started();
    else s.ended();
  }

  /**
   * Ask the process of `slot` to block its event loop for `ms` (a synchronous busy loop).
   * `began` answers whether it reported the start within a second; `ended` resolves when it
   * reports the end, or once it can no longer (gone, or far past the stall).
   */
  private stallWorker(slot: Slot, ms: number): { began: Promise<boolean>; ended: Promise<void> } {
    let started!: () => void;
    let ended!: () => void;
    const began = new Promise<boolean>((resolve) => {
      started = () => resolve(true);
      setTimeout(() => resolve(false), 1_000);
    });
    const end = new Promise<void>((resolve) => {
      ended = resolve;
      setTimeout(resolve, ms + 5_000);
    });
    const instance = slot.instance;
    this.asked.set(slot, { instance, started, ended });
    void end.then(() => {
      if (this.asked.get(slot)?.instance === instance) this.asked.delete(slot);
    });
    slot.child?.send({ type: 'stall', ms } satisfies ToWorker, () => {});
    return { began, ended: end };
  }

  /**
   * Start `f` on `target` (or on a holder in its place); `done` counts it as injected.
   * Answers why it was skipped, or undefined once it started.
   */
  start(f: FaultPlan, target: Slot, done: () => void): string | undefined {
    switch (f.kind) {
      case 'stall': {
        // the holder's event loop blocked (GC, synchronous handler code): its proofs are late
        // on a connection that stands, which is doubt: nothing may run again for it alone
        const slot = this.host.pickHolder(target);
        if (!slot?.child?.connected || this.asked.has(slot)) {
          return 'no live worker';
        }
        this.host.logSlot(
          'stall',
          slot,
          'start',
          `${f.durationMs} ms, holding ${slot.running.size}`,
        );
        const { began, ended } = this.stallWorker(slot, f.durationMs);
        done();
        this.host.track(
          (async () => {
            const ok = await began;
            await ended;
            this.host.logSlot('stall', slot, 'end', ok ? undefined : 'the start was not reported');
          })(),
        );
        return undefined;
      }
      case 'stall-close': {
        // a double fault: Redis closes the subscriber of a holder that cannot see it (frozen);
        // a standby may then take over while the holder acts on nothing
        const drop = this.host.ctx.dropConnections?.bind(this.host.ctx);
        if (!drop) {
          return 'this run does not own its Redis servers';
        }
        if (this.host.nodeBusy()) {
          // Redis away or stalled: it could close nothing while the worker is stalled
          return 'another node fault is in progress';
        }
        const slot = this.host.pickHolder(target);
        if (!slot?.child?.connected || this.asked.has(slot)) {
          return 'no live worker';
        }
        this.host.logSlot(
          'stall-close',
          slot,
          'start',
          `${f.durationMs} ms stall; Redis closes its subscriber connections during it (holding ${slot.running.size})`,
        );
        const { began, ended } = this.stallWorker(slot, f.durationMs);
        done();
        this.host.track(
          (async () => {
            const ok = await began;
            // well inside the stall: the holder cannot read the close before it wakes
            await sleep(Math.min(100, f.durationMs / 4));
            let closed = 0;
            for (const [n, proxy] of slot.proxies.entries()) {
              closed += await drop(n, new Set(proxy.upstreamPorts()), true).catch(() => 0);
            }
            await ended;
            this.host.logSlot(
              'stall-close',
              slot,
              'end',
              `${closed} closed${ok ? '' : ' (the stall was not reported to begin)'}`,
            );
          })(),
        );
        return undefined;
      }
      case 'redis-stall':
      case 'client-pause': {
        const stallServer = this.host.ctx.stallServer?.bind(this.host.ctx);
        if (!stallServer) {
          return 'this run does not own its Redis servers';
        }
        if (this.host.nodeBusy()) {
          return 'another node fault is in progress';
        }
        this.host.setNodeBusy(true);
        const nodeIndex = f.node ?? 0;
        const kind = f.kind;
        this.host.ctx.log({
          ev: 'fault',
          kind,
          node: nodeIndex,
          phase: 'start',
          detail: `${kind === 'redis-stall' ? 'DEBUG SLEEP' : 'CLIENT PAUSE ALL'} ${f.durationMs} ms${this.host.ctx.nodes > 1 ? ` on node ${nodeIndex}` : ''}`,
        });
        done();
        this.host.track(
          (async () => {
            let detail: string | undefined;
            try {
              await stallServer(nodeIndex, kind, f.durationMs);
              // CLIENT PAUSE answers at once; the pause lasts its time
              if (kind === 'client-pause') await sleep(f.durationMs);
            } catch (err) {
              detail = `failed: ${(err as Error).message}`;
            } finally {
              this.host.setNodeBusy(false);
              this.host.ctx.log({
                ev: 'fault',
                kind,
                node: nodeIndex,
                phase: 'end',
                ...(detail === undefined ? {} : { detail }),
              });
            }
          })(),
        );
        return undefined;
      }
      default:
        return `not a stall fault: ${f.kind}`;
    }
  }
}
