import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keys, PairedWorker, type PairedWorkerOptions, PairlockError } from '../src/index.js';
import { loadScripts, scriptNames } from '../src/redis/scripts.js';
import { RedisStore } from '../src/redis/store.js';
import { freePort, RedisServer, RedisServerStartError } from '../src/testing/index.js';
import { makeCertificates, type TestCertificates, tlsServerArgs } from './support/certs.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const quick = {
  sessionTtlMs: 400,
  firstAttemptIntervalMs: 100,
  otherAttemptIntervalMs: 200,
  connectTimeoutMs: 1_500,
  unavailableTimeoutMs: 2_000,
  failure: { policy: 'takeover', maxAttempts: 3, backoffMs: 100 },
} satisfies Partial<PairedWorkerOptions>;

let server: RedisServer;
let admin: Redis;
let seq = 0;

beforeAll(async () => {
  server = await RedisServer.start();
  admin = new Redis(server.url);
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

/** Every denial Redis logged since the last reset, as 'reason:object'. */
async function aclDenials(): Promise<string[]> {
  const log = (await admin.acl('LOG')) as unknown[][];
  return log.map((entry) => {
    const m = new Map<string, unknown>();
    for (let i = 0; i + 1 < entry.length; i += 2) m.set(String(entry[i]), entry[i + 1]);
    return `${String(m.get('reason'))}:${String(m.get('object'))}`;
  });
}

/**
 * Everything a pair does: claim and watch (push wake-up), progress, hash-field mode with
 * retention sweeping, a failure taken over by the peer, inspect, a handover on close, and
 * closing the sessions. Resolves 'ok' or says what went wrong.
 */
async function exercise(
  conn: RedisOptions,
  namespace: string,
  extra: Partial<PairedWorkerOptions> = {},
): Promise<string> {
  const opts = { ...quick, namespace, retentionMs: 100, ...extra };
  const a = new PairedWorker({ redis: conn, name: 'a', ...opts });
  const b = new PairedWorker({ redis: conn, name: 'b', ...opts });
  const timeout = <T>(p: Promise<T>, what: string) =>
    Promise.race([
      p,
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`${what} timed out`)), 5_000)),
    ]);
  try {
    await Promise.all([a.start(), b.start()]);
    let covered!: () => void;
    const gate = new Promise<void>((r) => {
      covered = r;
    });
    b.once('standby', () => covered());
    let claimed!: () => void;
    const aClaimed = new Promise<void>((r) => {
      claimed = r;
    });
    a.once('claimed', () => claimed());
    const pa = a.run('t1', async ({ progress }) => {
      await progress(0.5, { step: 1 });
      await gate;
      return 1;
    });
    pa.catch(() => {});
    await timeout(aClaimed, 'claim');
    const [oa, ob] = await timeout(Promise.all([pa, b.run('t1', () => 2)]), 'plain run');
    if (oa.result !== 1 || ob.result !== 1 || ob.role !== 'watched')
      return `plain: ${JSON.stringify([oa, ob])}`;

    await a.run('f1', () => 'h', { hash: { key: 'jobs' } });
    // past the retention of f1, so the next call on the hash sweeps it
    await new Promise((r) => setTimeout(r, 130));
    await a.run('f2', () => 'h', { hash: { key: 'jobs' } });
    if ((await a.inspect('f2', { hash: { key: 'jobs' } }))?.state !== 'done') return 'inspect';

    const failing = a.run('t2', () => {
      throw new Error('boom');
    });
    failing.catch(() => {});
    const [, retried] = await timeout(
      Promise.all([
        failing,
        new Promise((r) => setTimeout(r, 30)).then(() => b.run('t2', () => 'recovered')),
      ]),
      'failure takeover',
    );
    if (retried.result !== 'recovered') return `failure takeover: ${JSON.stringify(retried)}`;

    let started!: () => void;
    const running = new Promise<void>((r) => {
      started = r;
    });
    const held = a
      .run('t3', ({ signal }) => {
        started();
        return new Promise((_, rej) => signal.addEventListener('abort', () => rej(signal.reason)));
      })
      .catch(() => 'closed');
    await timeout(running, 'handover start');
    const taken = b.run('t3', () => 'taken');
    taken.catch(() => {});
    await new Promise((r) => setTimeout(r, 30));
    await a.close({ handover: true });
    await held;
    const o3 = await timeout(taken, 'handover');
    if (o3.result !== 'taken') return `handover: ${JSON.stringify(o3)}`;
    await b.close();
    const sessions = await admin.keys(`pairlock:{${namespace}}:s:*`);
    if (sessions.length > 0) return `sessions left after close: ${sessions.length}`;
    return 'ok';
  } catch (err) {
    return `error: ${(err as Error).message}`;
  } finally {
    await Promise.allSettled([a.close(), b.close()]);
  }
}

