import type { ConnectionOptions, TlsOptions } from 'node:tls';
import type { Deserializer, Serializer } from '@nestjs/microservices';
import type { SmuxConfig } from '../smux/index.js';

/**
 * Options shared by {@link ServerSmux} and {@link ClientSmux}. Every option is checked when the server or
 * client is constructed: a wrong type, a value out of range or an unknown name throws a `SmuxError`
 * `ERR_SMUX_INVALID_CONFIG` that names the option, the value and what is allowed.
 */
export interface SmuxTransportOptions {
  /** Host to listen on / connect to. Default `'localhost'`. */
  host?: string;
  /** TCP port, 0–65535 (0 on a server: any free port). Default 3000. */
  port?: number;
  /** A unix socket path instead of host and port (give one or the other). */
  path?: string;
  /**
   * smux session configuration (see `nestjs-smux/smux`), validated at construction. The transport's defaults:
   * a client speaks protocol `version: 2` (per-stream flow control is the point); a server `'auto'` (it answers
   * in the version of each client's first frame). Pin a version on the server to refuse the other one.
   */
  smux?: Partial<SmuxConfig>;
  /**
   * Largest call message accepted, in bytes (the message prefix's `length`), at least 1. Default 8 MiB — stream
   * larger data (`client.send(pattern, source)`, `openDuplex()`).
   */
  maxMessageBytes?: number;
  /** Nest serializer for outgoing packets. Default: identity (packets travel in the native message format). */
  serializer?: Serializer;
  /** Nest deserializer for incoming packets. Default: Nest's own. */
  deserializer?: Deserializer;
}

