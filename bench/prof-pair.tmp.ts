import { PairedWorker } from '../src/index.js';
import { RedisServer } from '../src/testing/index.js';
const server = await RedisServer.start();
const N = Number(process.argv[2] ?? 20000);
const mk = (name: string) => new PairedWorker({ redis: server.url, namespace: 'p', name });
const a = mk('a'), b = mk('b');
await Promise.all([a.start(), b.start()]);
async function side(w: PairedWorker, prefix: string) {
  let next = 0;
  const lane = async () => { while (next < N) { const k = next++; await w.run(`${prefix}${k}`, () => k); } };
  await Promise.all(Array.from({ length: 64 }, lane));
}
// warm
await Promise.all([side(a, 'w'), side(b, 'w')].map((p) => p));
const t0 = performance.now(); const c0 = process.cpuUsage();
await Promise.all([side(a, 'x'), side(b, 'x')]);
const ms = performance.now() - t0; const cpu = process.cpuUsage(c0);
console.log(`tasks/s ${(N / ms * 1000).toFixed(0)}  cpu µs/task ${((cpu.user + cpu.system) / N).toFixed(1)}`);
await Promise.all([a.close(), b.close()]); await server.stop();
