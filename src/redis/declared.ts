/**
 * Every key a script touches is declared in its KEYS, so that on a Redis Cluster whose
 * namespace slot is migrating, Redis answers ASK or TRYAGAIN before the script runs rather
 * than let it read a key that is still (or already) on the other node. A claim reads the
 * keys of the session that holds a task (its lease, change sequence and binding), so the
 * claimer declares the sessions it expects to find holding tasks: itself and the peers it
 * has met. A task held by a session it did not declare is answered `owner-undeclared`
 * (nothing decided, nothing written), and asked again with that session's keys.
 */
export class KnownOwners {
  /** Session ids, least recently met first. */
  private readonly ids = new Set<string>();
  /** The session noted last (a batch notes the same holder for each of its tasks). */
  private last = '';

  constructor(private readonly limit = 16) {}

  /** A session seen holding a task (or asked about by a script). */
  note(session: string): void {
    if (session === '' || session === this.last) return;
    this.last = session;
    if (this.ids.has(session)) {
      this.ids.delete(session);
    } else if (this.ids.size >= this.limit) {
      const oldest = this.ids.values().next().value;
      if (oldest !== undefined) this.ids.delete(oldest);
    }
    this.ids.add(session);
  }

  /** The sessions to declare, most recently met first; `first` (the caller) leads. */
  list(first?: string): string[] {
    const out = first === undefined ? [] : [first];
    for (const id of [...this.ids].reverse()) if (id !== first) out.push(id);
    return out;
  }
}

/** Claim rounds for one batch: a task whose owner changes that often is answered unsure. */
export const DECLARE_ROUNDS = 4;
