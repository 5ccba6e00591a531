/** Validation of the topology options: every message names the option to change. */
import { describe, expect, it } from 'vitest';
import { InvalidOptionError, PairedWorker, type PairedWorkerOptions } from '../../src/index.js';
import { resolveOptions } from '../../src/shared/options.js';

const make = (opts: Partial<PairedWorkerOptions> | Record<string, unknown>) => () =>
  new PairedWorker(opts as PairedWorkerOptions);
const node = 'redis://127.0.0.1:1';

describe('topology options', () => {
  it('`redis` or `nodes`, not both, not neither', () => {
    expect(make({})).toThrow(/Expected `redis`.*or `nodes`/);
    expect(make({ redis: node, nodes: [node, node, node] })).toThrow(InvalidOptionError);
    expect(make({ redis: node, nodes: [node, node, node] })).toThrow(/not both/);
  });

  it('`nodes`: an odd number, 3 or more, of connections', () => {
    for (const nodes of [[], [node], [node, node], [node, node, node, node]]) {
      expect(make({ nodes })).toThrow(/Expected `nodes` to be an array of an odd number/);
    }
    expect(make({ nodes: 'redis://x' })).toThrow(/`nodes`/);
    expect(make({ nodes: [node, '', node] })).toThrow(/`nodes\[1\]`/);
    expect(make({ nodes: [node, null, node] })).toThrow(/`nodes\[1\]`/);
    expect(make({ nodes: [node, node, node] })).not.toThrow();
    expect(make({ nodes: [node, node, node, node, node] })).not.toThrow();
  });

  it('`replication`: waitReplicas >= 1, waitTimeoutMs >= 1, onTimeout reject|accept; defaults', () => {
    expect(make({ redis: node, replication: 'yes' })).toThrow(/`replication` to be an object/);
    expect(make({ redis: node, replication: {} })).toThrow(/`replication.waitReplicas`/);
    expect(make({ redis: node, replication: { waitReplicas: 0 } })).toThrow(
      /`replication.waitReplicas`/,
    );
    expect(make({ redis: node, replication: { waitReplicas: 1, waitTimeoutMs: 0 } })).toThrow(
      /`replication.waitTimeoutMs`/,
    );
    expect(make({ redis: node, replication: { waitReplicas: 1, onTimeout: 'maybe' } })).toThrow(
      /`replication.onTimeout`/,
    );
    expect(make({ nodes: [node, node, node], replication: { waitReplicas: 1 } })).toThrow(
      /`replication` applies to `redis`/,
    );
    expect(resolveOptions({ redis: node, replication: { waitReplicas: 2 } }).replication).toEqual({
      waitReplicas: 2,
      waitTimeoutMs: 500,
      onTimeout: 'reject',
    });
    expect(resolveOptions({ redis: node }).replication).toBeUndefined();
  });

  it("`clusterPubSub`: 'auto' (default), 'sharded' or 'classic'", () => {
    expect(resolveOptions({ redis: node }).clusterPubSub).toBe('auto');
    expect(make({ redis: node, clusterPubSub: 'sharded' })).not.toThrow();
    expect(make({ redis: node, clusterPubSub: 'broadcast' })).toThrow(/`clusterPubSub`/);
  });
});
