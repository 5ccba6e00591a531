/**
 * The CLI's connection options on one redis-server that speaks both plain TCP and TLS (a
 * certificate made at test time) and has ACL users: rediss:// and --tls-ca (from the
 * command line and from the environment), a wrong trust anchor, the user line of
 * docs/cli.md, a user without a command the CLI needs, wrong credentials. Passwords never
 * appear in what the CLI prints.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PairedWorker } from '../src/index.js';
import { freePort, RedisServer, RedisServerStartError } from '../src/testing/index.js';
import { makeCertificates, type TestCertificates, tlsServerArgs } from './support/certs.js';
import { baseEnv, cli, Running, root } from './support/cli-process.js';

let dir: string;
let certs: TestCertificates | undefined;
let server: RedisServer;
let tlsPort = 0;
let admin: Redis;
let skipTls: string | undefined;
const SECRET = 's3cret-Value';

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pairlock-cli-conn-'));
  try {
    certs = makeCertificates(dir);
  } catch (err) {
    skipTls = `openssl could not make test certificates: ${(err as Error).message}`;
  }
  tlsPort = await freePort();
  const tlsArgs = certs ? tlsServerArgs(certs, tlsPort) : [];
  try {
    server = await RedisServer.start({ args: tlsArgs });
  } catch (err) {
    const log = err instanceof RedisServerStartError ? err.log.join('\n') : String(err);
    if (!certs || !/tls|ssl/i.test(log)) throw err;
    skipTls = 'this redis-server was built without TLS support';
    server = await RedisServer.start();
  }
  admin = new Redis(server.url);
  // records for the CLI to read, written by a pair on the plain port
  const w = new PairedWorker({ redis: server.url, namespace: 'conn', name: 'w' });
  await w.run('order-1', () => ({ shipped: true }));
  await w.run('field-1', () => 1, { hash: { key: 'jobs' } });
  await w.close();
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const ns = ['--namespace', 'conn'];
type Rec = { taskId: string; state: string; result?: unknown };

describe('TLS', () => {
  const tlsUrl = () => `rediss://127.0.0.1:${tlsPort}`;

  it('rediss:// with --tls-ca, or the same from REDIS_URL and PAIRLOCK_TLS_CA', async (ctx) => {
    ctx.skip(skipTls !== undefined, skipTls);
    const res = await cli([
      '--redis',
      tlsUrl(),
      '--tls-ca',
      certs!.ca,
      ...ns,
      'inspect',
      'order-1',
      '--json',
    ]);
    expect(res.stderr).toBe('');
    expect(JSON.parse(res.stdout)).toMatchObject({ state: 'done', result: { shipped: true } });

    const env = await cli([...ns, 'list', '--json'], 60_000, {
      ...baseEnv(),
      REDIS_URL: tlsUrl(),
      PAIRLOCK_TLS_CA: certs!.ca,
    });
    expect(env.code).toBe(0);
    expect((JSON.parse(env.stdout) as Rec[]).map((r) => r.taskId)).toEqual(['order-1']);

    // --tls-ca alone turns TLS on, whatever the scheme
    const implied = await cli([
      '--redis',
      `redis://127.0.0.1:${tlsPort}`,
      '--tls-ca',
      certs!.ca,
      ...ns,
      'stats',
      '--json',
    ]);
    expect(implied.code).toBe(0);
    expect(JSON.parse(implied.stdout)).toMatchObject({ tasks: { total: 1, done: 1 } });
  });

  it('watch over TLS', async (ctx) => {
    ctx.skip(skipTls !== undefined, skipTls);
    const watch = Running.start([
      '--redis',
      tlsUrl(),
      '--tls-ca',
      certs!.ca,
      '--namespace',
      'tls-watch',
      'watch',
      '--json',
    ]);
    const w = new PairedWorker({ redis: server.url, namespace: 'tls-watch', name: 'w' });
    try {
      await watch.waitFor(() => watch.err.some((l) => l.startsWith('watching ')), 'the watch');
      await w.run('t', () => 1);
      await watch.waitFor(() => watch.out.some((l) => l.includes('"done"')), 'the settle');
      expect(watch.out.map((l) => (JSON.parse(l) as { event: string }).event)).toEqual([
        'claimed',
        'done',
      ]);
    } finally {
      watch.child.kill('SIGINT');
      await w.close();
    }
    expect(await watch.exited).toBe(0);
  });

  it('a certificate the CA does not vouch for: exit 2 naming the address and the reason', async (ctx) => {
    ctx.skip(skipTls !== undefined, skipTls);
    for (const args of [[], ['--tls-ca', certs!.otherCa]]) {
      const res = await cli(['--redis', tlsUrl(), ...args, '--timeout', '2000', ...ns, 'list']);
      expect(res.code).toBe(2);
      expect(res.stderr).toContain(`Redis at 127.0.0.1:${tlsPort}`);
      expect(res.stderr).toMatch(/certificate/i);
    }
  });

  it('a --tls-ca that is not a PEM certificate, or cannot be read: exit 1 naming the option', async () => {
    const notPem = path.join(dir, 'not.pem');
    writeFileSync(notPem, 'hello\n');
    const bad = await cli(['--redis', tlsUrl(), '--tls-ca', notPem, 'list']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`--tls-ca: "${notPem}" holds no PEM certificate`);
    const env = await cli(['list'], 60_000, {
      ...baseEnv(),
      PAIRLOCK_TLS_CA: path.join(dir, 'gone.pem'),
    });
    expect(env.code).toBe(1);
    expect(env.stderr).toContain('PAIRLOCK_TLS_CA (--tls-ca): cannot read');
    expect(env.stderr).toContain('ENOENT');
  });
});

describe('ACL users (--user, --password)', () => {
  // the line users copy from docs/cli.md is the line under test
  const doc = readFileSync(path.join(root, 'docs/cli.md'), 'utf8');
  const rules = (/^ACL SETUSER pairlock-cli (.+)$/m.exec(doc)?.[1] ?? '')
    .split(/\s+/)
    .filter((r) => r !== '' && !r.startsWith('>'));

  async function denials(): Promise<string[]> {
    const log = (await admin.acl('LOG')) as unknown[][];
    return log
      .map((entry) => {
        const m = new Map<string, unknown>();
        for (let i = 0; i + 1 < entry.length; i += 2) m.set(String(entry[i]), entry[i + 1]);
        return `${String(m.get('reason'))}:${String(m.get('object'))}`;
      })
      .filter((d) => !d.includes('client|setinfo'));
  }

  it('the user of docs/cli.md can inspect, list, stats and watch, and Redis refuses nothing', async () => {
    expect(rules).toContain('~pairlock:*');
    await admin.acl('SETUSER', 'cli', 'reset', `>${SECRET}`, ...rules);
    await admin.acl('LOG', 'RESET');
    const as = ['--redis', server.url, '--user', 'cli', ...ns];
    const env = { ...baseEnv(), PAIRLOCK_PASSWORD: SECRET };
    const inspect = await cli([...as, 'inspect', 'order-1', '--json'], 60_000, env);
    expect(inspect.stderr).toBe('');
    expect(JSON.parse(inspect.stdout)).toMatchObject({ state: 'done' });
    const list = await cli([...as, 'list', '--hash', 'jobs', '--json'], 60_000, env);
    expect((JSON.parse(list.stdout) as Rec[]).map((r) => r.taskId)).toEqual(['field-1']);
    const stats = await cli([...as, 'stats', '--json'], 60_000, env);
    expect(JSON.parse(stats.stdout)).toMatchObject({ tasks: { total: 1 } });
    const watch = Running.start([...as, 'watch'], env);
    try {
      await watch.waitFor(() => watch.err.some((l) => l.startsWith('watching ')), 'the watch');
    } finally {
      watch.child.kill('SIGINT');
    }
    expect(await watch.exited).toBe(0);
    expect(await denials()).toEqual([]);
  });

  it('a user without SCAN: exit 1, and the message names the command', async () => {
    await admin.acl(
      'SETUSER',
      'noscan',
      'reset',
      `>${SECRET}`,
      ...rules.filter((r) => r !== '+scan'),
    );
    const res = await cli([
      '--redis',
      server.url,
      '--user',
      'noscan',
      '--password',
      SECRET,
      ...ns,
      'list',
    ]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/refused a command to this user \(NOPERM.*'scan'/);
    expect(res.stderr).toContain('docs/cli.md');
  });

  it('wrong credentials: exit 2 naming the address and the options; the password is never shown', async () => {
    const wrong = await cli([
      '--redis',
      server.url,
      '--user',
      'cli',
      '--password',
      'not-it',
      '--timeout',
      '2000',
      'list',
    ]);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain(
      `Redis at 127.0.0.1:${server.port} refused the credentials (WRONGPASS`,
    );
    expect(wrong.stderr).toContain('--user and --password');
    expect(wrong.stderr).not.toContain('not-it');

    const inUrl = `redis://cli:${SECRET}@127.0.0.1:${server.port}`;
    const both = await cli(['--redis', inUrl, '--password', 'other', 'list']);
    expect(both.code).toBe(1);
    expect(both.stderr).toContain('--redis: the URL carries a user or password of its own');
    expect(both.stderr + both.stdout).not.toContain(SECRET);

    const noPassword = await cli(['--redis', server.url, '--user', 'cli', 'list']);
    expect(noPassword.code).toBe(1);
    expect(noPassword.stderr).toContain('--user needs --password (or PAIRLOCK_PASSWORD)');
  });
});
