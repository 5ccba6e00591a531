/**
 * One side of the profiled pair (bench/profile/run.ts): a PairedWorker of the built
 * package (dist/, as users run it: no TypeScript loader in the profile) on its own
 * process, `n` tasks with a trivial handler (or one that waits `handlerMs` on a timer),
 * `concurrency` in flight, after a warm-up on tasks of its own; both sides start at the
 * same wall-clock time. Prints one JSON line, with the measured window in the profile's
 * clock (CLOCK_MONOTONIC, µs) and where a lane's time went (ms, means).
 * Arguments: url name n concurrency startAtMs prefix [handlerMs]
 */
import { performance } from 'node:perf_hooks';
import { PairedWorker } from '../../dist/index.js';

const [
  url = '',
  name = 'A',
  nArg = '20000',
  cArg = '64',
  startArg = '0',
  prefix = 'p',
  hArg = '0',
] = process.argv.slice(2);
const n = Number(nArg);
const concurrency = Number(cArg);
const startAt = Number(startArg);
const handlerMs = Number(hArg);
const monoUs = () => Number(process.hrtime.bigint() / 1000n);
const now = () => performance.now();
const worker = new PairedWorker({ redis: url, namespace: 'profile', name });
await worker.start();

// per task of the measured run: run() called, handler started and returned (NaN when
// the peer ran it), run() resolved
const runAt = new Float64Array(n);
const startedAt = new Float64Array(n).fill(Number.NaN);
const returnedAt = new Float64Array(n).fill(Number.NaN);
const doneAt = new Float64Array(n);
let record = false;

const handlerOf = (k) => () => {
  if (record) startedAt[k] = now();
  if (handlerMs === 0) {
    if (record) returnedAt[k] = now();
    return k;
  }
  return new Promise((resolve) =>
    setTimeout(() => {
      if (record) returnedAt[k] = now();
      resolve(k);
    }, handlerMs),
  );
};

async function pool(count, base) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const k = next++;
        if (record) runAt[k] = now();
        await worker.run(`${base}${k}`, handlerOf(k));
        if (record) doneAt[k] = now();
      }
    }),
  );
}
const sleepUntil = (t) => new Promise((r) => setTimeout(r, Math.max(0, t - Date.now())));

await sleepUntil(startAt);
const WARM_UP = 2_000;
await pool(WARM_UP, `${prefix}w`); // warm-up: JIT, connections
// both sides start the measured run together: after the longest warm-up to expect (the
// handler's time per wave of lanes, twice over)
await sleepUntil(startAt + 1_500 + 2 * Math.ceil(WARM_UP / concurrency) * handlerMs);
record = true;
const t0 = Date.now();
const from = monoUs();
const cpu0 = process.cpuUsage();
const elu0 = performance.eventLoopUtilization();
await pool(n, `${prefix}t`);
const elu = performance.eventLoopUtilization(elu0).utilization;
const cpu = process.cpuUsage(cpu0);
const to = monoUs();
const ms = Date.now() - t0;
let won = 0;
let toStart = 0;
let inHandler = 0;
let toDone = 0;
let lostWait = 0;
for (let k = 0; k < n; k++) {
  if (Number.isNaN(startedAt[k])) {
    lostWait += doneAt[k] - runAt[k];
    continue;
  }
  won += 1;
  toStart += startedAt[k] - runAt[k];
  inHandler += returnedAt[k] - startedAt[k];
  toDone += doneAt[k] - returnedAt[k];
}
const lane = {
  won,
  toStartMs: won ? toStart / won : 0,
  handlerMs: won ? inHandler / won : 0,
  toDoneMs: won ? toDone / won : 0,
  lostWaitMs: n > won ? lostWait / (n - won) : 0,
  elu,
};
process.stdout.write(
  `${JSON.stringify({ name, ms, userUs: cpu.user / n, systemUs: cpu.system / n, from, to, lane })}\n`,
);
await worker.close();
process.exit(0);
