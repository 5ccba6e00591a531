/**
 * One worker in its own process, driven over IPC: the demo's two sites, and the
 * multi-process tests, fork this file.
 *
 *   env: PAIRLOCK_REDIS_URL (or, without it, the CLI's connection variables: REDIS_URL,
 *        PAIRLOCK_SENTINEL, PAIRLOCK_CLUSTER, PAIRLOCK_NODES, …), PAIRLOCK_NAMESPACE,
 *        PAIRLOCK_NAME, PAIRLOCK_SESSION_TTL_MS,
 *        PAIRLOCK_CLOCK_SKEW_MS (shift this process's wall clock: pairlock must not care)
 *   parent → child: { cmd: 'run', taskId, holdMs, ignoreAbort? } | { cmd: 'close', handover? }
 *   child → parent: { ev: 'ready', id }, every worker event as { ev, ...payload },
 *     { ev: 'started', taskId, token }, { ev: 'aborted', taskId, reason },
 *     { ev: 'outcome', outcome }, { ev: 'run-error', taskId, message }, { ev: 'closed' }
 */
const skew = Number(process.env.PAIRLOCK_CLOCK_SKEW_MS ?? 0);
if (skew !== 0) {
  const realNow = Date.now;
  Date.now = () => realNow() + skew;
}

// imported after the clock is shifted, so the library sees the skewed clock too
const { PairedWorker } = await import('../index.js');
const { connectionInputFromEnv, parseConnection, workerConnection } = await import(
  '../cli/connection.js'
);

const send = (msg: unknown) => process.send?.(msg);
const url = process.env.PAIRLOCK_REDIS_URL;
const worker = new PairedWorker({
  ...(url === undefined
    ? workerConnection(parseConnection(connectionInputFromEnv())).options
    : { redis: url }),
  namespace: process.env.PAIRLOCK_NAMESPACE ?? 'demo',
  name: process.env.PAIRLOCK_NAME ?? 'worker',
  // PAIRLOCK_DEFAULTS=1: the library's own timings (session TTL, safety-net intervals)
  ...(process.env.PAIRLOCK_DEFAULTS === '1'
    ? {}
    : {
        sessionTtlMs: Number(process.env.PAIRLOCK_SESSION_TTL_MS ?? 1_000),
        firstAttemptIntervalMs: 500,
        otherAttemptIntervalMs: 1_000,
      }),
  connectionBound: process.env.PAIRLOCK_CONNECTION_BOUND !== '0',
});
const events = [
  'claimed',
  'took-over',
  'standby',
  'settled',
  'lease-lost',
  'peer-failed',
  'renew-failed',
] as const;
for (const ev of events) {
  worker.on(ev, (payload) => send({ ev, ...payload, error: undefined }));
}
await worker.start();
send({ ev: 'ready', id: worker.id });

interface Command {
  cmd: 'run' | 'close';
  taskId: string;
  holdMs: number;
  ignoreAbort?: boolean;
  handover?: boolean;
}

process.on('message', (msg: Command) => {
  if (msg.cmd === 'close') {
    void worker.close({ handover: msg.handover ?? false }).then(() => {
      send({ ev: 'closed' });
      process.exit(0);
    });
    return;
  }
  const { taskId, holdMs, ignoreAbort } = msg;
  worker
    .run(taskId, async ({ token, signal }) => {
      send({ ev: 'started', taskId, token });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, holdMs);
        signal.addEventListener('abort', () => {
          send({ ev: 'aborted', taskId, reason: (signal.reason as { reason?: string }).reason });
          if (ignoreAbort) return; // a handler that keeps going: its late settle must be refused
          clearTimeout(timer);
          reject(signal.reason);
        });
      });
      return { by: worker.id, token };
    })
    .then(
      (outcome) => send({ ev: 'outcome', outcome }),
      (err: Error) => send({ ev: 'run-error', taskId, message: err.message }),
    );
});
