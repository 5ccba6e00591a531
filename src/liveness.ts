import type { Redis } from 'ioredis';
import { ReplyCode } from './codes.js';
import { type Client, connectClient, withTimeout } from './connection.js';
import type { BindReply, LiveLink, Raw } from './replies.js';

/*
 * The server side of connection-bound sessions, for one Redis: the subscriber connection
 * a session is bound to, and the decoding of bind-2.lua's replies. The argument is in
 * binding.ts; the evidence in lua/includes/binding.lua.
 */

export function decodeBind(raw: Raw): BindReply {
  switch (raw[0]) {
    case ReplyCode.Ok:
      return { ok: true, runId: String(raw[1] ?? '') };
    case ReplyCode.SessionExpired:
      return { ok: false, reason: 'session-expired' };
    case ReplyCode.NotSubscribed:
      return { ok: false, reason: 'not-subscribed' };
    case ReplyCode.NewerBinding:
      return { ok: false, reason: 'newer-binding' };
    case ReplyCode.Unsupported:
      return { ok: false, reason: 'unsupported', version: String(raw[1] ?? '') };
  }
  throw new Error(`unexpected bind reply ${JSON.stringify(raw)}`);
}

/** The worker's subscriber on one Redis: namespace events, and the sessions' liveness channels. */
export class Subscriber implements LiveLink {
  readonly client: Redis;
  private first = true;

  constructor(
    main: Client,
    private readonly channel: string,
    /** Liveness channel prefix, as the scripts name it (client key prefix included). */
    private readonly livePrefix: string,
    private readonly timeoutMs: number,
    onMessage: (msg: string) => void,
    onReconnect: () => void,
  ) {
    this.client = main.duplicate() as Redis;
    this.client.on('error', () => {
      // reconnection is ioredis's job; onReconnect re-checks every waiting task
    });
    this.client.on('message', (ch: string, msg: string) => {
      if (ch === channel) onMessage(msg);
    });
    this.client.on('ready', () => {
      if (this.first) {
        this.first = false;
        return;
      }
      onReconnect();
    });
  }

  async start(): Promise<void> {
    await connectClient(this.client, this.timeoutMs);
    await withTimeout(
      this.client.subscribe(this.channel),
      this.timeoutMs,
      () => 'SUBSCRIBE timed out',
    );
  }

  get ready(): boolean {
    return this.client.status === 'ready';
  }

  on(event: 'ready' | 'close', listener: () => void): void {
    this.client.on(event, listener);
  }

  async follow(sessionId: string, previous: string): Promise<void> {
    const live = this.livePrefix + sessionId;
    await withTimeout(this.client.subscribe(live), this.timeoutMs, () => 'SUBSCRIBE timed out');
    if (previous && previous !== sessionId) {
      await this.client.unsubscribe(this.livePrefix + previous).catch(() => {});
    }
  }

  async ping(): Promise<void> {
    await withTimeout(this.client.ping(), this.timeoutMs, () => 'PING timed out');
  }

  disconnect(): void {
    this.client.disconnect();
  }
}
