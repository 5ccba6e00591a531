/**
 * A critical section: two instances of a billing service may both be asked to charge the
 * same invoice (a client retrying against the other instance, a message delivered
 * twice). `wrap` turns the charge into a paired, exactly-once-per-invoice call: one
 * instance charges, every caller gets the same receipt, and the ledger write carries the
 * grant's fencing token so that a stale holder could never overwrite a newer one.
 *
 *   npx tsx examples/critical-section.ts
 */
import { Redis } from 'ioredis';
import { wrap } from '../src/feeds/index.js';
import { fencedRead, fencedWrite, type HandlerContext, PairedWorker } from '../src/index.js';
import { check, exampleRedis, runExample, sleep } from './support.js';

runExample(async () => {
  const redis = await exampleRedis('billing');
  const client = new Redis(redis.url);
  let charges = 0;

  const instance = (name: string) => {
    const worker = new PairedWorker({
      redis: redis.url,
      namespace: redis.namespace,
      name,
      sessionTtlMs: 2_000,
    });
    const charge = wrap(
      worker,
      async (invoice: string, cents: number, { token, signal }: HandlerContext) => {
        await sleep(20, signal); // the payment provider
        charges += 1;
        const receipt = { invoice, cents, receipt: `rcpt-${invoice}`, chargedBy: name };
        // the ledger accepts a write only with a token above every one it has seen
        const w = await fencedWrite(
          client,
          `${redis.namespace}:ledger:${invoice}`,
          token,
          JSON.stringify(receipt),
        );
        check(w.ok, `ledger write for ${invoice}`);
        return receipt;
      },
      { key: (invoice) => `charge:${invoice}` },
    );
    return { name, worker, charge };
  };
  const a = instance('billing-a');
  const b = instance('billing-b');
  try {
    const invoices = Array.from({ length: 10 }, (_, i) => `inv-${i + 1}`);
    // every invoice requested on both instances at once, and some twice on one
    const calls = invoices.flatMap((inv, i) => [
      a.charge(inv, 1_000 + i),
      b.charge(inv, 1_000 + i),
      ...(i % 3 === 0 ? [a.charge(inv, 1_000 + i)] : []),
    ]);
    const receipts = await Promise.all(calls);
    // a late retry, after the outcome: answered from the record, not charged again
    const retry = await b.charge('inv-1', 1_000);

    check(charges === invoices.length, `one charge per invoice (got ${charges})`);
    for (const inv of invoices) {
      const mine = receipts.filter((r) => r.invoice === inv);
      check(
        new Set(mine.map((r) => JSON.stringify(r))).size === 1,
        `every caller got the same receipt for ${inv}`,
      );
      const ledger = await fencedRead(client, `${redis.namespace}:ledger:${inv}`);
      check(ledger?.token === 1 && JSON.parse(ledger.value).invoice === inv, `ledger of ${inv}`);
    }
    check(
      JSON.stringify(retry) === JSON.stringify(receipts[0]),
      'the late retry got the stored receipt',
    );
    const by = (n: string) =>
      new Set(receipts.filter((r) => r.chargedBy === n).map((r) => r.invoice)).size;
    console.log(
      `${calls.length} calls on two instances; invoices charged by billing-a: ${by('billing-a')}, by billing-b: ${by('billing-b')}`,
    );
    console.log(
      `critical section: ${invoices.length} invoices, ${charges} charges, every caller got the same receipt`,
    );
  } finally {
    await Promise.allSettled([a.worker.close(), b.worker.close()]);
    client.disconnect();
    await redis.stop();
  }
});
