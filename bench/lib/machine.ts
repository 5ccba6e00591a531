/** What the numbers were measured on. */
import os from 'node:os';

export interface Machine {
  cpu: string;
  cores: number;
  memory: string;
  os: string;
  node: string;
  redis: string;
  bullmq: string;
  redlock: string;
  /** 1-minute load average when the run started (other work on the machine shows here). */
  loadAtStart: number;
  /** The same when the run ended. */
  loadAtEnd?: number;
}

export async function describeMachine(redisVersion: string): Promise<Machine> {
  const cpus = os.cpus();
  const version = async (pkg: string) => {
    try {
      const { createRequire } = await import('node:module');
      const { readFileSync } = await import('node:fs');
      const path = await import('node:path');
      // some packages do not export their package.json: walk up from their entry point
      let dir = path.dirname(createRequire(import.meta.url).resolve(pkg));
      for (let i = 0; i < 6; i++) {
        try {
          const meta = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
            name?: string;
            version?: string;
          };
          if (meta.name === pkg && meta.version) return meta.version.replace(/^v/, '');
        } catch {
          // not here: one level up
        }
        dir = path.dirname(dir);
      }
    } catch {
      // not installed
    }
    return 'unknown';
  };
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memory: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    redis: redisVersion,
    bullmq: await version('bullmq'),
    redlock: await version('redlock'),
    loadAtStart: Number(os.loadavg()[0]?.toFixed(2)),
  };
}
