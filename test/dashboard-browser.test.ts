/**
 * The dashboard page in a real browser: headless Chromium (Debian's `chromium` package,
 * or CHROMIUM_PATH) driven by playwright-core, which downloads no browser of its own.
 * Two worker processes share a task; the holder is killed with SIGKILL; the page must
 * show the takeover and the new holder within 2 s of it.
 *
 * Then the drill-downs (a counter lists its tasks; a task id prefix searches them), an
 * unknown task looked up (no console error), the dashboard restarted (its timeline shows
 * what came before, from the task history; a task looked up lists its attempts), and the
 * page 400 px wide: no table overflows its panel.
 *
 * PAIRLOCK_DASHBOARD_SCREENSHOT=docs/dashboard.png also runs a stream of tasks through the
 * pair for half a minute first (so the charts have something to show) and saves a
 * screenshot of the page after the takeover, and one 400 px wide beside it
 * (docs/dashboard-narrow.png): `npm run screenshot:dashboard`.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisServer } from '../src/testing/index.js';
import { type Dashboard, startDashboard } from './support/dashboard.js';

const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'];
const chromiumPath = candidates.find((p): p is string => !!p && existsSync(p));
if (!chromiumPath) {
  console.warn(
    `dashboard browser test skipped: no Chromium found (looked at ${candidates.filter(Boolean).join(', ')}). ` +
      "Install Debian's chromium package (apt-get install chromium; .ci/run does) or set CHROMIUM_PATH.",
  );
}
const screenshot = process.env.PAIRLOCK_DASHBOARD_SCREENSHOT;

type Msg = { ev: string; [k: string]: unknown };

/** A worker process of src/demo/worker.ts, driven over IPC. */
class WorkerProcess {
  readonly messages: Msg[] = [];
  private waiters: (() => void)[] = [];
  id = '';

  constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: Msg) => {
      this.messages.push(m);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async waitFor(pred: (m: Msg) => boolean, what: string, timeoutMs = 20_000): Promise<Msg> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find(pred);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 250);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  run(taskId: string, holdMs: number): void {
    this.proc.send({ cmd: 'run', taskId, holdMs });
  }
}

let server: RedisServer;
let browser: Browser;
const procs: WorkerProcess[] = [];

