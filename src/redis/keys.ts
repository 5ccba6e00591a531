/**
 * Key layout of a namespace. Every key carries the namespace as a Cluster hash tag, so
 * one Lua script may touch the record, the hash index and the sessions of one namespace
 * on one shard.
 *
 *   <prefix>:{<ns>}:t:<taskId>        task record (plain-key mode)
 *   <prefix>:{<ns>}:h:<key>           hash of task records (hash-field mode), field = task id
 *   <prefix>:{<ns>}:hx:<key>          index zset of that hash: field -> drop time (server ms)
 *   <prefix>:{<ns>}:s:<sessionId>     a worker's session (liveness lease)
 *   <prefix>:{<ns>}:q:<sessionId>     its change sequence: +1 per batch of its settles and releases
 *   <prefix>:{<ns>}:b:<sessionId>     its binding to its worker's connection (lua/includes/binding)
 *   <prefix>:{<ns>}:live:<sessionId>  its liveness channel, subscribed by that connection
 *   <prefix>:{<ns>}:checks            the standbys' shared connection checks (lua/cover.lua)
 *   <prefix>:{<ns>}:history           task history: a capped Stream of transitions (lua/includes/history)
 *   <prefix>:{<ns>}:events            pub/sub channel of the namespace (takeovers, settles, releases)
 *   <prefix>:{<ns>}:events:claims     fresh claims, published only while <channel>:watching exists
 *   <prefix>:{<ns>}:events:watching  flag kept alive by `pairlock watch`
 */
export interface TaskLocation {
  readonly taskId: string;
  /** Identifies the task in events and local maps. */
  readonly ref: string;
  /** The record key (plain mode) or the hash (hash-field mode). */
  readonly container: string;
  /** The hash's index zset; in plain mode the record key again (declared, never touched). */
  readonly index: string;
  /** '' in plain mode. */
  readonly field: string;
  /** The user's hash name, in hash-field mode. */
  readonly hashKey?: string;
}

export class Keys {
  readonly base: string;
  readonly channel: string;
  readonly sessionPrefix: string;
  readonly seqPrefix: string;
  readonly bindPrefix: string;
  readonly livePrefix: string;
  readonly history: string;
  /** The namespace's shared record of its standbys' connection checks (lua/cover.lua). */
  readonly checks: string;

  constructor(keyPrefix: string, namespace: string) {
    this.base = `${keyPrefix}:{${namespace}}:`;
    this.channel = `${this.base}events`;
    this.sessionPrefix = `${this.base}s:`;
    this.seqPrefix = `${this.base}q:`;
    this.bindPrefix = `${this.base}b:`;
    this.livePrefix = `${this.base}live:`;
    this.history = `${this.base}history`;
    this.checks = `${this.base}checks`;
  }

  session(sessionId: string): string {
    return this.sessionPrefix + sessionId;
  }

  /** The change sequence of a session: lets a standby tell whether it missed an event. */
  seq(sessionId: string): string {
    return this.seqPrefix + sessionId;
  }

  /** The binding of a session to its worker's connection. */
  bind(sessionId: string): string {
    return this.bindPrefix + sessionId;
  }

  task(taskId: string, hashKey?: string): TaskLocation {
    if (hashKey === undefined) {
      const container = `${this.base}t:${taskId}`;
      return { taskId, ref: `t:${taskId}`, container, index: container, field: '' };
    }
    return {
      taskId,
      hashKey,
      // length-prefixed so that no (key, field) pair can spell another's ref
      ref: `h:${hashKey.length}:${hashKey}${taskId}`,
      container: `${this.base}h:${hashKey}`,
      index: `${this.base}hx:${hashKey}`,
      field: taskId,
    };
  }
}

/** A task ref (Keys.task: `t:<id>`, or `h:<hash length>:<hash><id>`) back to its task. */
export function parseTaskRef(ref: string): { taskId: string; hashKey?: string } {
  if (ref.startsWith('t:')) return { taskId: ref.slice(2) };
  const m = /^h:(\d+):/.exec(ref);
  if (!m) return { taskId: ref };
  const len = Number(m[1]);
  const rest = ref.slice(m[0].length);
  return { hashKey: rest.slice(0, len), taskId: rest.slice(len) };
}
