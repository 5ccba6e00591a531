/**
 * The demo's narration follows what happened: the takeover kind the standby reports
 * (connection-lost with connection-bound sessions, the default: the killed holder's
 * connection closed; session-expired without them: its session TTL ran out), not an
 * assumed one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDemo } from '../src/demo/index.js';
import { RedisServer } from '../src/testing/index.js';

let server: RedisServer;
beforeAll(async () => {
  server = await RedisServer.start();
});
afterAll(async () => {
  await server?.stop();
});

async function demo(connectionBound: boolean): Promise<{ text: string; kind: string }> {
  const lines: string[] = [];
  await runDemo({
    redisUrl: server.url,
    tasks: 3,
    connectionBound,
    out: (line) => lines.push(line),
  });
  const text = lines.join('\n');
  const kind = /took over push-\d \(token \d+, ([a-z-]+) of /.exec(text)?.[1];
  expect(kind, text).toBeDefined();
  return { text, kind: kind as string };
}

describe('demo narration', () => {
  it('connection-bound (default): tells of the closed connection, not of an expired session', {
    timeout: 120_000,
  }, async () => {
    const { text, kind } = await demo(true);
    expect(kind, text).toBe('connection-lost');
    expect(text).not.toMatch(/session expired/i);
    expect(text).not.toMatch(/at most one TTL after a crash/);
    expect(text).toMatch(/connection/);
    expect(text).toMatch(/crashGraceMs/);
    // the summary names the takeover kind it measured
    expect(text).toMatch(/takeover after SIGKILL: \d+ ms \(connection-lost\)/);
  });

  it('without connection-bound sessions: tells of the session TTL running out', {
    timeout: 120_000,
  }, async () => {
    const { text, kind } = await demo(false);
    expect(kind, text).toBe('session-expired');
    expect(text).toMatch(/session expired/i);
    expect(text).toMatch(/takeover after SIGKILL: \d+ ms \(session-expired\)/);
  });
});
