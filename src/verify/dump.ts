/**
 * The end of a run (run.ts): the fenced sink's journal and values, and the final task
 * records as Redis holds them, read directly (no proxy, no fault), for the checker.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { fencedRead } from '../redis/fencing.js';
import { PairedWorker } from '../worker/worker.js';
import { PAIRS, sinkJournal, sinkKey, type TaskSpec } from './common.js';
import type { RunSetup } from './run.js';

/** The sink's journal and values, and the final task records, as Redis holds them. */
export async function dump(setup: RunSetup, specs: TaskSpec[]): Promise<void> {
  const sink = new Redis({ ...setup.sink, maxRetriesPerRequest: 3 });
  sink.on('error', () => {});
  try {
    const journal = await sink.lrange(sinkJournal(setup.sinkBase), 0, -1);
    const values: Record<string, { token: number; value: string } | null> = {};
    for (let i = 0; i < specs.length; i += 100) {
      await Promise.all(
        specs.slice(i, i + 100).map(async (spec) => {
          values[spec.id] = await fencedRead(sink, sinkKey(setup.sinkBase, spec.pair, spec));
        }),
      );
    }
    writeFileSync(
      path.join(setup.outDir, 'sink.json'),
      JSON.stringify({ journal: journal.map((j) => JSON.parse(j)), values }),
    );
  } finally {
    sink.disconnect();
  }

  const records: Record<string, unknown> = {};
  const conns = setup.nodes.map((n) => ({ ...n.options, host: n.host, port: n.port }));
  // a Cluster: one client for every inspector (a client passed in is not closed by them)
  const cluster = setup.cluster
    ? new Cluster(
        conns.map((c) => ({ host: c.host, port: c.port })),
        { redisOptions: { ...setup.nodes[0]?.options, maxRetriesPerRequest: 3 } },
      )
    : undefined;
  cluster?.on('error', () => {});
  try {
    for (let pair = 0; pair < PAIRS; pair++) await inspect(pair);
  } finally {
    cluster?.disconnect();
  }
  writeFileSync(path.join(setup.outDir, 'records.json'), JSON.stringify(records));

  async function inspect(pair: number): Promise<void> {
    const inspector = new PairedWorker({
      ...(cluster ? { redis: cluster } : conns.length > 1 ? { nodes: conns } : { redis: conns[0] }),
      namespace: setup.namespaces[pair] ?? setup.namespaces[0],
      keyPrefix: setup.keyPrefix,
      name: 'inspector',
    });
    const mine = specs.filter((s) => s.pair === pair);
    const read = async (spec: TaskSpec) => {
      try {
        records[spec.id] = await inspector.inspect(
          spec.id,
          spec.hash === undefined ? {} : { hash: { key: spec.hash } },
        );
      } catch (err) {
        records[spec.id] = { error: String(err) };
      }
    };
    // the first alone (it connects), then 50 at a time
    if (mine[0]) await read(mine[0]);
    for (let i = 1; i < mine.length; i += 50) await Promise.all(mine.slice(i, i + 50).map(read));
    await inspector.close();
  }
}
