import type { Client } from './connection.js';
import { asUnavailable, describeClient, ReplicationError, withTimeout } from './connection.js';
import type { TaskLocation } from './keys.js';
import type { ClaimReply, Raw } from './replies.js';
import { loadScripts, type ScriptName } from './scripts.js';

/**
 * Replication safety on a replicated Redis (option `replication`): WAIT after a write, on
 * the same connection, and what an acknowledgement short of `waitReplicas` means.
 */
export class Replication {
  constructor(
    private readonly client: Client,
    readonly opts: {
      readonly waitReplicas: number;
      readonly waitTimeoutMs: number;
      readonly onTimeout: 'reject' | 'accept';
    },
    private readonly timeoutMs: number,
    /** A key of the namespace (same slot) that waitForWhatWasRead() writes. */
    private readonly fenceKey: string,
  ) {}

  /**
   * Run a script and `WAIT` on one connection, back to back (one pipeline), so that WAIT
   * counts the replicas that acknowledged this very write. Returns the reply and the
   * number of replicas that acknowledged it in time.
   */
  async callAndWait(
    name: ScriptName,
    args: (string | number)[],
  ): Promise<{ raw: Raw; acked: number }> {
    const r = this.opts;
    const def = loadScripts()[name];
    // scripts of a variable key count take it as their first argument
    const numberOfKeys = def.numberOfKeys ?? Number(args[0]);
    if (def.numberOfKeys === undefined) args = args.slice(1);
    const attempt = async (load: boolean): Promise<{ raw: Raw; acked: number } | undefined> => {
      const pipe = this.client.pipeline();
      // EVALSHA first; EVAL only when the server does not know the script yet, so that the
      // script and its WAIT always leave together (ioredis would resend a NOSCRIPT eval alone)
      if (load) pipe.eval(def.lua, numberOfKeys, ...args);
      else pipe.evalsha(def.sha1, numberOfKeys, ...args);
      pipe.wait(r.waitReplicas, r.waitTimeoutMs);
      const res = await pipe.exec();
      const [scriptRes, waitRes] = res ?? [];
      const scriptErr = scriptRes?.[0];
      if (scriptErr) {
        if (!load && /NOSCRIPT/.test(scriptErr.message)) return undefined;
        throw scriptErr;
      }
      if (waitRes?.[0]) throw waitRes[0];
      return { raw: scriptRes?.[1] as Raw, acked: Number(waitRes?.[1] ?? 0) };
    };
    const run = async () => (await attempt(false)) ?? (await attempt(true));
    const out = await withTimeout(
      run(),
      this.timeoutMs + r.waitTimeoutMs,
      () =>
        `${describeClient(this.client)} did not answer within ${this.timeoutMs + r.waitTimeoutMs} ms (options \`connectTimeoutMs\` + \`replication.waitTimeoutMs\`)`,
    ).catch((err: unknown) => {
      throw asUnavailable(err, this.client);
    });
    if (out === undefined) throw new Error(`script ${name} could not be loaded`);
    return out;
  }

  /**
   * WAIT counts the replicas that have this connection's own writes; a read writes
   * nothing. A small write after it (one key per namespace, same slot) comes later in the
   * replication stream than whatever was read, so a replica that acknowledged it has that
   * too. Returns how many did in time.
   */
  async waitForWhatWasRead(): Promise<number> {
    const r = this.opts;
    const fence = this.fenceKey;
    const res = await withTimeout(
      this.client
        .pipeline()
        .set(fence, '1', 'PX', 60_000)
        .wait(r.waitReplicas, r.waitTimeoutMs)
        .exec(),
      this.timeoutMs + r.waitTimeoutMs,
      () =>
        `${describeClient(this.client)} did not answer WAIT within ${this.timeoutMs + r.waitTimeoutMs} ms`,
    ).catch((err: unknown) => {
      throw asUnavailable(err, this.client);
    });
    const [setRes, waitRes] = res ?? [];
    if (setRes?.[0]) throw asUnavailable(setRes[0], this.client);
    if (waitRes?.[0]) throw asUnavailable(waitRes[0], this.client);
    return Number(waitRes?.[1] ?? 0);
  }

  /** A write that replicas did not acknowledge in time: reject it, or accept it as made. */
  shortfall(what: string, acked: number): ReplicationError | undefined {
    const r = this.opts;
    if (acked >= r.waitReplicas || r.onTimeout === 'accept') return undefined;
    return new ReplicationError(
      `${what}: ${acked} of ${r.waitReplicas} replica(s) of ${describeClient(this.client)} acknowledged it within ${r.waitTimeoutMs} ms (option \`replication\`); it was not counted`,
      acked,
    );
  }

  /**
   * A claim's reply under replication safety. An outcome read from the master may be one a
   * failover is about to lose (a settle its replicas do not have yet): it counts once a
   * replica has it. A grant (or a resumed one, whose first WAIT may have failed: WAIT
   * counts what the connection wrote so far) runs only once replicas acknowledge it; if
   * they do not, it is given back (`giveBack`, as an unused release, so that any worker may
   * claim it at once) rather than run a task whose grant a failover could erase. Should the
   * give-back fail, the record stays this session's, and the next claim is answered
   * 'resumed': that grant, too, runs only once replicas acknowledge it.
   */
  async confirmClaim(
    loc: TaskLocation,
    reply: ClaimReply,
    acked: number,
    giveBack: (token: number) => Promise<unknown>,
  ): Promise<ClaimReply> {
    if (reply.type === 'done' || (reply.type === 'failed' && reply.terminal)) {
      const unsure = this.shortfall(
        `the outcome of task ${JSON.stringify(loc.taskId)}`,
        await this.waitForWhatWasRead(),
      );
      if (unsure) throw unsure;
      return reply;
    }
    if (reply.type !== 'granted' && reply.type !== 'resumed') return reply;
    const shortfall = this.shortfall(
      `the grant of task ${JSON.stringify(loc.taskId)}`,
      acked >= 0 ? acked : await this.waitForWhatWasRead(),
    );
    if (!shortfall) return reply;
    await giveBack(reply.token).catch(() => {});
    throw shortfall;
  }
}
