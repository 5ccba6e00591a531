/**
 * A loopback TCP proxy between one client and one Redis, so tests can delay, cut or partition
 * that single link while everything else keeps working.
 */
import net from 'node:net';

export interface TcpProxyOptions {
  /** Default 127.0.0.1. */
  targetHost?: string;
  targetPort: number;
  /** Default: an OS-assigned free port. */
  listenPort?: number;
  /** One-way delay per chunk, in both directions. Default 0. */
  delayMs?: number;
  /** Extra delay per chunk from the target to the client only (see setReplyDelay). Default 0. */
  replyDelayMs?: number;
}

export interface BlackholeOptions {
  /**
   * false (default): bytes are dropped for good, like packets into a void. Whatever was in
   * flight is lost, so a client that sent a command during the partition may have its replies
   * shifted afterwards: treat such connections as broken (reconnect after heal()).
   * true: bytes are held and delivered in order on heal(), like TCP retransmitting once a short
   * partition ends.
   */
  hold?: boolean;
}

type Mode = 'open' | 'drop' | 'hold';

interface ProxyState {
  delayMs: number;
  /** Added to delayMs in the target → client direction only. */
  replyDelayMs: number;
  mode: Mode;
}

/** `null` stands for the FIN (end of stream), which travels through the queue like data. */
type Item = { due: number; chunk: Buffer | null };

function reset(sock: net.Socket): void {
  if (!sock.destroyed) sock.resetAndDestroy();
}

/**
 * One direction of a link. Chunks wait in a FIFO with a single timer armed for the head, so
 * order is preserved; a timer per chunk could fire out of order when the delay changes.
 */
class Pipe {
  private queue: Item[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Due times never go backwards: lowering the delay must not let later bytes overtake. */
  private lastDue = 0;
  private waitingDrain = false;

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly state: ProxyState,
    /** The target → client direction (replies), which setReplyDelay() slows down. */
    private readonly replies: boolean,
  ) {
    src.on('data', (chunk: Buffer) => this.push(chunk));
    src.on('end', () => this.push(null));
  }

  private push(chunk: Buffer | null): void {
    if (this.state.mode === 'drop') return;
    const now = performance.now();
    const delayMs = this.state.delayMs + (this.replies ? this.state.replyDelayMs : 0);
    if (this.state.mode === 'open' && delayMs <= 0 && this.queue.length === 0) {
      this.deliver(chunk);
      return;
    }
    const due = Math.max(now + delayMs, this.lastDue);
    this.lastDue = due;
    this.queue.push({ due, chunk });
    this.schedule();
  }

  private schedule(): void {
    if (this.timer !== undefined || this.state.mode === 'hold') return;
    const head = this.queue[0];
    if (!head) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.flush();
      },
      Math.max(0, Math.ceil(head.due - performance.now())),
    );
  }

  /** Delivers every due chunk; called by the timer and on heal(). */
  flush(): void {
    if (this.state.mode === 'drop') {
      this.queue = [];
      return;
    }
    if (this.state.mode === 'hold') return;
    const now = performance.now();
    for (let head = this.queue[0]; head && head.due <= now; head = this.queue[0]) {
      this.queue.shift();
      this.deliver(head.chunk);
    }
    this.schedule();
  }

  /** Clears the queue (blackhole drop) without touching the sockets. */
  drop(): void {
    this.queue = [];
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private deliver(chunk: Buffer | null): void {
    if (this.dst.destroyed || this.dst.writableEnded) return;
    if (chunk === null) {
      this.dst.end();
      return;
    }
    // Backpressure: stop reading the source until the destination drains.
    if (!this.dst.write(chunk) && !this.waitingDrain) {
      this.waitingDrain = true;
      this.src.pause();
      this.dst.once('drain', () => {
        this.waitingDrain = false;
        this.src.resume();
      });
    }
  }
}

class Link {
  readonly toUpstream: Pipe;
  readonly toClient: Pipe;

  constructor(
    readonly client: net.Socket,
    readonly upstream: net.Socket,
    state: ProxyState,
    private readonly onGone: (link: Link) => void,
  ) {
    this.toUpstream = new Pipe(client, upstream, state, false);
    this.toClient = new Pipe(upstream, client, state, true);
    const onClose = (other: net.Socket) => (hadError: boolean) => {
      // While blackholed the other end must not learn about the close either; heal() settles it.
      if (state.mode !== 'open') return;
      // An abrupt close (RST, refused upstream) is passed on as a reset; a graceful one already
      // sent its FIN through the pipe.
      if (hadError) reset(other);
      this.settle();
    };
    client.on('close', onClose(upstream));
    upstream.on('close', onClose(client));
  }

