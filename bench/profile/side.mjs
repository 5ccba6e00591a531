/**
 * One side of the profiled pair (bench/profile/run.ts): a PairedWorker of the built
 * package (dist/, as users run it: no TypeScript loader in the profile) on its own
 * process, `n` tasks with a trivial handler, `concurrency` in flight, after a warm-up on
 * tasks of its own; both sides start at the same wall-clock time. Prints one JSON line,
 * with the measured window in the profile's clock (CLOCK_MONOTONIC, µs).
 * Arguments: url name n concurrency startAtMs prefix
 */
import { PairedWorker } from '../../dist/index.js';

const [url = '', name = 'A', nArg = '20000', cArg = '64', startArg = '0', prefix = 'p'] =
  process.argv.slice(2);
const n = Number(nArg);
const concurrency = Number(cArg);
const startAt = Number(startArg);
const monoUs = () => Number(process.hrtime.bigint() / 1000n);
const worker = new PairedWorker({ redis: url, namespace: 'profile', name });
await worker.start();

async function pool(count, base) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const k = next++;
        await worker.run(`${base}${k}`, () => k);
      }
    }),
  );
}
const sleepUntil = (t) => new Promise((r) => setTimeout(r, Math.max(0, t - Date.now())));

await sleepUntil(startAt);
await pool(2_000, `${prefix}w`); // warm-up: JIT, connections
await sleepUntil(startAt + 1_500);
const t0 = Date.now();
const from = monoUs();
const cpu0 = process.cpuUsage();
await pool(n, `${prefix}t`);
const cpu = process.cpuUsage(cpu0);
const to = monoUs();
const ms = Date.now() - t0;
process.stdout.write(
  `${JSON.stringify({ name, ms, userUs: cpu.user / n, systemUs: cpu.system / n, from, to })}\n`,
);
await worker.close();
process.exit(0);
