/**
 * `pairlock verify` against Redis servers the test starts (verify itself starts none): one
 * Redis, a quorum of three, bad input, a namespace that is not empty, an unreachable address
 * and a Redis user without a needed command. Short runs (a hundred-odd tasks, about 15 s
 * each).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, RedisServer } from '../src/testing/index.js';
import { VERIFY_EXTRA, WORKER_COMMANDS } from '../src/verify/preflight.js';
import { formatReport, type Report } from '../src/verify/report.js';
import { root, cli as runCli } from './support/cli-process.js';

// every run is given its Redis on the command line
const cli = (args: string[], timeoutMs = 120_000) => runCli(args, timeoutMs);

/** Faults the run injects here: client-side, and a short run sees each kind at most once or twice. */
const FAULTS = 'kill,pause,cut,delay,partition';

let server: RedisServer;
let admin: Redis;
beforeAll(async () => {
  server = await RedisServer.start();
  admin = new Redis(server.url);
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

describe('pairlock verify', () => {
  it('against one Redis it did not start: prints the table, exits 0, and leaves no key', async () => {
    // another application's data, which verify must leave alone
    await admin.set('app:balance', '42');
    const before = await admin.dbsize();
    const r = await cli([
      '--redis',
      server.url,
      'verify',
      '--tasks',
      '120',
      '--seconds',
      '10',
      '--faults',
      FAULTS,
    ]);
    if (r.code !== 0) console.error(r.stdout, r.stderr);
    expect(r.stdout).toMatch(/^\| lost tasks +\| 0 +\| ok/m);
    expect(r.stdout).toMatch(/^\| tasks released \/ planned +\| 120 \/ 120 /m);
    expect(r.stdout).toMatch(/^\| topology +\| one Redis at 127\.0\.0\.1:\d+ /m);
    expect(r.stdout).toMatch(
      /^\| overlapping executions not caused by pause, cut or partition +\| 0 +\| ok/m,
    );
    expect(r.stdout).toMatch(/^invariants: PASS /m);
    const written = Number(/: (\d+) keys written and deleted/.exec(r.stdout)?.[1]);
    expect(written).toBeGreaterThan(120);
    // a progress line while it ran
    expect(r.stderr).toMatch(/^verify: \d+ s, released \d+\/120 tasks, \d+ answered/m);
    // said up front: how long, where, and whose handlers
    expect(r.stderr).toMatch(
      /^verify: takes about 17 s: 12 s of tasks and faults \(--seconds 10\)/m,
    );
    expect(r.stderr).toMatch(
      /^verify: writes only keys of namespace pairlock-verify-[0-9a-f]{8} /m,
    );
    expect(r.stderr).toContain("run verify's own test handlers, not yours");
    expect(r.code).toBe(0);
    expect(await admin.dbsize()).toBe(before);
    expect(await admin.get('app:balance')).toBe('42');
    await admin.del('app:balance');
  }, 120_000);

  it('against a quorum of three (--nodes): every invariant holds, and no node keeps a key', async () => {
    const nodes = await Promise.all([0, 1, 2].map(() => RedisServer.start()));
    try {
      const r = await cli([
        '--nodes',
        nodes.map((n) => n.url).join(','),
        'verify',
        '--json',
        '--tasks',
        '120',
        '--seconds',
        '10',
        '--faults',
        'kill,pause,cut,partition,cut-node',
      ]);
      const doc = JSON.parse(r.stdout) as {
        ok: boolean;
        namespace: string;
        keysDeleted: number;
        keysLeft: number;
        runDirectory: string | null;
        report: Report;
      };
      const { report } = doc;
      expect(report.topology).toMatch(/^quorum of 3 nodes/);
      expect(report.released).toBe(120);
      expect(report.lost).toEqual([]);
      expect(report.disagreements).toEqual([]);
      expect(report.hungRunCalls).toEqual([]);
      expect(report.ok, formatReport(report)).toBe(true);
      expect(r.code).toBe(0);
      expect(doc.namespace).toMatch(/^pairlock-verify-[0-9a-f]{8}$/);
      expect(doc.keysDeleted).toBeGreaterThan(0);
      expect(doc.keysLeft).toBe(0);
      expect(doc.runDirectory).toBeNull();
      for (const n of nodes) {
        const c = new Redis(n.url);
        expect(await c.dbsize()).toBe(0);
        c.disconnect();
      }
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
    }
  }, 120_000);

  it('--json prints the report as one JSON document', async () => {
    const r = await cli([
      '--redis',
      server.url,
      'verify',
      '--json',
      '--tasks',
      '40',
      '--seconds',
      '4',
      '--faults',
      'kill,pause',
      '--seed',
      '7',
    ]);
    const doc = JSON.parse(r.stdout) as {
      ok: boolean;
      namespace: string;
      keysLeft: number;
      report: { seed: number; released: number; lost: string[]; ok: boolean };
    };
    expect(doc.report.seed).toBe(7);
    expect(doc.report.released).toBe(40);
    expect(doc.ok).toBe(doc.report.ok);
    expect(r.code).toBe(doc.ok ? 0 : 1);
    expect(doc.keysLeft).toBe(0);
    expect(await admin.dbsize()).toBe(0);
  }, 120_000);

  it('refuses a namespace that holds keys it did not write, and leaves them', async () => {
    await admin.set('pairlock:{orders}:t:order-1', 'x');
    const r = await cli(['--redis', server.url, '--namespace', 'orders', 'verify']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /namespace "orders" already holds keys .*pairlock:\{orders\}:t:order-1/,
    );
    expect(await admin.get('pairlock:{orders}:t:order-1')).toBe('x');
    await admin.del('pairlock:{orders}:t:order-1');
  });

  it('names the command a Redis user may not run', async () => {
    await admin.call(
      'ACL',
      'SETUSER',
      'verifier',
      'on',
      '>secret',
      '~pairlock:*',
      '&pairlock:*',
      '+@all',
      '-rpush',
    );
    try {
      const url = `redis://verifier:secret@127.0.0.1:${server.port}`;
      const r = await cli(['--redis', url, 'verify', '--tasks', '10']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/may not run RPUSH/);
      expect(r.stderr).not.toMatch(/secret/);
    } finally {
      await admin.call('ACL', 'DELUSER', 'verifier');
    }
    expect(await admin.dbsize()).toBe(0);
  });

  it('probes exactly the commands of the documented ACL line, and names its own extras', () => {
    const doc = readFileSync(join(root, 'docs/security.md'), 'utf8');
    const line = /^ACL SETUSER pairlock (.+)$/m.exec(doc)?.[1] ?? '';
    const granted = [...line.matchAll(/\+([a-z|]+)/g)].map((m) => m[1]?.toUpperCase());
    expect([...WORKER_COMMANDS].sort()).toEqual(granted.sort());
    expect(doc).toContain(VERIFY_EXTRA.map((c) => `+${c.toLowerCase()}`).join(' '));
  });

  it.each([
    [['--cluster', '127.0.0.1:7000'], /a Cluster redirects its clients/],
    [['--sentinel', '127.0.0.1:26379', '--master', 'm'], /Sentinel redirects its clients/],
  ])('refuses a topology whose clients are redirected past the proxies: %j', async (topo, msg) => {
    const r = await cli([...topo, 'verify']);
    expect(r.stderr).toMatch(msg);
    expect(r.code).toBe(1);
  });

  it('an unreachable Redis: exit 2, naming the address', async () => {
    const port = await freePort();
    const r = await cli(['--redis', `redis://127.0.0.1:${port}`, '--timeout', '500', 'verify']);
    expect(r.stderr).toContain(`127.0.0.1:${port}`);
    expect(r.code).toBe(2);
  });

  it.each([
    [['verify', '--tasks', '0'], /--tasks must be a positive integer/],
    [['verify', '--seconds', 'soon'], /--seconds must be a positive integer/],
    [['verify', '--faults', 'meteor'], /--faults: unknown fault kind "meteor"/],
    [['verify', '--faults', 'redis-restart'], /--faults: redis-restart restarts a Redis server/],
    [['verify', '--faults', 'cut-node'], /--faults: cut-node needs quorum nodes/],
    [['verify', '--seed', '-1'], /--seed must be an integer >= 0/],
  ])('bad input %j is named', async (args, message) => {
    const r = await cli(['--redis', server.url, ...args]);
    expect(r.stderr).toMatch(message);
    expect(r.code).toBe(1);
  });
});
