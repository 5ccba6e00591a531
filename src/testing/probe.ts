/** PING over a raw socket (no client library, no reconnect noise). */
import net from 'node:net';

/** One PING round trip; resolves true only on +PONG (not on -LOADING and friends). */
export async function pingOnce(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return (await probe(host, port, timeoutMs)).pong;
}

/**
 * PING plus INFO server, pipelined in one write. The pid from INFO tells whether the server that
 * answers is really the child we spawned: if our child failed to bind, whoever else holds the
 * port would answer the PING just as well.
 */
export function probe(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<{ pong: boolean; pid?: number }> {
  return new Promise((resolve) => {
    let settled = false;
    let buf = '';
    const sock = net.connect({ host, port });
    const finish = (result: { pong: boolean; pid?: number }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ pong: false }), timeoutMs);
    sock.setEncoding('latin1');
    sock.on('connect', () =>
      sock.write('*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n'),
    );
    sock.on('data', (d: string) => {
      buf += d;
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return;
      if (!buf.startsWith('+PONG')) return finish({ pong: false });
      // second reply: $<len>\r\n<body>\r\n (latin1 keeps byte length == string length)
      const rest = buf.slice(eol + 2);
      const head = /^\$(\d+)\r\n/.exec(rest);
      if (!head) {
        if (rest.length > 0 && !rest.startsWith('$')) finish({ pong: true });
        return;
      }
      const body = rest.slice(head[0].length);
      if (body.length < Number(head[1])) return;
      const pid = /^process_id:(\d+)/m.exec(body)?.[1];
      finish({ pong: true, pid: pid === undefined ? undefined : Number(pid) });
    });
    sock.on('error', () => finish({ pong: false }));
    sock.on('close', () => finish({ pong: false }));
  });
}
