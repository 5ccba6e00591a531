/** Test harness: real Redis servers, a fault-injecting TCP proxy, and multi-node topologies. */

export type { RedisServerOptions } from './backend.js';
export { redisServerAvailable, requireRedisServerBinary } from './binary.js';
export { HarnessUnavailableError, RedisServerStartError } from './errors.js';
export { freeClusterPort, freePort } from './ports.js';
export { pingOnce } from './probe.js';
export {
  type BlackholeOptions,
  TcpProxy,
  type TcpProxyOptions,
} from './proxy.js';
export { RedisServer } from './redis-server.js';
export {
  type ClusterOptions,
  type ClusterTopology,
  type HostPort,
  type IndependentTopology,
  type ReplicatedOptions,
  type ReplicatedTopology,
  startCluster,
  startIndependent,
  startReplicated,
} from './topologies.js';