/** Options of {@link ServerSmux}. */
export interface ServerSmuxOptions extends SmuxTransportOptions {
  /** TLS: `tls.createServer` options. */
  tls?: TlsOptions;
  /**
   * Most connections at once, at least 1. When full, the connection idle longest (no call for `evictIdleAfter`) is
   * closed to make room; with none idle, the new one is refused and closed — a ClientSmux's calls then fail with
   * `ERR_SMUX_UNAVAILABLE` whose `cause` is the retryable `ERR_SMUX_LIMIT` (a raw smux caller's calls get the
   * `ERR_SMUX_LIMIT` itself). A refused connection takes no slot; while 256 refused ones wait to hang up, a new one
   * is closed at once, unanswered (a flood of them cannot pin memory). Default 1024.
   */
  maxConnections?: number;
  /**
   * Most calls running at once on one connection, at least 1; extra calls fail with `ERR_SMUX_LIMIT` (a ClientSmux
   * learns it from the server's hello and queues the extra calls instead). Default 1 000. Streams past it + 64 are
   * refused by the session itself (its `smux.maxStreams`), and a peer that opens more than `smux.maxRefusedStreams` of
   * those in a row (a SYN flood) is cut off, with a warning that names this option.
   */
  maxCallsPerConnection?: number;
  /**
   * Most event handlers running at once for one connection, at least 1: from the moment an event is taken until the
   * promise of its handlers settles — or, when they return an Observable (it runs hot, as on Nest's own transports),
   * until that completes or errors (one that never does keeps its place for good). Past it — or once their events' bytes reach `maxPendingRequestBytes` — the
   * connection is not read until a quarter of them have returned (and their bytes are down to three quarters): the
   * events (and the calls behind them on that connection) wait in the peer's socket, nothing is dropped, and a
   * sender faster than its handlers is slowed to their pace — until the connection closes: events are at most once,
   * and those still waiting then are dropped unread (the server's close line says so). Other connections are not affected. While the server has
   * calls of its own open on that connection (handlers calling back a peer that serves calls), it reads on: their
   * answers come that way (give such calls a deadline). Default 1 000.
   */
  maxEventsPerConnection?: number;
  /**
   * Most bytes of an Observable reply queued on one call (values come faster than the caller reads), at least
   * 1; beyond it the call fails with `ERR_SMUX_LIMIT` — also for a single value larger than it. A feed drops values
   * instead, and an AsyncIterable or Readable reply is pulled only as the caller reads: neither is bounded by it.
   * Default 128 MiB.
   */
  maxReplyBufferBytes?: number;
  /**
   * Graceful `close()`: ms to let in-flight calls — those the server serves, and its own to its peers
   * (`connection.send()`, `server.client`), and its own events not sent yet (`connection.emit()`) — finish before
   * ending them with `ERR_SMUX_SHUTTING_DOWN` (0: end them at once). Default 10 000. `close()` keeps the process alive until it resolves — after this, and then at most about
   * 2 s to close the connections — even when nothing else does (the server's own timers do not).
   */
  closeTimeout?: number;
  /** After its last message and FIN, ms (at least 1) to wait for the caller's FIN before forgetting the stream. Default 30 000. */
  finTimeout?: number;
  /**
   * Most bytes one connection may have the server hold of what it sent and no handler has read yet: requests still
   * arriving, streamed items a handler has not taken, the window of a streamed call held paused. A call that would
   * pass it fails with `ERR_SMUX_LIMIT` — retryable while its request had not arrived whole (the handler did not
   * run), not once it runs. The events whose handlers are running are held to the same number of bytes, separately:
   * past it the connection is not read until they are down to three quarters (`maxEventsPerConnection`). At least
   * `maxMessageBytes`. Default 12 MiB (or `maxMessageBytes`, when larger).
   */
  maxPendingRequestBytes?: number;
  /**
   * Most bytes of replies queued for one connection's caller (every reply kind) while it does not read them: a
   * reply that would pass it fails its call with `ERR_SMUX_LIMIT` (not retryable: the handler ran; a single larger
   * reply still goes when nothing else is queued), and a feed holds its values back instead. Default 8 MiB.
   */
  maxQueuedReplyBytes?: number;
  /**
   * A caller that leaves its replies unread with `maxQueuedReplyBytes` reached for this long, in ms, is disconnected
   * (its calls fail with the connection, `ERR_SMUX_SESSION_CLOSED`; the server counts them as `ERR_SMUX_LIMIT`).
   * Default 30 000.
   */
  replyStallTimeout?: number;
  /**
   * ms for a request to arrive whole once its stream is open, and for each message of a streamed request once it
   * started arriving; past it the call fails with `ERR_SMUX_TIMEOUT`. Default 30 000.
   */
  requestTimeout?: number;
  /**
   * When the server is at `maxConnections` (or an address at `maxConnectionsPerAddress`), a new connection takes the
   * slot of the connection that has been idle longest — no call for at least this many ms — which is closed
   * gracefully (a ClientSmux reconnects when it next calls). A connection that opened no stream at all (no hello, no
   * call) gives way first, once it has been silent for 2 s (or this, when less): a ClientSmux gives up a hello not
   * answered within 2 s. 0: no connection is ever evicted, and new ones are refused with `ERR_SMUX_LIMIT`.
   * Default 10 000.
   */
  evictIdleAfter?: number;
  /** Most connections from one remote address, at least 1. Default: `maxConnections` (no separate limit). */
  maxConnectionsPerAddress?: number;
  /**
   * ms a connection lives before the server drains it (± 10 % jitter, so clients do not all move at once): it sends
   * DRAIN, the client opens a fresh connection for new calls — to another server behind the same load balancer,
   * perhaps — and the calls in flight finish on the old one, which then closes. Rebalances long-lived connections
   * behind an L4 load balancer (gRPC's `MAX_CONNECTION_AGE`). 0: connections live as long as their clients want.
   * Default 0.
   */
  maxConnectionAge?: number;
  /**
   * ms the calls of a drained connection (`maxConnectionAge`) may still run; past it they end with the retryable
   * `ERR_SMUX_SHUTTING_DOWN` and the connection closes. 0: as long as they run. Default 0.
   */
  maxConnectionAgeGrace?: number;
  /**
   * Dial out instead of listening — for a microservice behind NAT or a firewall that cannot be dialled: the server
   * connects to a listening ServerSmux (these are a ClientSmux's options: address, `tls`, `reconnect`…), keeps the
   * connection up (reconnecting with backoff), and its `@MessagePattern` / `@EventPattern` handlers serve the calls
   * the other side makes over it (`connection.send()` there). Its own calls to the other side go over the same
   * connection through `server.client`. Not with `host`, `port`, `path` or `tls`.
   */
  connectTo?: ClientSmuxOptions;
}

/** Per-call options of `client.openDuplex()` (what a `SmuxRecordBuilder` carries for other calls). */
export interface SmuxDuplexOptions {
  /** Metadata for the handler (`ctx.getHeaders()`), string to string. */
  headers?: Record<string, string>;
  /**
   * Deadline of the whole transfer, in ms (0 or absent: none). The client's default `timeout` does not apply to
   * byte streams: they last as long as their data.
   */
  timeout?: number;
  /** Wait for a connection instead of failing fast while there is none (default: the client's `waitForReady`). */
  waitForReady?: boolean;
}

/** Reconnection backoff of {@link ClientSmux}. */
export interface ReconnectOptions {
  /** Delay before the first retry after a failed attempt, in ms (0: at once). Default 100. */
  initialDelay?: number;
  /** Longest delay, in ms, at least `initialDelay`. Default 5000. */
  maxDelay?: number;
  /** Growth per failed attempt, at least 1. Default 2. */
  factor?: number;
  /** Random spread of each delay, 0–1 (0.2: ±20 %), so many clients do not retry in step. Default 0.2. */
  jitter?: number;
}

