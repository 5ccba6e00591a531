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

/**
 * The worker's subscriber on one Redis: namespace events, and the sessions' liveness channels.
 *
 * It restores its own subscriptions after a reconnect (ioredis's autoResubscribe is off):
 * ioredis sends those SUBSCRIBE commands without handling their failure, so a connection
 * that drops again before they are answered made an unhandled rejection, which ends the
 * process (ioredis 5.11; redis/ioredis#2187). `ready` listeners run once the channels are
 * subscribed again.
 */
export class Subscriber implements LiveLink {
  readonly client: Redis;
  private first = true;
  /** Subscribed now, or to be subscribed again after a reconnect. */
  private readonly channels = new Set<string>();
  /** Connected, with its channels subscribed. */
  private restored = false;
  private readonly readyListeners: (() => void)[] = [];

  constructor(
    main: Client,
    private readonly channel: string,
    /** Liveness channel prefix, as the scripts name it (client key prefix included). */
    private readonly livePrefix: string,
    private readonly timeoutMs: number,
    onMessage: (msg: string) => void,
    onReconnect: () => void,
  ) {
    this.client = (main as Redis).duplicate({ autoResubscribe: false });
    this.client.on('error', () => {
      // reconnection is ioredis's job; onReconnect re-checks every waiting task
    });
    this.client.on('message', (ch: string, msg: string) => {
      if (ch === channel) onMessage(msg);
    });
    this.client.on('close', () => {
      this.restored = false;
    });
    this.client.on('ready', () => {
      if (this.first) {
        this.first = false;
        return;
      }
      const all = [...this.channels];
      const restore = all.length > 0 ? this.client.subscribe(...all) : Promise.resolve(0);
      restore.then(
        () => {
          if (this.client.status !== 'ready') return;
          this.restored = true;
          for (const listener of this.readyListeners) listener();
          onReconnect();
        },
        () => {
          // the connection dropped again: the next 'ready' restores them
        },
      );
    });
  }

  async start(): Promise<void> {
    await connectClient(this.client, this.timeoutMs);
    this.channels.add(this.channel);
    await withTimeout(
      this.client.subscribe(this.channel),
      this.timeoutMs,
      () => 'SUBSCRIBE timed out',
    );
    this.restored = true;
  }

  get ready(): boolean {
    return this.restored && this.client.status === 'ready';
  }

  on(event: 'ready' | 'close', listener: () => void): void {
    if (event === 'ready') this.readyListeners.push(listener);
    else this.client.on('close', listener);
  }

  async follow(sessionId: string, previous: string): Promise<void> {
    const live = this.livePrefix + sessionId;
    this.channels.add(live);
    await withTimeout(this.client.subscribe(live), this.timeoutMs, () => 'SUBSCRIBE timed out');
    if (previous && previous !== sessionId) {
      this.channels.delete(this.livePrefix + previous);
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
