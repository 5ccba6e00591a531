/**
 * Child processes for the sides of a pair (`node --import tsx bench/side.ts`), talking
 * over the IPC channel: the parent sends { type, ... } messages; a child answers with
 * { type, ... } messages of its own.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const sideScript = fileURLToPath(new URL('../side.ts', import.meta.url));

export type Message = { type: string } & Record<string, unknown>;

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export class Side {
  private readonly child: ChildProcess;
  private readonly inbox: Message[] = [];
  private readonly waiters: {
    type: string;
    resolve: (m: Message) => void;
    reject: (e: Error) => void;
  }[] = [];
  private exitError: Error | undefined;
  readonly exited: Promise<void>;
  readonly listeners = new Map<string, (m: Message) => void>();

  constructor(
    readonly label: string,
    role: string,
    init: Record<string, unknown>,
  ) {
    this.child = fork(sideScript, [], {
      cwd: root,
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    });
    live.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        live.delete(this.child);
        this.exitError = new Error(`side ${label} exited (code ${code}, signal ${signal})`);
        for (const w of this.waiters.splice(0)) w.reject(this.exitError);
        resolve();
      });
    });
    this.child.on('message', (m: Message) => {
      const listener = this.listeners.get(m.type);
      if (listener) {
        listener(m);
        return;
      }
      if (m.type === 'error') {
        const err = new Error(`side ${label}: ${String(m.message)}`);
        for (const w of this.waiters.splice(0)) w.reject(err);
        return;
      }
      const i = this.waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) this.waiters.splice(i, 1)[0]?.resolve(m);
      else this.inbox.push(m);
    });
    this.send({ type: 'init', role, ...init });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  send(m: Message): void {
    if (this.child.connected) this.child.send(m);
  }

  /** The next message of `type` (or one that already arrived), within `timeoutMs`. */
  next(type: string, timeoutMs = 60_000): Promise<Message> {
    const i = this.inbox.findIndex((m) => m.type === type);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0] as Message);
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const j = this.waiters.indexOf(w);
        if (j >= 0) this.waiters.splice(j, 1);
        reject(new Error(`side ${this.label}: no '${type}' within ${timeoutMs} ms`));
      }, timeoutMs);
      const w = {
        type,
        resolve: (m: Message) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.push(w);
    });
  }

  request(m: Message, reply: string, timeoutMs?: number): Promise<Message> {
    const p = this.next(reply, timeoutMs);
    this.send(m);
    return p;
  }

  /** SIGKILL, at once (a crash). */
  kill(): void {
    this.child.kill('SIGKILL');
  }

  /** Ask the side to stop; SIGKILL after `graceMs`. */
  async stop(graceMs = 3_000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.send({ type: 'exit' });
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}
