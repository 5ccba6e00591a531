/**
 * The bare batched probe: a pair of pairlock's protocol shape doing as little as it can,
 * run in scenario 1 as a reference for what this machine allows that shape (not a lock
 * service: none of pairlock's safety is in it).
 *
 * Each side coalesces the calls of one event-loop turn into one claim script and one
 * settle script, with pairlock's own batcher (src/redis/batcher.ts); a settle batch
 * publishes one event naming its tasks; a loser waits for that event. There are no
 * sessions, fencing tokens, attempts, deadlines, retries, takeovers, options, history or
 * worker events, and results are not passed on. A loser whose event passed it by (pub/sub
 * and command replies come on two connections, in no fixed order) looks again after
 * MISSED_EVENT_MS.
 */
import type { Redis } from 'ioredis';
import { Batcher } from '../src/redis/batcher.js';

const CLAIM = `
local out = {}
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], 'R', 'NX', 'PX', ARGV[1]) then
    out[i] = 1
  elseif redis.call('GET', KEYS[i]) == 'D' then
    out[i] = 2
  else
    out[i] = 0
  end
end
return out`;

const SETTLE = `
for i = 1, #KEYS do redis.call('SET', KEYS[i], 'D', 'PX', ARGV[1]) end
redis.call('PUBLISH', ARGV[2], table.concat(KEYS, ','))
return #KEYS`;

const MISSED_EVENT_MS = 50;
const KEEP_MS = 60_000;

type ProbeClient = Redis & {
  probeClaim(n: number, ...args: string[]): Promise<number[]>;
  probeSettle(n: number, ...args: string[]): Promise<number>;
};

export class BareProbe {
  private readonly waiting = new Map<string, () => void>();
  private readonly claim: (key: string) => Promise<number>;
  private readonly settle: (key: string) => Promise<number>;

  constructor(
    client: Redis,
    private readonly subscriber: Redis,
    private readonly channel: string,
  ) {
    client.defineCommand('probeClaim', { lua: CLAIM });
    client.defineCommand('probeSettle', { lua: SETTLE });
    const c = client as ProbeClient;
    const claims = new Batcher<string, string, number>((_, keys) =>
      c.probeClaim(keys.length, ...keys, String(KEEP_MS)),
    );
    const settles = new Batcher<string, string, number>(async (_, keys) => {
      await c.probeSettle(keys.length, ...keys, String(KEEP_MS), channel);
      return keys.map(() => 1);
    });
    this.claim = (key) => claims.load('', '', key);
    this.settle = (key) => settles.load('', '', key);
  }

  async start(): Promise<void> {
    await this.subscriber.subscribe(this.channel);
    this.subscriber.on('message', (_channel: string, message: string) => {
      for (const key of message.split(',')) {
        const wake = this.waiting.get(key);
        if (wake) {
          this.waiting.delete(key);
          wake();
        }
      }
    });
  }

  /** Race for `key`: the winner runs `handler` and settles; a loser waits for the event. */
  async run(key: string, handler: () => Promise<void> | undefined): Promise<void> {
    for (;;) {
      const answer = await this.claim(key);
      if (answer === 1) {
        await handler();
        await this.settle(key);
        return;
      }
      if (answer === 2) return;
      const woken = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          this.waiting.delete(key);
          resolve(false);
        }, MISSED_EVENT_MS);
        this.waiting.set(key, () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (woken) return;
    }
  }
}