  /** Forgets the link once both sockets are gone. */
  settle(): void {
    if (this.client.destroyed && this.upstream.destroyed) this.onGone(this);
  }

  /** After a partition: a side that closed meanwhile takes the other one down (as TCP would). */
  reconcile(): void {
    if (this.client.destroyed !== this.upstream.destroyed) {
      reset(this.client);
      reset(this.upstream);
    }
    this.settle();
  }

  destroy(): void {
    this.toUpstream.drop();
    this.toClient.drop();
    reset(this.client);
    reset(this.upstream);
    this.onGone(this);
  }
}

export class TcpProxy {
  readonly host: string;
  readonly port: number;
  readonly url: string;

  private readonly state: ProxyState;
  private readonly links = new Set<Link>();
  private refusing = false;
  private targetHost: string;
  private targetPort: number;
  private closed: Promise<void> | undefined;

  private constructor(
    private readonly server: net.Server,
    opts: TcpProxyOptions,
  ) {
    const addr = server.address() as net.AddressInfo;
    this.host = addr.address;
    this.port = addr.port;
    this.url = `redis://${this.host}:${this.port}`;
    this.targetHost = opts.targetHost ?? '127.0.0.1';
    this.targetPort = opts.targetPort;
    this.state = { delayMs: opts.delayMs ?? 0, replyDelayMs: opts.replyDelayMs ?? 0, mode: 'open' };
    server.on('connection', (sock) => this.accept(sock));
  }

  static async start(opts: TcpProxyOptions): Promise<TcpProxy> {
    // allowHalfOpen: a FIN is forwarded through the (possibly delayed) pipe instead of Node
    // closing our side at once, which would drop data still queued for that socket.
    const server = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: opts.listenPort ?? 0 }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return new TcpProxy(server, opts);
  }

  /** Live client connections (each has one upstream connection). */
  get connections(): number {
    return this.links.size;
  }

  /**
   * Local ports of the live upstream connections: the addresses the target sees for this
   * proxy's clients (`addr=` in CLIENT LIST), to find one client's connections there.
   */
  upstreamPorts(): number[] {
    return [...this.links].flatMap((l) =>
      l.upstream.localPort === undefined ? [] : [l.upstream.localPort],
    );
  }

  /** The address new connections are forwarded to. */
  get target(): { host: string; port: number } {
    return { host: this.targetHost, port: this.targetPort };
  }

  /** One-way delay for each chunk in BOTH directions, so a round trip gains 2 * ms. */
  setDelay(ms: number): void {
    this.state.delayMs = Math.max(0, ms);
  }

  /**
   * Extra delay for each chunk from the target to the client only (replies, pub/sub
   * messages). Commands reach Redis and are applied on time; their replies come late.
   * Past the client's own timeout this is a command that succeeded on the server while
   * the client gave up on it. Replies stay in order: a reply queued behind a delayed one
   * waits for it, as on one TCP connection.
   */
  setReplyDelay(ms: number): void {
    this.state.replyDelayMs = Math.max(0, ms);
  }

  /** Resets every connection and resets new ones right after accept, until heal(). */
  cut(): void {
    this.refusing = true;
    for (const link of [...this.links]) link.destroy();
  }

  /**
   * A partition, not a reset: connections stay open (new ones are accepted and connected), but
   * no byte and no FIN crosses in either direction until heal(). See BlackholeOptions.hold.
   */
  blackhole(opts: BlackholeOptions = {}): void {
    this.state.mode = opts.hold ? 'hold' : 'drop';
    if (this.state.mode === 'drop') {
      for (const link of this.links) {
        link.toUpstream.drop();
        link.toClient.drop();
      }
    }
  }

  /** Ends cut() and blackhole(); held bytes (blackhole({ hold: true })) are delivered now. */
  heal(): void {
    this.refusing = false;
    this.state.mode = 'open';
    for (const link of [...this.links]) {
      link.reconcile();
      link.toUpstream.flush();
      link.toClient.flush();
    }
  }

  /** New connections go to another target; existing ones stay where they are. */
  retarget(port: number, host?: string): void {
    this.targetPort = port;
    if (host !== undefined) this.targetHost = host;
  }

  close(): Promise<void> {
    this.closed ??= new Promise<void>((resolve) => {
      this.refusing = true;
      for (const link of [...this.links]) link.destroy();
      this.server.close(() => resolve());
    });
    return this.closed;
  }

  private accept(client: net.Socket): void {
    client.on('error', () => {});
    if (this.refusing) {
      reset(client);
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect({
      host: this.targetHost,
      port: this.targetPort,
      allowHalfOpen: true,
      noDelay: true,
    });
    upstream.on('error', () => {});
    const link = new Link(client, upstream, this.state, (l) => this.links.delete(l));
    this.links.add(link);
  }
}
