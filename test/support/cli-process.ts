import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CONNECTION_ENV } from '../../src/cli/connection.js';

/** The `pairlock` CLI run from its sources in a child process, as users run it. */

export const root = fileURLToPath(new URL('../..', import.meta.url));
const entry = join(root, 'src/cli/main.ts');

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment without any connection variable: each test names its Redis. */
export function baseEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of CONNECTION_ENV) delete env[name];
  return env;
}

export function cli(
  args: string[],
  timeoutMs = 60_000,
  env: NodeJS.ProcessEnv = baseEnv(),
): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], { cwd: root, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`pairlock ${args.join(' ')} timed out\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A long-running CLI process whose output lines can be awaited. */
export class Running {
  readonly out: string[] = [];
  readonly err: string[] = [];
  private waiters: (() => void)[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    const collect = (stream: NodeJS.ReadableStream | null, into: string[]) => {
      if (!stream) return;
      createInterface({ input: stream }).on('line', (l) => {
        into.push(l);
        for (const w of this.waiters.splice(0)) w();
      });
    };
    collect(child.stdout, this.out);
    collect(child.stderr, this.err);
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  static start(args: string[], env: NodeJS.ProcessEnv = baseEnv()): Running {
    return new Running(
      spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
        cwd: root,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
  }

  async waitFor(pred: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > until) {
        throw new Error(
          `timed out waiting for ${what}\nstdout:\n${this.out.join('\n')}\nstderr:\n${this.err.join('\n')}`,
        );
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 500);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}
