/** Test harness: real Redis servers, a fault-injecting TCP proxy, and multi-node topologies. */
export {
  type BlackholeOptions,
  TcpProxy,
  type TcpProxyOptions,
} from './proxy.js';
export {
  freeClusterPort,
  freePort,
  HarnessUnavailableError,
  pingOnce,
  RedisServer,
  type RedisServerOptions,
  RedisServerStartError,
  redisServerAvailable,
  requireRedisServerBinary,
} from './redis-server.js';
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