// -------------------------------------------------------------------------------------
// ACL
// -------------------------------------------------------------------------------------

describe('a least-privilege Redis user', () => {
  // the line users copy from the docs is the line under test
  const doc = readFileSync(path.join(root, 'docs/security.md'), 'utf8');
  const line = /^ACL SETUSER pairlock (.+)$/m.exec(doc)?.[1] ?? '';
  const rules = line.split(/\s+/).filter((r) => r !== '' && !r.startsWith('>'));
  const granted = rules.filter((r) => /^\+[a-z]/.test(r)).map((r) => r.slice(1));

  async function user(name: string, extra: { drop?: string } = {}): Promise<RedisOptions> {
    const r = rules.filter((x) => x !== `+${extra.drop}`);
    await admin.acl('SETUSER', name, 'reset', '>secret', ...r);
    return { host: server.host, port: server.port, username: name, password: 'secret' };
  }

  it('docs/security.md has the ACL line, restricted to pairlock keys and channels', () => {
    expect(line).not.toBe('');
    expect(rules).toContain('~pairlock:*');
    expect(rules).toContain('&pairlock:*');
    expect(rules).toContain('-@all');
    expect(rules).toContain('resetkeys');
    expect(rules).toContain('resetchannels');
  });

  it('a pair does everything it does under that user, and Redis refuses nothing', async () => {
    const conn = await user('pl-full');
    await admin.acl('LOG', 'RESET');
    expect(await exercise(conn, `acl-${++seq}`)).toBe('ok');
    expect((await aclDenials()).filter((d) => !d.includes('client|setinfo'))).toEqual([]);
  });

  it('the user reaches nothing outside pairlock:*', async () => {
    const conn = await user('pl-fence');
    const c = new Redis({ ...conn, lazyConnect: true });
    try {
      await c.connect();
      await admin.set('app:secret', 'x');
      await expect(c.get('app:secret')).rejects.toThrow(/NOPERM/);
      await expect(c.set('app:other', 'x')).rejects.toThrow(/NOPERM/);
      await expect(c.keys('*')).rejects.toThrow(/NOPERM/);
      await expect(c.flushall()).rejects.toThrow(/NOPERM/);
      await expect(c.config('GET', '*')).rejects.toThrow(/NOPERM/);
      // and pairlock's scripts cannot be pointed at other keys either
      const w = new PairedWorker({
        redis: conn,
        keyPrefix: 'app',
        namespace: 'x',
        name: 'w',
        ...quick,
      });
      await expect(w.run('t', () => 1)).rejects.toThrow(
        /NOPERM|can't run this command|no permissions/i,
      );
      await w.close();
    } finally {
      c.disconnect();
    }
  });

  it('every command of the line is needed: without any one of them something fails or is refused', async () => {
    const results: Record<string, string> = {};
    for (const cmd of granted) {
      const conn = await user(`pl-no-${cmd}`, { drop: cmd });
      // as on a fresh server: the scripts are not cached yet
      await admin.script('FLUSH');
      await admin.acl('LOG', 'RESET');
      const warned: string[] = [];
      const warn = console.warn;
      console.warn = (...args: unknown[]) => {
        warned.push(String(args[0]));
      };
      let outcome: string;
      try {
        outcome = await exercise(conn, `acl-${++seq}`);
      } finally {
        console.warn = warn;
      }
      const denied = await aclDenials();
      const needed = outcome !== 'ok' || denied.length > 0 || warned.length > 0;
      results[cmd] = needed ? 'needed' : 'NOT NEEDED';
    }
    // PING is the proof's fallback when its PUBLISH fails (the command connection down),
    // which this exercise does not provoke (docs/security.md)
    expect(results).toEqual(
      Object.fromEntries(granted.map((c) => [c, c === 'ping' ? 'NOT NEEDED' : 'needed'])),
    );
  }, 120_000);

  it('INFO: without it ioredis skips its ready check with a warning (and connection-bound sessions stay off); enableReadyCheck: false and connectionBound: false need neither', async () => {
    const conn = await user('pl-no-info', { drop: 'info' });
    const warned: string[] = [];
    const warn = console.warn;
    console.warn = (...args: unknown[]) => {
      warned.push(String(args[0]));
    };
    try {
      expect(await exercise(conn, `acl-${++seq}`)).toBe('ok');
      expect(
        warned.some((w) => /Skipping the ready check because INFO command fails/.test(w)),
      ).toBe(true);
      warned.length = 0;
      await admin.acl('LOG', 'RESET');
      // scripts of connection-bound sessions read the server's run_id with INFO
      expect(
        await exercise({ ...conn, enableReadyCheck: false }, `acl-${++seq}`, {
          connectionBound: false,
        }),
      ).toBe('ok');
      expect(warned).toEqual([]);
      expect((await aclDenials()).filter((d) => !d.includes('client|setinfo'))).toEqual([]);
    } finally {
      console.warn = warn;
    }
  });
});

