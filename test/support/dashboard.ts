import { parseConnection } from '../../src/cli/connection.js';
import { type DashboardOptions, dashboardCommand } from '../../src/cli/dashboard/index.js';

/** A `pairlock dashboard` served from this process, on a free port. */
export interface Dashboard {
  readonly url: string;
  readonly out: string[];
  readonly err: string[];
  stop(): Promise<void>;
}

export async function startDashboard(
  redis: string,
  namespace: string,
  /** Options of the command; `redis` overrides the address, `nodes` asks for quorum mode. */
  extra: Partial<DashboardOptions> & { redis?: string; nodes?: string } = {},
): Promise<Dashboard> {
  const { redis: redisUrl = redis, nodes, ...options } = extra;
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => {
    stop = resolve;
  });
  const out: string[] = [];
  const err: string[] = [];
  let listening!: (url: string) => void;
  const url = new Promise<string>((resolve) => {
    listening = resolve;
  });
  const done = dashboardCommand(
    { port: 0, host: '127.0.0.1', maxTasks: 10_000, count: 500, ...options },
    {
      connection: parseConnection(
        nodes === undefined
          ? { redis: { value: redisUrl, source: 'cli' } }
          : { nodes: { value: nodes, source: 'cli' } },
      ),
      namespace,
      keyPrefix: 'pairlock',
      timeout: 5_000,
    },
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    stopped,
    listening,
  );
  const ended = done.then(() => {
    throw new Error(`the dashboard ended before it listened: ${err.join('\n')}`);
  });
  return {
    url: await Promise.race([url, ended]),
    out,
    err,
    stop: async () => {
      stop();
      await done;
    },
  };
}

/** Poll `fn` until it returns a value that is not undefined (or throw after `timeoutMs`). */
export async function until<T>(
  fn: () => Promise<T | undefined> | T | undefined,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface SseMessage {
  event: string;
  id?: string;
  data: unknown;
}

/** A reader of a server-sent-events stream: every message, parsed, in order. */
export class SseReader {
  readonly messages: SseMessage[] = [];
  readonly status: Promise<number>;
  private readonly abort = new AbortController();

  constructor(url: string, headers: Record<string, string> = {}) {
    this.status = fetch(url, { headers, signal: this.abort.signal }).then((res) => {
      if (res.ok && res.body) void this.read(res.body);
      return res.status;
    });
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of body) {
        buf += decoder.decode(chunk, { stream: true });
        let end = buf.indexOf('\n\n');
        while (end >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const msg: SseMessage = { event: 'message', data: undefined };
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) msg.event = line.slice(7);
            else if (line.startsWith('id: ')) msg.id = line.slice(4);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (data.length > 0) {
            msg.data = JSON.parse(data.join('\n'));
            this.messages.push(msg);
          }
          end = buf.indexOf('\n\n');
        }
      }
    } catch {
      // aborted
    }
  }

  /** Every item of every `events` message so far. */
  events(): Record<string, unknown>[] {
    return this.messages
      .filter((m) => m.event === 'events')
      .flatMap((m) => m.data as Record<string, unknown>[]);
  }

  close(): void {
    this.abort.abort();
  }
}
