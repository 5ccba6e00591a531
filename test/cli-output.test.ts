import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { printable } from '../src/cli/format.js';
import { main } from '../src/cli/program.js';
import { lineLogger } from '../src/cli/run-worker.js';
import { verifyPreamble } from '../src/cli/verify.js';
import { formatEvent } from '../src/cli/watch.js';
import { formatReport, type Report } from '../src/verify/report.js';
import { baseEnv, cli, Running, root } from './support/cli-process.js';
import { useRedisPair } from './support/redis-pair.js';

/* Operators, round two: pipes, control characters, packaging, shutdown logs, help. */

const pair = useRedisPair();
const entry = join(root, 'src/cli/main.ts');

/**
 * The CLI with stdout to a pipe that is read late, as `pairlock … | slow-reader` does: the
 * pipe fills (64 KiB) while the command ends. Reading starts 1.5 s after the first byte.
 */
function piped(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
      cwd: root,
      env: baseEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const chunks: Buffer[] = [];
    let stderr = '';
    let reading = false;
    let code: number | null | undefined;
    let ended = false;
    const finish = () => {
      if (ended && code !== undefined)
        resolve({ code, stdout: Buffer.concat(chunks).toString('utf8'), stderr });
    };
    const drain = () => {
      if (!reading) return;
      for (let c = child.stdout.read(); c !== null; c = child.stdout.read()) chunks.push(c);
    };
    child.stdout.once('readable', () =>
      setTimeout(() => {
        reading = true;
        drain();
      }, 1_500),
    );
    child.stdout.on('readable', drain);
    child.stdout.on('end', () => {
      ended = true;
      finish();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`pairlock ${args.join(' ')} timed out\n${stderr}`));
    }, 60_000);
    child.on('error', reject);
    child.on('exit', (c) => {
      clearTimeout(timer);
      code = c;
      finish();
    });
  });
}

// control characters a terminal acts on: C0 (but the newline ending a line), DEL, C1
// biome-ignore lint/suspicious/noControlCharactersInRegex: what the output must not hold
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

