import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClosedError, PairedWorker } from '../src/index.js';
import { RedisServer } from '../src/testing/index.js';
import {
  EventLoopMonitor,
  handleSignals,
  type LagEvent,
  monitorEventLoop,
} from '../src/worker/runtime.js';

const root = fileURLToPath(new URL('..', import.meta.url));
let server: RedisServer;
let dir: string;

beforeAll(async () => {
  server = await RedisServer.start();
  mkdirSync(join(root, '.tmp'), { recursive: true });
  dir = mkdtempSync(join(root, '.tmp', 'runtime-'));
});

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await server?.stop();
});

function busy(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // block the event loop
  }
}

describe('handleSignals', () => {
  it('on SIGTERM, a process closes its worker with handover: the peer takes over at once, exit 0', async () => {
    const ns = 'sig1';
    const script = join(dir, 'holder.ts');
    const src = join(root, 'src');
    writeFileSync(
      script,
      `import { PairedWorker } from ${JSON.stringify(join(src, 'index.js'))};
      import { handleSignals } from ${JSON.stringify(join(src, 'worker', 'runtime.js'))};
      const worker = new PairedWorker({ redis: process.env.URL, namespace: '${ns}', name: 'holder', sessionTtlMs: 60000 });
      handleSignals(worker);
      void worker.run('long-task', ({ signal }) => {
        console.log('running');
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
      }).catch(() => {});
      `,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: root,
      env: { ...process.env, URL: server.url },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout }).on('line', (l) => {
        if (l === 'running') resolve();
      });
      child.on('exit', () => reject(new Error('the holder exited early')));
    });
    const peer = new PairedWorker({
      redis: server.url,
      namespace: ns,
      name: 'peer',
      sessionTtlMs: 60_000,
    });
    try {
      let standby = false;
      peer.on('standby', () => {
        standby = true;
      });
      const outcome = peer.run('long-task', () => 'finished by the peer');
      for (let i = 0; i < 600 && !standby; i++) await new Promise((r) => setTimeout(r, 50));
      expect(standby).toBe(true);
      child.kill('SIGTERM');
      // the session TTL is a minute: only the handover explains a takeover within the test
      const o = await outcome;
      expect(o).toMatchObject({ role: 'took-over', result: 'finished by the peer', token: 2 });
      expect(await peer.inspect('long-task')).toMatchObject({ state: 'done', attempt: 2 });
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
      await peer.close();
    }
  });

  it('closes every worker, runs beforeClose first, and resolves `closed` (exit: false)', async () => {
    const a = new PairedWorker({ redis: server.url, namespace: 'sig2', name: 'a' });
    const b = new PairedWorker({ redis: server.url, namespace: 'sig2', name: 'b' });
    await Promise.all([a.start(), b.start()]);
    const order: string[] = [];
    const before = process.listenerCount('SIGUSR2');
    const h = handleSignals([a, b], {
      signals: ['SIGUSR2'],
      exit: false,
      beforeClose: (signal) => {
        order.push(`before:${signal}`);
      },
    });
    expect(process.listenerCount('SIGUSR2')).toBe(before + 1);
    process.kill(process.pid, 'SIGUSR2');
    expect(await h.closed).toBe('SIGUSR2');
    expect(order).toEqual(['before:SIGUSR2']);
    await expect(a.run('x', () => 1)).rejects.toBeInstanceOf(ClosedError);
    await expect(b.run('x', () => 1)).rejects.toBeInstanceOf(ClosedError);
    h.dispose();
    expect(process.listenerCount('SIGUSR2')).toBe(before);
  });
});

describe('monitorEventLoop', () => {
  it('notices a blocked event loop: emits lag, counts it and warns', async () => {
    const warnings: { obj: object; msg?: string }[] = [];
    const logger = {
      debug() {},
      info() {},
      warn(obj: object, msg?: string) {
        warnings.push({ obj, msg });
      },
      error() {},
    };
    const monitor = monitorEventLoop({ thresholdMs: 100, intervalMs: 20, logger });
    const lags: LagEvent[] = [];
    monitor.on('lag', (e) => lags.push(e));
    try {
      expect(monitor.running).toBe(true);
      await new Promise((r) => setTimeout(r, 60));
      busy(400);
      for (let i = 0; i < 100 && lags.length === 0; i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(lags.length).toBeGreaterThanOrEqual(1);
      expect(lags[0]?.lagMs).toBeGreaterThanOrEqual(100);
      expect(monitor.lagCount).toBe(lags.length);
      expect(monitor.maxLagMs).toBeGreaterThanOrEqual(100);
      expect(warnings[0]?.obj).toMatchObject({ thresholdMs: 100 });
      expect(warnings[0]?.msg).toContain('event loop was blocked');
    } finally {
      monitor.stop();
    }
    expect(monitor.running).toBe(false);
  });

  it('validates its options', () => {
    expect(() => new EventLoopMonitor({ thresholdMs: 0 })).toThrow(/thresholdMs/);
    expect(() => new EventLoopMonitor({ intervalMs: 1.5 })).toThrow(/intervalMs/);
  });
});
