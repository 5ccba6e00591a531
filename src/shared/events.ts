import type { GrantKind, RejectReason } from './codes.js';
import type { Logger } from './options.js';

export interface NamespaceEvent {
  /** 'claimed' | 'settled' | 'released' */
  e: string;
  /** task ref */
  r: string;
  /** state after the transition: R, D, F, X */
  s: string;
  /** fencing token */
  k: number;
  /** attempt */
  a: number;
  /** session of the owner */
  o: string;
  /** grant kind index (claimed) */
  kind?: number;
  /** previous owner's session (claimed by takeover) */
  from?: string;
  /** settled done: the result JSON, when small enough to travel in the event */
  p?: string;
  /** standby (watched only): the claimer now covering the owner */
  by?: string;
  /** rejected (watched only): the reply code of the refused settle */
  why?: number;
  /** settled, released: the owner's change sequence after the batch (see cover.lua) */
  q?: number;
}

/**
 * One message on a namespace channel: one event object, or a JSON array of the events of
 * one batch (settles, releases). Anything else yields nothing.
 */
export function parseNamespaceMessage(msg: string): NamespaceEvent[] {
  let v: unknown;
  try {
    v = JSON.parse(msg);
  } catch {
    return [];
  }
  const list = Array.isArray(v) ? v : [v];
  return list.filter(
    (e): e is NamespaceEvent =>
      typeof e === 'object' && e !== null && typeof (e as NamespaceEvent).r === 'string',
  );
}

/** Every event a PairedWorker emits, with its one payload object. */
export interface PairedWorkerEvents {
  /**
   * This worker won a grant and starts the handler: a fresh claim, or (kind 'reclaimed')
   * its own task taken back after it lost its lease.
   */
  claimed: { taskId: string; token: number; attempt: number; kind: GrantKind };
  /** A peer holds the task; this worker covers it. */
  standby: { taskId: string; holder: string; token: number };
  /** This worker took over a task from a crashed, hung, failed or leaving peer. */
  'took-over': { taskId: string; token: number; attempt: number; kind: GrantKind; from: string };
  /** This worker's grant was settled (role: ran or took-over). */
  settled: { taskId: string; state: 'done' | 'failed'; token: number; attempt: number };
  /** This worker can no longer prove it holds a task; the handler's signal fired. */
  'lease-lost': {
    taskId: string;
    token: number;
    reason: 'session' | 'connection' | 'deadline' | 'handover' | 'closed' | 'rejected';
    rejected?: RejectReason;
  };
  /**
   * This worker's connection proofs are late although its bound connection stands (a
   * pause of this process or of Redis): it cannot be certain it still holds its tasks,
   * but nobody can take them over on connection evidence, and its handlers keep running
   * under the session TTL (`inDoubt: true`); a proof answered ends the doubt
   * (`inDoubt: false`). Nothing is aborted for doubt alone.
   */
  'lease-doubt': { sessionId: string; inDoubt: boolean };
  /** A watched peer session expired. */
  'peer-failed': { session: string; worker: string; tasks: number };
  /** A session renewal failed (Redis error or the session was gone). */
  'renew-failed': { sessionId: string; error: Error; sessionLost: boolean };
  /** An internal fault that did not belong to one run() call. */
  error: { error: Error };
  /** A run() call resolved (every participant emits it once per call). */
  outcome: {
    taskId: string;
    state: 'done' | 'failed';
    role: 'ran' | 'watched' | 'took-over';
    token: number;
    attempts: number;
    /** ms from the run() call to its outcome. */
    elapsedMs: number;
  };
  /** Every event published on the namespace channel (for `pairlock watch`). */
  'namespace-event': NamespaceEvent;
}

type Listener<T> = (payload: T) => void;

/**
 * A small typed emitter. A listener that throws is logged and skipped: a bug in a
 * listener must never take the worker (and its leases) down.
 */
export class TypedEmitter<E extends object> {
  private readonly listeners = new Map<keyof E, Set<Listener<never>>>();
  /** The logger given in the options (silent by default); feeds and helpers log through it too. */
  constructor(readonly logger: Logger) {}

  on<K extends keyof E>(event: K, fn: Listener<E[K]>): this {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(fn as Listener<never>);
    return this;
  }

  off<K extends keyof E>(event: K, fn: Listener<E[K]>): this {
    this.listeners.get(event)?.delete(fn as Listener<never>);
    return this;
  }

  once<K extends keyof E>(event: K, fn: Listener<E[K]>): this {
    const wrapped: Listener<E[K]> = (p) => {
      this.off(event, wrapped);
      fn(p);
    };
    return this.on(event, wrapped);
  }

  listenerCount(event: keyof E): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  protected emit<K extends keyof E>(event: K, payload: E[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        (fn as Listener<E[K]>)(payload);
      } catch (err) {
        this.logger.error({ err, event: String(event) }, 'pairlock: an event listener threw');
      }
    }
  }
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};