/** One server of {@link ClientSmuxOptions.hosts}. */
export interface SmuxHostAddress {
  /** Host name or IP address, without a port (with `dns`, a name resolved to all its addresses). */
  host: string;
  /** TCP port, 1–65535. */
  port: number;
}

/** DNS resolution of {@link ClientSmuxOptions.dns}. */
export interface SmuxDnsOptions {
  /**
   * ms between two resolutions, at least 1 000. A lost connection also starts one at once (at most one a second),
   * and while a name resolves to nothing at all the retries follow the `reconnect` backoff. Default 30 000.
   */
  refreshInterval?: number;
  /**
   * Resolves a host name to its IP addresses: every one gets `connectionsPerAddress` connections. Default: the
   * system's resolver as `net.connect` uses it (`dns.promises.lookup(name, { all: true })`: /etc/hosts, then DNS);
   * `(name) => dns.promises.resolve4(name)` asks DNS only. A test can give a function of its own.
   */
  resolve?: (hostname: string) => Promise<readonly string[]>;
}

/** Options of {@link ClientSmux} (the `options` of `ClientsModule.register([{ customClass: ClientSmux, options }])`). */
export interface ClientSmuxOptions extends SmuxTransportOptions {
  /** TLS: `tls.connect` options. */
  tls?: ConnectionOptions;
  /** Default deadline of every call, in ms (0: none). It travels with the call; the server cancels the handler. */
  timeout?: number;
  /**
   * While the client has no connection (the server is down, restarting, unreachable), calls fail at once with
   * the retryable `ERR_SMUX_UNAVAILABLE` (its `cause` is the last connection error), as gRPC does. With
   * `waitForReady: true` they wait for a connection instead, up to their deadline. Per call:
   * `SmuxRecordBuilder.setWaitForReady()`. Default false.
   */
  waitForReady?: boolean;
  /**
   * A streamed request (`client.send(pattern, observable)`): bytes of items an Observable source may have queued on
   * its stream — it cannot be paused, so what it emits faster than the server takes is queued — at least 1; beyond
   * it the call fails with `ERR_SMUX_LIMIT`. AsyncIterable and Readable sources are pulled only as the stream's
   * window allows and never queue. Default 16 MiB.
   */
  maxSourceBufferBytes?: number;
  /** Calls in flight at once, at least 1; more wait in a queue. Default 10 000. */
  maxConcurrentCalls?: number;
  /** Calls waiting for a slot (0: none wait); beyond it a call fails at once with `ERR_SMUX_LIMIT`. Default 10 000. */
  maxQueuedCalls?: number;
  /**
   * ms (at least 1) to establish a connection — TCP, TLS — before the attempt fails. The server must then answer
   * the transport's hello within 2 s (or this, if smaller), else it does not speak this transport. Default 10 000.
   */
  connectTimeout?: number;
  /** Backoff between reconnection attempts after failures (they go on in the background until `close()`). */
  reconnect?: ReconnectOptions;
  /**
   * Several servers, instead of `host`/`port`/`path`: the client keeps a connection to each (or
   * `connectionsPerAddress`) and sends each call on the connection with fewer calls in flight of two picked at
   * random. A connection that fails is left out and redialled with the `reconnect` backoff; the others go on. At
   * least one entry, no address twice.
   */
  hosts?: readonly SmuxHostAddress[];
  /**
   * Resolve `host` (or each name in `hosts`) to all its addresses and connect to every one: a Kubernetes headless
   * Service, a name with several A/AAAA records. Re-resolved every `refreshInterval` and when a connection is lost:
   * a new address gets connections, a vanished one takes no new calls and closes once its calls are done. With
   * `tls`, certificates are checked against the name. `true`: the defaults. Not with `path`. Default false.
   */
  dns?: boolean | SmuxDnsOptions;
  /**
   * Connections to each address, 1–256: to reach several server processes behind one address, such as Node
   * `cluster` workers sharing a port or the pods behind a Kubernetes ClusterIP Service (both balance connections,
   * not calls). Default 1.
   */
  connectionsPerAddress?: number;
  /**
   * ms between health pings on each connection's control stream (0: none): a connection whose ping is not answered
   * within the interval is given up — its calls in flight fail with `ERR_SMUX_TIMEOUT` (the server may have run
   * them) and the next call reconnects — which catches a server whose event loop is stuck while its socket stays
   * open. Each answer updates the connection's round-trip time. Default 0.
   */
  pingInterval?: number;
}
