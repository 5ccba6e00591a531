/**
 * Free loopback ports for test servers: never a developer's own Redis ports, never one this
 * process already handed out, never in the kernel's ephemeral range.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';

/** Every harness server listens on loopback only. */
export const HOST = '127.0.0.1';
/** The cluster bus listens on port + 10000 unless `cluster-port` says otherwise. */
const CLUSTER_BUS_OFFSET = 10_000;

/** Well-known ports of a developer's own Redis; never hand these out even if they look free. */
const RESERVED_PORTS = new Set([6379, 16379, 26379]);
/** Ports this process already handed out: a second caller must not get one before it is bound. */
const handedOut = new Set<number>();

function ephemeralLow(): number {
  try {
    const lo = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
    if (Number.isInteger(lo) && lo > 2048) return lo;
  } catch {
    // not Linux: use the IANA default below
  }
  return 49152;
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ host: HOST, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

function osAssignedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host: HOST, port: 0, exclusive: true }, () => {
      const addr = srv.address() as net.AddressInfo;
      srv.close(() => resolve(addr.port));
    });
  });
}

/**
 * A free port on 127.0.0.1, with `port + span` free too when `span > 0` (cluster bus).
 *
 * Ports are drawn from BELOW the kernel's ephemeral range: outgoing client connections take their
 * source ports from that range, so a port picked there could be grabbed by some client socket
 * while a killed server is down, and restart() on the same port would then fail.
 */
async function pickPort(span = 0): Promise<number> {
  const lo = 10_000;
  const hi = ephemeralLow() - span;
  for (let i = 0; i < 200; i++) {
    const port =
      hi - lo >= 1_000 ? lo + Math.floor(Math.random() * (hi - lo)) : await osAssignedPort();
    if (RESERVED_PORTS.has(port) || handedOut.has(port) || port + span > 65_535) continue;
    if (!(await canListen(port))) continue;
    if (span > 0 && !(await canListen(port + span))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error('could not find a free port on 127.0.0.1');
}

/** A free TCP port on 127.0.0.1 (not 6379/16379/26379, not in the ephemeral range). */
export function freePort(): Promise<number> {
  return pickPort(0);
}

/** A free port whose cluster bus port (port + 10000) is free as well. */
export function freeClusterPort(): Promise<number> {
  return pickPort(CLUSTER_BUS_OFFSET);
}

function argValue(args: readonly string[], name: string): string | undefined {
  const i = args.lastIndexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

/** Cluster mode without an explicit `cluster-port`: the bus will take port + 10000. */
export function needsClusterBusPort(args: readonly string[]): boolean {
  return (
    argValue(args, '--cluster-enabled') === 'yes' && argValue(args, '--cluster-port') === undefined
  );
}
