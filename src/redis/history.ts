/**
 * The task history (lua/includes/history.lua): a capped Redis Stream per namespace, one
 * entry per script call that made transitions, each entry a list of transitions. Read by
 * `pairlock history` and the dashboard; written by the workers' own batches, never here.
 */
import type { Cluster, Redis } from 'ioredis';
import { type GrantKind, grantKinds as grantKindList } from '../shared/codes.js';
import { type Keys, parseTaskRef } from './keys.js';
import { workerOf } from './replies.js';

export type HistoryKind = GrantKind | 'done' | 'failed' | 'released' | 'given-back';

/** Line codes (lua/includes/history.lua): c<grant kind>, then the outcomes and releases. */
const kinds: Record<string, HistoryKind> = {
  ...Object.fromEntries(grantKindList.map((k, i) => [`c${i}`, k])),
  d: 'done',
  f: 'failed',
  x: 'released',
  u: 'given-back',
};

/** Grants: a transition that starts an attempt. */
export const grantKinds: ReadonlySet<HistoryKind> = new Set(grantKindList);

export interface HistoryTransition {
  /** Server time of the script call (ms), and its stream entry id. */
  at: number;
  id: string;
  session: string;
  worker: string;
  kind: HistoryKind;
  token: number;
  attempt: number;
  taskId: string;
  /** The hash of a hash-field task (hlock). */
  hashKey?: string;
  /** Grants: the previous owner's session; failures: the error's code and message. */
  detail: string;
}

function unescapeField(s: string): string {
  if (!s.includes('\\')) return s;
  return s.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c === '!' ? '|' : c));
}

/** One stream entry: its transitions, in the order they were made. */
export function parseHistoryEntry(id: string, fields: readonly string[]): HistoryTransition[] {
  let session = '';
  let text = '';
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === 's') session = fields[i + 1]!;
    else if (fields[i] === 't') text = fields[i + 1]!;
  }
  const at = Number(id.split('-')[0]);
  const out: HistoryTransition[] = [];
  for (const line of text.split('\n')) {
    const parts = line.split('|');
    if (parts.length !== 5) continue;
    const [code, token, attempt, ref, detail] = parts as [string, string, string, string, string];
    const kind = kinds[code];
    if (!kind) continue;
    const task = parseTaskRef(unescapeField(ref));
    out.push({
      at,
      id,
      session,
      worker: workerOf(session),
      kind,
      token: Number(token),
      attempt: Number(attempt),
      ...task,
      detail: unescapeField(detail),
    });
  }
  return out;
}

export interface HistoryQuery {
  /** Only this task's transitions. */
  taskId?: string;
  hashKey?: string;
  /** At most this many transitions, the most recent. @default 1000 */
  limit?: number;
}

type StreamEntries = [string, string[]][];

/**
 * Transitions from one node's history, oldest first: the most recent `limit`, of one task
 * or of the whole namespace. The stream is capped, so a scan for one task is bounded.
 */
export async function readHistory(
  client: Redis | Cluster,
  keys: Keys,
  q: HistoryQuery = {},
): Promise<HistoryTransition[]> {
  const limit = q.limit ?? 1_000;
  const found: HistoryTransition[] = [];
  let end = '+';
  for (;;) {
    const page = (await client.xrevrange(keys.history, end, '-', 'COUNT', 500)) as StreamEntries;
    for (const [id, fields] of page) {
      const ts = parseHistoryEntry(id, fields).filter(
        (t) => q.taskId === undefined || (t.taskId === q.taskId && t.hashKey === q.hashKey),
      );
      for (let i = ts.length - 1; i >= 0 && found.length < limit; i--) found.push(ts[i]!);
      if (found.length >= limit) return found.reverse();
    }
    if (page.length < 500) return found.reverse();
    end = `(${page[page.length - 1]![0]}`;
  }
}

/**
 * Transitions of several nodes (quorum mode: each node keeps its own history), merged in
 * time order, one copy of each.
 */
export function mergeHistories(lists: readonly HistoryTransition[][]): HistoryTransition[] {
  const seen = new Set<string>();
  const all: HistoryTransition[] = [];
  for (const list of lists) {
    for (const t of list) {
      const key = `${t.kind}|${t.token}|${t.session}|${t.hashKey ?? ''}|${t.taskId}`;
      if (seen.has(key)) continue;
      seen.add(key);
      all.push(t);
    }
  }
  return all.sort((a, b) => a.at - b.at || a.token - b.token);
}

/** The duration of each attempt that ended: from its grant to its outcome (same token). */
export function attemptDurations(ts: readonly HistoryTransition[]): Map<HistoryTransition, number> {
  const started = new Map<string, number>();
  const out = new Map<HistoryTransition, number>();
  for (const t of ts) {
    const key = `${t.hashKey ?? ''}|${t.taskId}|${t.token}`;
    if (grantKinds.has(t.kind)) started.set(key, t.at);
    else {
      const at = started.get(key);
      if (at !== undefined) out.set(t, t.at - at);
    }
  }
  return out;
}