describe('output piped to another program arrives whole', () => {
  let ns: string;
  let release: () => void;
  let holding: Promise<unknown>[] = [];
  const big = 'x'.repeat(250_000);
  const HELD = 220;
  const longId = (i: number) => `held-${i}-${'y'.repeat(990)}`;

  beforeAll(async () => {
    ns = pair.namespace('pipe');
    const a = pair.worker(ns, 'alpha');
    await a.run('big', () => ({ blob: big }));
    // 220 held tasks with 1 KB ids: stats --json lists them (over 220 KB)
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let started = 0;
    let allStarted!: () => void;
    const running = new Promise<void>((r) => {
      allStarted = r;
    });
    const h = pair.worker(ns, 'holder');
    holding = Array.from({ length: HELD }, (_, i) =>
      h.run(longId(i), async () => {
        started += 1;
        if (started === HELD) allStarted();
        await gate;
        return i;
      }),
    );
    await running;
  });
  afterAll(async () => {
    release();
    await Promise.allSettled(holding);
  });

  const g = () => ['--redis', pair.url, '--namespace', ns];

  it('inspect --json', async () => {
    const r = await piped([...g(), 'inspect', 'big', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(250_000);
    expect((JSON.parse(r.stdout) as { result: { blob: string } }).result.blob).toBe(big);
  });

  it('inspect (text)', async () => {
    const r = await piped([...g(), 'inspect', 'big']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^kept: .*\n$/m);
    expect(r.stdout).toContain(`result:      {"blob":"${big}"}`);
  });

  it('list --json', async () => {
    const r = await piped([...g(), 'list', '--json', '--limit', '1000']);
    expect(r.code, r.stderr).toBe(0);
    const recs = JSON.parse(r.stdout) as { taskId: string }[];
    expect(recs).toHaveLength(HELD + 1);
  });

  it('stats --json', async () => {
    const r = await piped([...g(), 'stats', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(200_000);
    const s = JSON.parse(r.stdout) as { workers: { holds: string[] }[] };
    expect(s.workers.flatMap((w) => w.holds)).toHaveLength(HELD);
  });
});

describe('control characters in task ids are escaped in human-readable output', () => {
  const evil = 'evil\u001b[31m\nsecond line\u007f\u009b2J\u0007';
  const shown = 'evil\\x1b[31m\\nsecond line\\x7f\\x9b2J\\x07';
  let ns: string;
  let release: () => void;
  let holding: Promise<unknown> | undefined;

  beforeAll(async () => {
    ns = pair.namespace('ctl');
    await pair.worker(ns, 'alpha').run(evil, () => ({ ok: true }));
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let started!: () => void;
    const running = new Promise<void>((r) => {
      started = r;
    });
    holding = pair.worker(ns, 'holder').run(`${evil}-held`, async () => {
      started();
      await gate;
    });
    await running;
  });
  afterAll(async () => {
    release();
    await holding;
  });

  const g = () => ['--redis', pair.url, '--namespace', ns];

  it('printable() escapes C0, DEL and C1', () => {
    expect(printable(evil)).toBe(shown);
    expect(printable('plain é 🙂')).toBe('plain é 🙂');
  });

  it('list, inspect, stats: escaped; --json: exact', async () => {
    const list = await cli([...g(), 'list']);
    expect(list.code).toBe(0);
    expect(list.stdout).not.toMatch(RAW_CONTROL);
    expect(list.stdout).toContain(shown);
    expect(list.stdout.trim().split('\n')).toHaveLength(4); // header, 2 rows, count

    const inspect = await cli([...g(), 'inspect', evil]);
    expect(inspect.code).toBe(0);
    expect(inspect.stdout).not.toMatch(RAW_CONTROL);
    expect(inspect.stdout).toContain(`task:        ${shown}\n`);

    const stats = await cli([...g(), 'stats']);
    expect(stats.code).toBe(0);
    expect(stats.stdout).not.toMatch(RAW_CONTROL);
    expect(stats.stdout).toContain(`${shown}-held`);

    const json = await cli([...g(), 'list', '--json']);
    const ids = (JSON.parse(json.stdout) as { taskId: string }[]).map((r) => r.taskId).sort();
    expect(ids).toEqual([evil, `${evil}-held`]);
  });

  it('an error that echoes the task id is escaped', async () => {
    const res = await cli([...g(), 'inspect', `${evil}-unknown`]);
    expect(res.code).toBe(3);
    expect(res.stderr).toContain(`${shown}-unknown`);
    expect(res.stderr).not.toMatch(RAW_CONTROL);
  });

  it('watch lines, run logs and the verify report are escaped', () => {
    const line = formatEvent({
      time: '2026-01-01T00:00:00.000Z',
      event: 'took-over',
      task: evil,
      hash: evil,
      state: 'running',
      token: 2,
      attempt: 1,
      worker: `w\u009b1`,
      session: 's',
      kind: 'session-expired',
      from: `old\u001b`,
    });
    expect(line).not.toMatch(RAW_CONTROL);
    expect(line).toContain(shown);

    const logged: string[] = [];
    lineLogger({ out: () => {}, err: (l) => logged.push(l) }).warn(
      { taskId: evil },
      `pairlock: about ${evil}`,
    );
    expect(logged.join('\n')).not.toMatch(RAW_CONTROL);

    const report = formatReport({
      ...emptyReport(),
      ok: false,
      lost: [`${JSON.stringify(evil)} was never settled`],
      problems: [`note about ${evil}`],
    });
    expect(report).not.toMatch(RAW_CONTROL);
  });
});

function emptyReport(): Report {
  return {
    ok: true,
    seed: 1,
    topology: 'one Redis at 127.0.0.1:1',
    command: 'pairlock verify --seed 1',
    planned: 10,
    released: 10,
    durationSec: 12,
    endReason: 'every task released',
    faults: { kill: 2 },
    faultsSkipped: {},
    outcomes: { done: 10, failed: 0 },
    grants: { fresh: 10 },
    executions: 10,
    sinkWrites: { accepted: 10, rejected: 0 },
    staleSettlesRejected: 0,
    leaseLost: {},
    connectionLosses: { attributed: {}, unattributed: [] },
    doubts: 0,
    runErrors: { retried: 0, final: 0 },
    lost: [],
    fencedDoubleCommits: [],
    finalEffectMismatch: [],
    keptResults: 0,
    staleSettlesAccepted: [],
    disagreements: [],
    duplicates: [],
    sameTokenReexecutions: [],
    reexecutions: [],
    runCalls: { count: 10, longestMs: 100, boundMs: 60_000, noticeMs: 20_000, aborted: 0 },
    hungRunCalls: [],
    recommits: 0,
    unexpectedExits: 0,
    takeover: {},
    problems: [],
  };
}

describe('the verify report', () => {
  it('says up front how long, where, and whose handlers', () => {
    const text = verifyPreamble({
      seconds: 50,
      drainMs: 70_000,
      namespace: 'pairlock-verify-0a1b2c3d',
      keyPrefix: 'pairlock',
      where: 'Redis at 127.0.0.1:6379',
    }).join('\n');
    expect(text).toMatch(/takes about 57 s: 52 s of tasks and faults .* 122 s at most/);
    expect(text).toContain('namespace pairlock-verify-0a1b2c3d');
    expect(text).toContain('handler ignored its abort signal');
  });

  it('one takeover row per fault with both pairs, named causes, and the disobedient handlers explained', () => {
    const lat = (n: number, p50: number) => ({ n, p50, p99: p50 * 2, max: p50 * 3 });
    const text = formatReport({
      ...emptyReport(),
      takeover: {
        all: lat(12, 400),
        'connection-lost': lat(3, 300),
        cut: lat(10, 235),
        'cut, session TTL 1 s': lat(4, 200),
        'cut, session TTL 10 s': lat(6, 250),
        'deadline overrun': lat(2, 900),
        'deadline overrun, session TTL 1 s': lat(2, 900),
      },
      duplicates: [
        {
          task: 'task-1',
          olderToken: 1,
          newerToken: 2,
          olderInstance: 'w0.1',
          newerInstance: 'w1.1',
          overlapMs: 40,
          cause: 'handler ignored its abort signal',
          allowed: true,
        },
      ],
    });
    const rows = text.split('\n').filter((l) => l.startsWith('| takeover'));
    expect(rows).toHaveLength(4);
    expect(text).not.toMatch(/session TTL 10 s \(ms/);
    expect(rows.find((r) => r.includes('after cut'))).toMatch(
      /p50 235, p99 470, max 705 \(n=10\); session TTL 1 s: p50 200.*\(n=4\); session TTL 10 s: p50 250.*\(n=6\)/,
    );
    expect(text).toMatch(/after a planned deadline overrun, no injected fault/);
    expect(text).toMatch(/any cause/);
    expect(text).not.toMatch(/after all\b/);
    expect(text).toMatch(/"handler ignored its abort signal": the run's own test handlers/);
  });
});

describe('a planned shutdown of `pairlock run` logs the handover at info', () => {
  let dir: string;
  beforeAll(() => {
    mkdirSync(join(root, '.tmp'), { recursive: true });
    dir = mkdtempSync(join(root, '.tmp', 'quiet-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('SIGTERM with held tasks: no "lease lost" warnings, info lines for the handover', async () => {
    const ns = pair.namespace('quiet');
    const mod = join(dir, 'holding.mjs');
    writeFileSync(
      mod,
      `export default {
        worker: { sessionTtlMs: 2000 },
        async *tasks({ signal }) {
          for (let i = 0; i < 6; i++) yield 'hold-' + i;
          await new Promise((r) => signal.addEventListener('abort', r));
        },
        handler: (task, ctx) => new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve('stopped'))),
      };\n`,
    );
    const run = Running.start(['--redis', pair.url, '--namespace', ns, 'run', mod, '--name', 'q']);
    const probe = pair.worker(ns, 'probe');
    try {
      await run.waitFor(
        () => run.out.filter((l) => / started \(namespace /.test(l)).length === 2,
        'both workers to start',
      );
      const until = Date.now() + 30_000;
      for (;;) {
        const infos = await Promise.all(
          Array.from({ length: 6 }, (_, i) => probe.inspect(`hold-${i}`)),
        );
        if (infos.every((x) => x?.state === 'running')) break;
        if (Date.now() > until) throw new Error('the tasks did not start');
        await new Promise((r) => setTimeout(r, 200));
      }
      run.child.kill('SIGTERM');
      expect(await run.exited).toBe(0);
      const all = run.err.join('\n');
      expect(
        run.err.filter((l) => /\bwarn: .*lease lost/.test(l)),
        all,
      ).toEqual([]);
      expect(run.err.filter((l) => /\binfo: .*hands the task over/.test(l)).length, all).toBe(6);
    } finally {
      run.child.kill('SIGKILL');
    }
  });
});

describe('help', () => {
  const commands = [
    'inspect',
    'list',
    'stats',
    'watch',
    'dashboard',
    'demo',
    'bench',
    'run',
    'verify',
  ];

  async function help(args: string[]): Promise<string> {
    const lines: string[] = [];
    const io = { out: (l: string) => lines.push(l), err: (l: string) => lines.push(l) };
    expect(await main(['node', 'pairlock', ...args], io)).toBe(0);
    return lines.join('\n');
  }

  it.each(commands)(
    'pairlock %s --help: short, with an example, no global options',
    async (cmd) => {
      const text = await help([cmd, '--help']);
      expect(text).toContain('Example');
      expect(text).not.toContain('Global Options');
      expect(text).not.toContain('--sentinel <');
      expect(text).toContain('pairlock --help');
      expect(text.split('\n').length).toBeLessThan(45);
    },
  );

  it('pairlock --help keeps the global options and points to the shipped docs', async () => {
    const text = await help(['--help']);
    expect(text).toContain('--sentinel');
    expect(text).toContain('docs/cli.md');
  });
});

describe('packaging', () => {
  it('npm pack ships LICENSE and docs/cli.md', () => {
    const res = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(res.status, res.stderr).toBe(0);
    const [pack] = JSON.parse(res.stdout) as { files: { path: string }[]; size: number }[];
    const paths = pack?.files.map((f) => f.path) ?? [];
    expect(paths).toContain('LICENSE');
    expect(paths).toContain('docs/cli.md');
    expect(paths.filter((p) => p.endsWith('.png'))).toEqual([]);
  });
});