// -------------------------------------------------------------------------------------
// TLS
// -------------------------------------------------------------------------------------

describe('TLS (rediss://)', () => {
  let dir: string;
  let tlsServer: RedisServer | undefined;
  let tlsPort = 0;
  let ca: Buffer;
  let skipReason: string | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pairlock-tls-'));
    let certs: TestCertificates;
    try {
      // a CA, a server certificate it signs for 127.0.0.1 / localhost, and a CA that
      // signed nothing we use
      certs = makeCertificates(dir);
    } catch (err) {
      skipReason = `openssl could not make test certificates: ${(err as Error).message}`;
      return;
    }
    ca = readFileSync(certs.ca);
    tlsPort = await freePort();
    try {
      tlsServer = await RedisServer.start({ args: tlsServerArgs(certs, tlsPort) });
    } catch (err) {
      const log = err instanceof RedisServerStartError ? err.log.join('\n') : String(err);
      if (/tls|ssl/i.test(log)) {
        skipReason = `this redis-server was built without TLS support (it refused --tls-port: ${log
          .split('\n')
          .find((l) => /tls|ssl/i.test(l))
          ?.trim()})`;
        return;
      }
      throw err;
    }
  });
  afterAll(async () => {
    await tlsServer?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a pair runs over TLS (options with tls.ca), push wake-ups included', async (ctx) => {
    ctx.skip(skipReason !== undefined, skipReason);
    const conn = { host: '127.0.0.1', port: tlsPort, tls: { ca } };
    const ns = `tls-${++seq}`;
    const a = new PairedWorker({
      redis: conn,
      namespace: ns,
      name: 'a',
      ...quick,
      sessionTtlMs: 5_000,
      firstAttemptIntervalMs: 5_000,
    });
    const b = new PairedWorker({
      redis: conn,
      namespace: ns,
      name: 'b',
      ...quick,
      sessionTtlMs: 5_000,
      firstAttemptIntervalMs: 5_000,
    });
    try {
      let covered!: () => void;
      const gate = new Promise<void>((r) => {
        covered = r;
      });
      b.once('standby', () => covered());
      await Promise.all([a.start(), b.start()]);
      const pa = a.run('secret-task', async () => {
        await gate;
        return { over: 'tls' };
      });
      await new Promise((r) => setTimeout(r, 30));
      const t0 = performance.now();
      const [ra, rb] = await Promise.all([pa, b.run('secret-task', () => 'never')]);
      expect(ra).toMatchObject({ role: 'ran', result: { over: 'tls' } });
      expect(rb).toMatchObject({ role: 'watched', result: { over: 'tls' } });
      // the watcher learned it by push, not by its 5 s safety net
      expect(performance.now() - t0).toBeLessThan(4_000);
    } finally {
      await Promise.allSettled([a.close(), b.close()]);
    }
  });

  it('a rediss:// client built by the caller works too', async (ctx) => {
    ctx.skip(skipReason !== undefined, skipReason);
    const client = new Redis(`rediss://localhost:${tlsPort}`, { tls: { ca }, lazyConnect: true });
    const w = new PairedWorker({ redis: client, namespace: `tls-${++seq}`, name: 'c', ...quick });
    try {
      expect(await w.run('t', () => 'ok')).toMatchObject({ state: 'done', result: 'ok' });
    } finally {
      await w.close();
      client.disconnect();
    }
  });

  it('a certificate from another CA is refused: ERR_REDIS_UNAVAILABLE, nothing sent in clear', async (ctx) => {
    ctx.skip(skipReason !== undefined, skipReason);
    const other = readFileSync(path.join(dir, 'other.pem'));
    const w = new PairedWorker({
      redis: { host: '127.0.0.1', port: tlsPort, tls: { ca: other } },
      namespace: `tls-${++seq}`,
      name: 'd',
      ...quick,
      connectTimeoutMs: 800,
    });
    const err = await w.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PairlockError);
    expect((err as PairlockError).code).toBe('ERR_REDIS_UNAVAILABLE');
    await w.close();
    // and a plain-text client gets nowhere on the TLS port
    const plain = new Redis({
      host: '127.0.0.1',
      port: tlsPort,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      connectTimeout: 800,
    });
    plain.on('error', () => {});
    await expect(plain.connect().then(() => plain.ping())).rejects.toThrow();
    plain.disconnect();
  });
});