async function spawnWorker(ns: string, name: string): Promise<WorkerProcess> {
  const proc = fork(new URL('../src/demo/worker.ts', import.meta.url), {
    execArgv: ['--import', 'tsx'],
    env: {
      ...process.env,
      PAIRLOCK_REDIS_URL: server.url,
      PAIRLOCK_NAMESPACE: ns,
      PAIRLOCK_NAME: name,
      // the screenshot shows TTL bars of a more usual length; the test takes over sooner
      PAIRLOCK_SESSION_TTL_MS: screenshot ? '5000' : '1000',
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const w = new WorkerProcess(proc);
  procs.push(w);
  w.id = String((await w.waitFor((m) => m.ev === 'ready', `${name} ready`)).id);
  return w;
}

// run in the page (as text: this project's TypeScript has no DOM types)

/** Panels (and the page) whose content is wider than they are: a table overflows. */
function overflowing(page: Page): Promise<string[]> {
  return page.evaluate(`(() => {
    const out = [];
    const doc = document.documentElement;
    if (doc.scrollWidth > doc.clientWidth + 1)
      out.push('the page: ' + doc.scrollWidth + ' > ' + doc.clientWidth);
    for (const el of document.querySelectorAll('.panel, .card, .chart, header')) {
      if (el.scrollWidth > el.clientWidth + 1)
        out.push(el.tagName.toLowerCase() + '.' + el.className + ' ' +
          (el.querySelector('h2')?.textContent ?? '') + ': ' + el.scrollWidth + ' > ' + el.clientWidth);
    }
    return out;
  })()`);
}

/**
 * Until `expr` is true in the page. Not page.waitForFunction: its polling evaluates the
 * text inside the page, which the page's CSP (no 'unsafe-eval') refuses.
 */
async function until(page: Page, expr: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await page.evaluate(expr))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${expr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Groups of running tasks whose count differs from their worker's holds, in one frame. */
function holdsDisagree(page: Page): Promise<string[]> {
  return page.evaluate(`(() => {
    const out = [];
    for (const g of document.querySelectorAll('#running .group')) {
      const count = Number.parseInt(g.querySelector('.gcount')?.textContent ?? '', 10);
      const row = document.querySelector('#workers tr[data-session="' + CSS.escape(g.dataset.session) + '"]');
      const holds = Number.parseInt(row?.querySelectorAll('td')[4]?.textContent ?? '', 10);
      if (row && holds !== count) out.push(g.dataset.session + ': ' + holds + ' vs ' + count);
    }
    return out;
  })()`);
}

describe.skipIf(!chromiumPath)('pairlock dashboard in headless Chromium', () => {
  beforeAll(async () => {
    server = await RedisServer.start();
    browser = await chromium.launch({ executablePath: chromiumPath });
  });
  afterEach(() => {
    for (const w of procs.splice(0))
      if (w.proc.exitCode === null && w.proc.signalCode === null) w.proc.kill('SIGKILL');
  });
  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it(
    'shows the takeover after a SIGKILL of the holder, and the new holder, within 2 s',
    async () => {
      const ns = 'browser';
      let dash: Dashboard | undefined;
      const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console: ${m.text()}`);
      });
      try {
        dash = await startDashboard(server.url, ns);
        const a = await spawnWorker(ns, 'site-a');
        const b = await spawnWorker(ns, 'site-b');
        await page.goto(dash.url);
        await page.waitForSelector('#status[data-state="live"]');
        await page.waitForSelector(`#workers tr[data-worker="${a.id}"]`);
        await page.waitForSelector(`#workers tr[data-worker="${b.id}"]`);

        // a few settled tasks for the drill-downs
        for (const id of ['mail-a1', 'mail-a2', 'report-1']) {
          a.run(id, 20);
          await a.waitFor(
            (m) => m.ev === 'outcome' && (m.outcome as { taskId?: string })?.taskId === id,
            `${id} done`,
          );
        }

        if (screenshot) {
          // half a minute of traffic, so that the charts and counters have a history
          for (let i = 1; i <= 180; i++) {
            const id = `mail-${String(i).padStart(4, '0')}`;
            const holdMs = 400 + ((i * 7919) % 4_600);
            a.run(id, holdMs);
            b.run(id, holdMs);
            await new Promise((r) => setTimeout(r, 150));
          }
        }

        a.run('job', 60_000);
        await a.waitFor((m) => m.ev === 'started' && m.taskId === 'job', 'a started the job');
        b.run('job', 5_000);
        await b.waitFor((m) => m.ev === 'standby' && m.taskId === 'job', 'b covers the job');
        await page.waitForSelector(`#running .group[data-holder="${a.id}"] tr[data-task="job"]`, {
          timeout: 5_000,
        });

        a.proc.kill('SIGKILL');
        const took = await b.waitFor(
          (m) => m.ev === 'took-over' && m.taskId === 'job',
          'b took the job over',
        );
        const tookAt = Date.now();
        // its sockets closed with it (connection-lost), or, unbound, its session expired
        expect(took).toMatchObject({ from: a.id });
        expect(['connection-lost', 'session-expired']).toContain(took.kind);
        const row = `#timeline li[data-event="took-over"][data-task="job"]`;
        await Promise.all([
          page.waitForSelector(row, { timeout: 2_000 }),
          page.waitForSelector(`#running .group[data-holder="${b.id}"] tr[data-task="job"]`, {
            timeout: 2_000,
          }),
        ]);
        console.log(
          `the page showed the takeover and the new holder ${Date.now() - tookAt} ms after it`,
        );
        const text = await page.textContent(row);
        expect(text).toContain(`from ${a.id} (${took.kind})`);
        expect(text).toContain(b.id);
        expect(
          await page.locator(`#running .group[data-holder="${a.id}"] tr[data-task="job"]`).count(),
        ).toBe(0);
        // the killed worker stays on the page, marked
        await page.waitForSelector(`#workers tr.gone[data-worker="${a.id}"]`, { timeout: 3_000 });
        // revoked by the connection-lost takeover, or (unbound) expired
        expect(await page.textContent(`#workers tr[data-worker="${a.id}"]`)).toContain(
          took.kind === 'connection-lost' ? 'revoked' : 'expired',
        );
        // the timeline row of the session that ended names its worker
        const gone = `#timeline li[data-event="session-gone"][data-worker="${a.id}"]`;
        await page.waitForSelector(gone, { timeout: 3_000 });
        expect(await page.textContent(gone)).toContain(a.id);

        // a worker's holds and its group's count, read in one frame, agree
        expect(await holdsDisagree(page)).toEqual([]);

        // drill-downs: a counter lists its tasks; a prefix searches them
        await page.click('#counters [data-counter="done"]');
        await page.waitForSelector('#drill-rows tr[data-state="done"][data-task]');
        expect(await page.textContent('#drill-tabs .tab.on')).toBe('done');
        await page.fill('#drill-prefix', 'mail-a');
        await page.click('#drill-form button');
        await until(
          page,
          `[...document.querySelectorAll('#drill-rows tr[data-task]')].every((r) => r.dataset.task.startsWith('mail-a')) && !document.querySelector('#drill-rows tr[data-task="report-1"]')`,
        );
        expect(await page.locator('#drill-rows tr[data-task^="mail-a"]').count()).toBe(2);
        await page.fill('#drill-prefix', '');
        await page.click('#counters [data-counter="takeovers"]');
        await page.waitForSelector('#drill-rows tr[data-task="job"]');
        expect(await page.textContent('#drill-rows tr[data-task="job"]')).toContain(a.id);

        // an unknown task: said on the page, and no error in the console
        await page.fill('#lookup-id', 'no-such-task');
        await page.click('#lookup button');
        await page.waitForSelector('#lookup-out.missing');
        expect(await page.textContent('#lookup-out')).toContain('no such task');

        // a restarted dashboard shows what came before it (read from the task history),
        // and a task looked up lists its attempts
        await dash.stop();
        dash = await startDashboard(server.url, ns);
        await page.goto(dash.url);
        await page.waitForSelector('#status[data-state="live"]');
        const before = `#timeline li.past[data-event="took-over"][data-task="job"]`;
        await page.waitForSelector(before, { timeout: 5_000 });
        expect(await page.textContent(before)).toContain(`from ${a.id} (${took.kind})`);
        await page.waitForSelector('#timeline li.past[data-event="done"][data-task="mail-a1"]');
        await page.click(`${before} a.task`);
        await page.waitForSelector('#lookup-history tr[data-token="2"]');
        const first = await page.textContent('#lookup-history tr[data-token="1"]');
        expect(first).toContain(a.id);
        expect(first).toContain('superseded');
        const second = await page.textContent('#lookup-history tr[data-token="2"]');
        expect(second).toContain(b.id);
        expect(second).toContain(`${took.kind} from ${a.id}`);

        if (screenshot) {
          mkdirSync(dirname(screenshot), { recursive: true });
          // the picture shows a drill-down list and a record
          await page.click('#counters [data-counter="done"]');
          await page.waitForSelector('#drill-rows tr[data-state="done"]');
          b.run('nightly-report', 60_000);
          await page.waitForSelector(`#running tr[data-task="nightly-report"]`);
          // the record of the task taken over, once done, and its attempts
          await b.waitFor(
            (m) => m.ev === 'outcome' && (m.outcome as { taskId?: string })?.taskId === 'job',
            'b finished the job',
          );
          await page.fill('#lookup-id', 'job');
          await page.click('#lookup button');
          await page.waitForSelector('#lookup-history tr[data-outcome="done"]');
          await page.waitForTimeout(1_000);
          await page.screenshot({ path: screenshot, fullPage: true });
          console.log(`screenshot saved to ${screenshot}`);
        }

        // 400 px wide: the panels stack, and no table overflows its panel
        await page.setViewportSize({ width: 400, height: 900 });
        await page.click('#counters [data-counter="done"]');
        await page.waitForSelector('#drill-rows tr[data-state="done"]');
        await page.waitForTimeout(300);
        expect(await overflowing(page)).toEqual([]);
        if (screenshot) {
          const narrow = join(dirname(screenshot), 'dashboard-narrow.png');
          await page.screenshot({ path: narrow, fullPage: true });
          console.log(`screenshot saved to ${narrow}`);
        }
        expect(problems).toEqual([]);
      } finally {
        await page.close();
        await dash?.stop();
      }
    },
    screenshot ? 120_000 : 60_000,
  );
});
