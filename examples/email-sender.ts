/**
 * Email sender: two instances of a mail service ("site-a" and "site-b") each take HTTP
 * requests; a dispatcher delivers every request to both. For each email, one instance
 * sends it and the other covers it: if the sender goes away mid-send, the other sends.
 * Every caller gets the same answer (the message id) whoever sent the email.
 *
 *   npx tsx examples/email-sender.ts
 */
import { once } from 'node:events';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PairedWorker } from '../src/index.js';
import { check, exampleRedis, runExample, sleep } from './support.js';

interface Email {
  id: string;
  to: string;
  subject: string;
}

interface Sent {
  site: string;
  id: string;
  token: number;
}

/** The mail relay both sites send through; it records what really went out. */
const outbox: Sent[] = [];

async function mailService(
  site: string,
  redisUrl: string,
  namespace: string,
  slowIds: Set<string>,
) {
  const worker = new PairedWorker({ redis: redisUrl, namespace, name: site, sessionTtlMs: 2_000 });
  const started = new Set<string>();
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c.toString();
    });
    req.on('end', async () => {
      const email = JSON.parse(body) as Email;
      try {
        const outcome = await worker.run(`email:${email.id}`, async ({ signal, token }) => {
          started.add(email.id);
          // talking to the SMTP relay; a slow one for some emails
          await sleep(slowIds.has(email.id) ? 2_000 : 30, signal);
          outbox.push({ site, id: email.id, token });
          return { messageId: `<${email.id}.${token}@mail.example>` };
        });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            site,
            role: outcome.role,
            result: outcome.result,
            sentBy: outcome.worker,
          }),
        );
      } catch (err) {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ site, error: (err as Error).message }));
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  await worker.start();
  const port = (server.address() as AddressInfo).port;
  return {
    site,
    worker,
    port,
    started,
    async stop(handover: boolean) {
      await worker.close({ handover });
      server.close();
    },
  };
}

function post(port: number, email: Email): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/send', method: 'POST' }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        body += c.toString();
      });
      res.on('end', () => resolve(JSON.parse(body) as Record<string, unknown>));
    });
    req.on('error', reject);
    req.end(JSON.stringify(email));
  });
}

runExample(async () => {
  const redis = await exampleRedis('email');
  const slow = new Set(['e6']);
  const a = await mailService('site-a', redis.url, redis.namespace, slow);
  const b = await mailService('site-b', redis.url, redis.namespace, slow);
  try {
    // five emails, each delivered to both sites at once
    for (let i = 1; i <= 5; i++) {
      const email = { id: `e${i}`, to: `user${i}@example.com`, subject: `Hello ${i}` };
      const [ra, rb] = await Promise.all([post(a.port, email), post(b.port, email)]);
      check(
        JSON.stringify(ra.result) === JSON.stringify(rb.result),
        `both sites answer the same for ${email.id}`,
      );
      console.log(
        `${email.id}: site-a ${ra.role}, site-b ${rb.role}; message ${JSON.stringify(ra.result)}`,
      );
    }

    // e6: site-a starts sending, then leaves for maintenance (close with handover);
    // site-b, covering it, sends it at once instead of waiting for a session to expire
    const email = { id: 'e6', to: 'user6@example.com', subject: 'Handover' };
    const fromA = post(a.port, email);
    for (let i = 0; i < 200 && !a.started.has('e6'); i++) await sleep(10);
    const fromB = post(b.port, email);
    await sleep(100);
    await a.stop(true);
    const [ra, rb] = await Promise.all([fromA, fromB]);
    console.log(
      `e6: site-a left mid-send (${String(ra.error ?? ra.role)}), site-b ${rb.role}; message ${JSON.stringify(rb.result)}`,
    );
    check(rb.role === 'took-over', 'site-b took e6 over');

    const ids = outbox.map((s) => s.id).sort();
    check(
      JSON.stringify(ids) === JSON.stringify(['e1', 'e2', 'e3', 'e4', 'e5', 'e6']),
      `every email sent once: ${ids}`,
    );
    const bySite = (s: string) => outbox.filter((x) => x.site === s).length;
    console.log(
      `email: 6 emails, ${outbox.length} sent, each exactly once (site-a sent ${bySite('site-a')}, site-b sent ${bySite('site-b')}; e6 handed over)`,
    );
  } finally {
    await a.stop(false).catch(() => {});
    await b.stop(false);
    await redis.stop();
  }
});
