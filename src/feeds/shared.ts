import { silentLogger } from '../events.js';
import type { Logger } from '../options.js';
import type { PairedWorker } from '../worker.js';

/** The logger the worker was given (feeds log through the same one by default). */
export function loggerOf(worker: PairedWorker): Logger {
  const logger = (worker as unknown as { logger?: Logger }).logger;
  return logger ?? silentLogger;
}

/** A sleep that a stop() can cut short. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
