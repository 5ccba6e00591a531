/**
 * A PairedWorker in a child process (src/demo/worker.ts), driven over IPC: for crash
 * (SIGKILL), pause (SIGSTOP/SIGCONT) and clock-skew tests.
 */
import { type ChildProcess, fork } from 'node:child_process';

export type Msg = { ev: string; [k: string]: unknown };

export class Child {
  readonly messages: Msg[] = [];
  private waiters: (() => void)[] = [];
  id = '';
  constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: Msg) => {
      this.messages.push({ ...m, receivedAt: performance.now() });
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async waitFor(pred: (m: Msg) => boolean, what: string, timeoutMs = 20_000): Promise<Msg> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find(pred);
      if (found) return found;
      const left = deadline - performance.now();
      if (left <= 0)
        throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  run(taskId: string, holdMs: number, ignoreAbort = false): void {
    this.proc.send({ cmd: 'run', taskId, holdMs, ignoreAbort });
  }

  /** Kill it (SIGCONT first, should it be stopped) unless it has exited. */
  reap(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGCONT');
      this.proc.kill('SIGKILL');
    }
  }
}

/**
 * Start a worker process on `url` and wait until it is ready. `url` '': the connection
 * comes from the PAIRLOCK_* variables in `env` (PAIRLOCK_SENTINEL, PAIRLOCK_NODES, …).
 */
export async function spawnWorker(
  url: string,
  ns: string,
  name: string,
  env: Record<string, string> = {},
): Promise<Child> {
  const proc = fork(new URL('../../src/demo/worker.ts', import.meta.url), {
    execArgv: ['--import', 'tsx'],
    env: {
      ...process.env,
      ...(url ? { PAIRLOCK_REDIS_URL: url } : {}),
      PAIRLOCK_NAMESPACE: ns,
      PAIRLOCK_NAME: name,
      PAIRLOCK_SESSION_TTL_MS: '1000',
      ...env,
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const child = new Child(proc);
  child.id = String((await child.waitFor((m) => m.ev === 'ready', `${name} ready`)).id);
  return child;
}
