import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

function runExample(
  file: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    // each example starts its own redis-server
    delete env.REDIS_URL;
    const child = spawn(process.execPath, ['--import', 'tsx', `examples/${file}`], {
      cwd: root,
      env,
    });
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
      reject(new Error(`examples/${file} did not finish\n${stdout}\n${stderr}`));
    }, 90_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const examples: [file: string, keyLine: RegExp][] = [
  ['email-sender.ts', /^email: 6 emails, 6 sent, each exactly once/m],
  ['push-notifications.ts', /^push: 15 notifications, 15 deliveries, each exactly once$/m],
  ['ha-cron.ts', /^cron: \d+ ticks, each ran exactly once/m],
  ['stream-pipeline.ts', /^stream pipeline: 5 orders, 15 tasks, each ran exactly once/m],
  [
    'critical-section.ts',
    /^critical section: 10 invoices, 10 charges, every caller got the same receipt$/m,
  ],
  ['quorum.ts', /^quorum: 60 tasks on 3 Redis nodes, one killed mid-run, each ran exactly once$/m],
];

describe('examples', () => {
  for (const [file, keyLine] of examples) {
    it(`${file} checks its own result and exits 0`, { timeout: 120_000 }, async () => {
      const res = await runExample(file);
      expect(res.stderr).not.toMatch(/check failed/);
      expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
      expect(res.stdout).toMatch(keyLine);
    });
  }
});