// -------------------------------------------------------------------------------------
// Namespaces, ownership
// -------------------------------------------------------------------------------------

describe('isolation and ownership', () => {
  it('the same task id in two namespaces is two tasks: both run', async () => {
    const id = `shared-${++seq}`;
    const ran: string[] = [];
    const a = new PairedWorker({
      redis: server.url,
      namespace: `ns-a-${seq}`,
      name: 'a',
      ...quick,
    });
    const b = new PairedWorker({
      redis: server.url,
      namespace: `ns-b-${seq}`,
      name: 'b',
      ...quick,
    });
    const c = new PairedWorker({
      redis: server.url,
      namespace: `ns-a-${seq}`,
      keyPrefix: 'other',
      name: 'c',
      ...quick,
    });
    try {
      const outs = await Promise.all(
        [a, b, c].map((w, i) =>
          w.run(id, () => {
            ran.push(String(i));
            return i;
          }),
        ),
      );
      expect(outs.map((o) => [o.role, o.result, o.token])).toEqual([
        ['ran', 0, 1],
        ['ran', 1, 1],
        ['ran', 2, 1],
      ]);
      expect(ran.sort()).toEqual(['0', '1', '2']);
    } finally {
      await Promise.allSettled([a.close(), b.close(), c.close()]);
    }
  });

  it('a guessed session or token cannot settle, release or report progress for a task someone else holds', async () => {
    const namespace = `forge-${++seq}`;
    const holder = new PairedWorker({
      redis: server.url,
      namespace,
      name: 'holder',
      ...quick,
      sessionTtlMs: 5_000,
    });
    const keys = new Keys('pairlock', namespace);
    const attacker = new RedisStore(server.url, keys, 2_000);
    await attacker.connect();
    let finish!: () => void;
    const gate = new Promise<void>((r) => {
      finish = r;
    });
    let claimed!: () => void;
    const isClaimed = new Promise<void>((r) => {
      claimed = r;
    });
    holder.once('claimed', () => claimed());
    const run = holder.run('payout', async () => {
      await gate;
      return 'paid once';
    });
    try {
      await isClaimed;
      const loc = keys.task('payout');
      const info = await holder.inspect('payout');
      expect(info).toMatchObject({ state: 'running', token: 1 });
      const real = { session: info?.session ?? '', token: info?.token ?? 0 };
      const before = await admin.get(loc.container);
      await attacker.session('open', 'mallory:00000000#1', 5_000, '{}');

      const attempts: [string, { session: string; token: number }, string][] = [
        [
          'a guessed session, the right token',
          { session: 'mallory:00000000#1', token: real.token },
          'not-owner',
        ],
        [
          'a guessed session of the right worker',
          { session: `${holder.id}#2`, token: real.token },
          'not-owner',
        ],
        [
          'the right session, a later token',
          { session: real.session, token: real.token + 1 },
          'not-owner',
        ],
        [
          'the right session, an earlier token',
          { session: real.session, token: real.token - 1 },
          'token-superseded',
        ],
        ['an empty session', { session: '', token: real.token }, 'not-owner'],
      ];
      for (const [what, who, reason] of attempts) {
        const settled = await attacker.settle(loc, {
          ...who,
          state: 'D',
          payload: '"forged"',
          retentionMs: 60_000,
          backoffMs: 0,
        });
        expect(settled, `settle with ${what}`).toMatchObject({ ok: false, reason });
        const released = await attacker.release(loc, { ...who, retentionMs: 60_000 });
        expect(released, `release with ${what}`).toMatchObject({ ok: false, reason });
        const progressed = await attacker.progress(loc, { ...who, progress: 99, note: '"forged"' });
        expect(progressed, `progress with ${what}`).toMatchObject({ ok: false, reason });
      }
      expect(await admin.get(loc.container)).toBe(before);

      finish();
      const out = await run;
      expect(out).toMatchObject({ state: 'done', role: 'ran', result: 'paid once', token: 1 });
      // once settled, nobody (not even with the real proof) can write it again
      const after = await admin.get(loc.container);
      const late = await attacker.settle(loc, {
        ...real,
        state: 'D',
        payload: '"forged"',
        retentionMs: 60_000,
        backoffMs: 0,
      });
      expect(late).toMatchObject({ ok: false, reason: 'already-settled' });
      expect(await admin.get(loc.container)).toBe(after);
    } finally {
      finish();
      await run.catch(() => {});
      await holder.close();
      await attacker.close();
    }
  });
});

// -------------------------------------------------------------------------------------
// No Lua from input
// -------------------------------------------------------------------------------------

/** MONITOR prints arguments escaped (sdscatrepr); ioredis only unescapes \". Back to bytes. */
function unrepr(s: string): Buffer {
  const out: number[] = [];
  const simple: Record<string, number> = { n: 10, r: 13, t: 9, a: 7, b: 8, '\\': 92, '"': 34 };
  const bytes = Buffer.from(s, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i] ?? 0;
    if (c !== 92) {
      out.push(c);
      continue;
    }
    const next = String.fromCharCode(bytes[i + 1] ?? 0);
    if (next === 'x') {
      out.push(Number.parseInt(String.fromCharCode(bytes[i + 2] ?? 0, bytes[i + 3] ?? 0), 16));
      i += 3;
    } else if (next in simple) {
      out.push(simple[next] ?? 0);
      i += 1;
    } else out.push(c);
  }
  return Buffer.from(out);
}

describe('no script text is built from input', () => {
  it('the scripts are the files in lua/, and their SHA-1s do not depend on anything else', () => {
    const defs = loadScripts();
    expect(Object.keys(defs).sort()).toEqual([...scriptNames].sort());
    for (const def of Object.values(defs)) {
      expect(createHash('sha1').update(def.lua).digest('hex')).toBe(def.sha1);
      expect(def.command).toBe(`pl_${def.name}_${def.sha1.slice(0, 10)}`);
      expect(def.lua).not.toMatch(/@include/);
    }
    // two workers with nothing in common define the very same commands on their clients
    const a = new PairedWorker({ redis: server.url, namespace: 'n1', keyPrefix: 'p1', name: 'x' });
    const b = new PairedWorker({
      redis: server.url,
      namespace: 'n2-other',
      keyPrefix: 'p2:x',
      name: 'y',
    });
    const commandsOf = (w: PairedWorker) => {
      const client = (
        w as unknown as { store: { client: { scriptsSet: Record<string, { sha: string }> } } }
      ).store.client;
      return Object.entries(client.scriptsSet)
        .map(([name, s]) => `${name}=${s.sha}`)
        .sort();
    };
    expect(commandsOf(a)).toEqual(commandsOf(b));
    expect(commandsOf(a)).toEqual(
      Object.values(defs)
        .map((d) => `${d.command}=${d.sha1}`)
        .sort(),
    );
    void a.close();
    void b.close();
  });

  it('on a live server, every script any worker sends is one of the shipped ones, whatever the ids and namespaces', async () => {
    const fresh = await RedisServer.start();
    const side = new Redis(fresh.url);
    const monitor = await side.monitor();
    const sent: string[][] = [];
    monitor.on('monitor', (_time: string, args: string[]) => {
      const cmd = String(args[0]).toLowerCase();
      if (
        cmd === 'eval' ||
        cmd === 'evalsha' ||
        cmd === 'script' ||
        cmd === 'function' ||
        cmd === 'fcall'
      )
        sent.push(args);
    });
    const defs = Object.values(loadScripts());
    const workers = [
      new PairedWorker({ redis: fresh.url, namespace: 'alpha', name: 'a', ...quick }),
      new PairedWorker({
        redis: fresh.url,
        namespace: 'beta',
        keyPrefix: 'other',
        name: 'b',
        ...quick,
      }),
    ];
    try {
      const ids = [
        "'; return redis.call('FLUSHALL') --",
        ']]..redis.call("FLUSHALL")..[[',
        '{x}|\n\u0000',
        'é🙂',
        'plain',
      ];
      for (const w of workers) {
        for (const id of ids) {
          await w.run(id, ({ progress }) => progress(1, { note: "')--" }).then(() => id));
          await w.run(id, () => id, { hash: { key: `]]--${id}` } });
          await w.inspect(id);
        }
      }
      await new Promise((r) => setTimeout(r, 200));
      expect(sent.length).toBeGreaterThan(0);
      for (const args of sent) {
        const cmd = String(args[0]).toLowerCase();
        if (cmd === 'evalsha') expect(defs.map((d) => d.sha1)).toContain(args[1]);
        else if (cmd === 'eval') {
          const body = unrepr(String(args[1]));
          expect(defs.map((d) => d.sha1)).toContain(createHash('sha1').update(body).digest('hex'));
        } else throw new Error(`unexpected scripting command ${cmd}`);
      }
      const info = await side.info('memory');
      const cached = Number(/number_of_cached_scripts:(\d+)/.exec(info)?.[1] ?? 'NaN');
      expect(cached).toBeLessThanOrEqual(defs.length);
      // and the server still holds what it should: the injection-looking ids were just ids
      expect(await workers[0]?.inspect(ids[0] ?? '')).toMatchObject({ state: 'done' });
    } finally {
      await Promise.allSettled(workers.map((w) => w.close()));
      monitor.disconnect();
      side.disconnect();
      await fresh.stop();
    }
  });

  it('in the source: defineCommand only in src/redis/scripts.ts, fed from lua/ files; any other EVAL sends a shipped script', () => {
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (/\.(ts|js|mjs|cjs)$/.test(e.name)) files.push(p);
      }
    };
    walk(path.join(root, 'src'));
    expect(files.length).toBeGreaterThan(5);
    const rel = (p: string) => path.relative(root, p).split(path.sep).join('/');
    for (const file of files) {
      const text = readFileSync(file, 'utf8');
      if (rel(file) !== 'src/redis/scripts.ts') {
        expect(text, rel(file)).not.toMatch(/defineCommand\s*\(/);
        // a direct EVAL/EVALSHA (a script and its WAIT in one pipeline) may only send a
        // shipped script: `def` from loadScripts(), its text or its SHA-1
        for (const m of text.matchAll(/\.(eval|evalsha)\s*\(\s*([^,)]*)/gi)) {
          const expected = m[1]?.toLowerCase() === 'eval' ? 'def.lua' : 'def.sha1';
          expect(m[2], `${rel(file)}: ${m[0]}`).toBe(expected);
          expect(text, rel(file)).toMatch(/const def = loadScripts\(\)(\[name\]|\.[a-zA-Z]+);/);
        }
        expect(text, rel(file)).not.toMatch(/\.(evalRo|evalshaRo|fcall|fcallRo|script)\s*\(/i);
        // no EVAL by name through a generic command (a name in a list of ACL probes is fine)
        expect(text, rel(file)).not.toMatch(
          /(call|sendCommand|Command)\s*\(\s*['"`](eval|evalsha|eval_ro|evalsha_ro|fcall|fcall_ro)['"`]/i,
        );
        expect(text, rel(file)).not.toMatch(/['"`]script['"`]\s*,\s*['"`]load['"`]/i);
      }
    }
    const scripts = readFileSync(path.join(root, 'src/redis/scripts.ts'), 'utf8');
    // both defineCommand calls pass the text read from lua/, and nothing else
    const calls = [...scripts.matchAll(/defineCommand\(([^)]*)\)/g)].map((m) => m[1]);
    expect(calls.length).toBeGreaterThan(0);
    for (const c of calls)
      expect(c).toMatch(/^def\.command, \{ lua: def\.lua(, numberOfKeys: def\.numberOfKeys)? \}$/);
    expect(scripts).toMatch(
      /const lua = inline\(readFileSync\(`\$\{luaDir\}\$\{file\}`, 'utf8'\), new Set\(\)\);/,
    );
    // and the Lua itself never evaluates text (loadstring) or calls back into scripting
    for (const f of readdirSync(path.join(root, 'lua'), { recursive: true }) as string[]) {
      if (!f.endsWith('.lua')) continue;
      const lua = readFileSync(path.join(root, 'lua', f), 'utf8');
      expect(lua, f).not.toMatch(
        /loadstring|dofile|setfenv|redis\.call\(\s*['"](EVAL|EVALSHA|SCRIPT|FUNCTION|FCALL)/i,
      );
    }
  });
});
